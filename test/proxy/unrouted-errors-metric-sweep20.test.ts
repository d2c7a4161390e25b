// Refusals before routing (a Host that is no host, CONNECT, a request the parser refuses, no
// route) were counted only in igw_requests_total{route=""}: igw_proxy_errors_total — "requests
// the proxy answered with an error of its own, by code", what the errors-by-code panel reads —
// never showed them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((_req, res) => res.end('{}'))
  proxy = await startTestProxy({ mode: 'ingress', routes: [{ name: 'r', match: { host: 'api.example.com' }, upstream: backend.url, type: 'http', filters: [] }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const errors = async (code: string) => metricSum(await proxy.metricsText(), 'igw_proxy_errors_total', `route="",code="${code}"`)

describe('igw_proxy_errors_total counts refusals made before any route', () => {
  it('bad Host (400), CONNECT (405), a malformed request (400), no route (404)', async () => {
    await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: evil.com/.example.com\r\nConnection: close\r\n\r\n')
    await rawExchange(proxy.port, 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n')
    await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')
    await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n')
    await expect.poll(() => errors('BAD_REQUEST'), { timeout: 10_000 }).toBe(2)
    expect(await errors('METHOD_NOT_ALLOWED')).toBe(1)
    expect(await errors('NOT_FOUND')).toBe(1)
  })
})
