// A client's Connection header may nominate headers as hop-by-hop, and the proxy drops those. But
// `Connection: close, X-Request-Id, Traceparent` stripped the request id and trace context the
// backend was to log by, while igw's access line kept both: the gateway's and the backend's logs
// no longer joined. The ids igw names a request by are not the client's to drop (Envoy ignores
// such names in Connection); other nominated headers still are.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { rawExchange, startRawBackend, echoHandler, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    routes: [
      { name: 'plain', match: { pathPrefix: '/plain' }, upstream: backend.url, type: 'http' },
      { name: 'rid', match: { pathPrefix: '/rid' }, upstream: backend.url, type: 'http', filters: [{ name: 'request-id', header: 'x-correlation-id' }] as never },
      { name: 'tenant', match: { pathPrefix: '/tenant' }, upstream: backend.url, type: 'http', filters: [{ name: 'tenant', defaultTenant: 'acme', allowUnlisted: true }] as never },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function seen(path: string, headers: string): Promise<Record<string, string>> {
  const raw = (await rawExchange(proxy.port, `GET ${path} HTTP/1.1\r\nhost: api.example\r\n${headers}\r\n`)).toString('latin1')
  expect(raw.startsWith('HTTP/1.1 200 ')).toBe(true)
  return (JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> }).headers
}

it('x-request-id and traceparent survive a Connection header that nominates them, as the access line logs them', async () => {
  const h = await seen('/plain', `x-request-id: client-id-1\r\ntraceparent: ${TRACEPARENT}\r\nx-private: drop-me\r\nconnection: close, X-Request-Id, traceparent, x-private\r\n`)
  expect(h['x-request-id']).toBe('client-id-1')
  expect(h.traceparent).toBe(TRACEPARENT)
  expect(h['x-private']).toBeUndefined() // any other nominated header is still dropped
  await waitUntil(() => proxy.logs.find('access').some((l) => l.reqId === 'client-id-1'), 5000, 'access line')
  const line = proxy.logs.find('access').find((l) => l.reqId === 'client-id-1')!
  expect(line.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736')
})

it("the request-id filter's own header (a kept incoming id) survives it too", async () => {
  const h = await seen('/rid', 'x-correlation-id: corr-7\r\nconnection: close, x-correlation-id\r\n')
  expect(h['x-correlation-id']).toBe('corr-7')
})

it("the tenant filter's forwarded header survives it", async () => {
  const h = await seen('/tenant', 'connection: close, x-tenant-id\r\n')
  expect(h['x-tenant-id']).toBe('acme')
})
