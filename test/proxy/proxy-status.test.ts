// Proxy-Status (RFC 9209) is end-to-end: each intermediary appends its entry and the client reads
// them all. The gateway dropped every Proxy-* header as hop-by-hop, so a CDN's or an inner
// proxy's Proxy-Status never reached the client. Proxy-Connection and the rest still stop here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((_req, res) => {
    res.setHeader('proxy-status', 'inner-proxy; error=http_response_incomplete')
    res.setHeader('proxy-connection', 'keep-alive')
    res.setHeader('proxy-authenticate', 'Basic realm="inner"')
    res.end('{"ok":true}')
  })
  proxy = await startTestProxy({ routes: [{ name: 'all', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('Proxy-* response headers', () => {
  it('relays Proxy-Status and drops the hop-by-hop Proxy-* headers', async () => {
    const res = await request(`${proxy.url}/x`)
    await res.body.dump()
    expect(res.statusCode).toBe(200)
    expect(res.headers['proxy-status']).toBe('inner-proxy; error=http_response_incomplete')
    expect(res.headers['proxy-connection']).toBeUndefined()
    expect(res.headers['proxy-authenticate']).toBeUndefined()
  })
})
