// The admin port accepts a request target in absolute-form ("GET http://pod:9901/metrics"), as
// RFC 9112 §3.2.2 requires of a server and as a scraper or probe configured with an HTTP proxy
// sends it: the whole URL was looked up as a path and every endpoint answered 404.
import { Client } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('admin request target (sweep 20k)', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let client: Client
  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => res.end('ok'))
    proxy = await startTestProxy({ routes: [{ name: 'r', type: 'http', upstream: backend.url }] })
    client = new Client(proxy.adminUrl)
  })
  afterAll(async () => {
    await client?.close()
    await proxy?.close()
    await backend?.close()
  })

  const get = async (path: string) => {
    const res = await client.request({ method: 'GET', path })
    return { status: res.statusCode, type: String(res.headers['content-type']), text: await res.body.text() }
  }

  it('absolute-form targets reach the endpoints their path names', async () => {
    const origin = proxy.adminUrl
    const h = await get(`${origin}/healthz`)
    expect(h.status).toBe(200)
    expect(JSON.parse(h.text)).toMatchObject({ status: 'ok', workers: 1 })
    const m = await get(`${origin}/metrics?x=1`)
    expect(m.status).toBe(200)
    expect(m.type).toContain('text/plain')
    expect(m.text).toContain('igw_workers 1')
    const c = await get(`${origin}/config`)
    expect(c.status).toBe(200)
    expect(JSON.parse(c.text)).toMatchObject({ version: 1 })
  })

  it('an unknown path is still a 404 naming it, in either form', async () => {
    for (const target of ['/nope', `${proxy.adminUrl}/nope`]) {
      const r = await get(target)
      expect(r.status).toBe(404)
      expect(JSON.parse(r.text)).toEqual({ error: 'no admin endpoint /nope' })
    }
  })
})
