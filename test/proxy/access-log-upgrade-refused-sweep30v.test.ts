// A WebSocket upgrade refused before routing (sweep 30v): a Host no route takes, or a target the
// listener refuses, was answered with no access line, no count and no x-request-id, where the same
// request without Upgrade gets all three — a subscriber pointed at a wrong host left no trace.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { echoHandler, rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({ mode: 'ingress', listener: { escapedSlashes: 'reject' }, routes: [{ name: 'g', match: { host: 'api.example.com' }, upstream: backend.url }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const upgrade = (host: string, target: string): string =>
  `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n`

it('logs and counts an upgrade no route takes, and one refused before routing, under the id it answered with', async () => {
  const cases = [
    { host: 'nope.example.com', target: '/graphql', status: 404, code: 'NOT_FOUND' },
    { host: 'api.example.com', target: '/a%2Fb', status: 400, code: 'BAD_REQUEST' },
  ]
  for (const c of cases) {
    const reply = (await rawExchange(proxy.port, upgrade(c.host, c.target))).toString('latin1')
    expect(reply.split('\r\n')[0]).toBe(`HTTP/1.1 ${c.status} ${c.status === 404 ? 'Not Found' : 'Bad Request'}`)
    const id = /\r\nx-request-id: ([0-9a-f-]{36})\r\n/.exec(reply)?.[1]
    expect(id).toBeDefined()
    await expect.poll(() => proxy.logs.find('access (no route)').find((l) => l.reqId === id), { timeout: 3_000 }).toMatchObject({ method: 'GET', host: c.host, status: c.status, code: c.code })
    expect(proxy.logs.lines.filter((l) => l.reqId === id)).toHaveLength(1)
  }
  await expect.poll(async () => metricSum(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'igw_requests_total', 'route=""'), { timeout: 3_000 }).toBe(2)
})
