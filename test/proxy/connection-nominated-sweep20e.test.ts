// A client's Connection header may nominate headers as hop-by-hop, and the proxy drops those. Behind
// a trusted load balancer (forwarded.trustIncoming, the default), `Connection: close,
// X-Forwarded-For` stripped the balancer's X-Forwarded-For: the backend saw the balancer's own
// address as the client (an internal IP that passes allowlists). The hop-recording headers are not
// the client's to drop; other nominated headers still are.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { rawExchange, startRawBackend, echoHandler, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({ routes: [{ name: 'all', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

it('X-Forwarded-*, Forwarded and X-Real-IP a balancer set survive a Connection header that nominates them', async () => {
  const raw = (
    await rawExchange(
      proxy.port,
      'GET /x HTTP/1.1\r\nhost: api.example\r\n' +
        'x-forwarded-for: 203.0.113.9\r\nx-forwarded-proto: https\r\nx-forwarded-port: 443\r\nforwarded: for=203.0.113.9;proto=https\r\nx-real-ip: 203.0.113.9\r\nx-private: drop-me\r\n' +
        'connection: close, X-Forwarded-For, x-forwarded-proto, X-Forwarded-Port, Forwarded, X-Real-IP, X-Private\r\n\r\n',
    )
  ).toString('latin1')
  expect(raw.startsWith('HTTP/1.1 200 ')).toBe(true)
  const seen = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> }
  expect(seen.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1')
  expect(seen.headers['x-forwarded-proto']).toBe('https')
  expect(seen.headers['x-forwarded-port']).toBe('443')
  expect(seen.headers.forwarded).toBe('for=203.0.113.9;proto=https')
  expect(seen.headers['x-real-ip']).toBe('203.0.113.9')
  expect(seen.headers['x-private']).toBeUndefined() // any other nominated header is still dropped
})
