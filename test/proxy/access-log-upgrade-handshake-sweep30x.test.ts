// A WebSocket upgrade a route refuses before its chain (sweep 30x): upgrades off on the route, a
// version this side does not speak, a bad key, a deflate offer that does not parse. Each was
// answered raw with no access line, no count and no x-request-id, where the same request without
// Upgrade gets all three.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { echoHandler, rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    routes: [
      { name: 'off', match: { pathPrefix: '/off' }, upstream: backend.url, type: 'http', websocket: { enabled: false } },
      { name: 'ws', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http', websocket: { perMessageDeflate: true } },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const upgrade = (target: string, extra: Record<string, string> = {}): string => {
  const headers = { 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...extra }
  return `GET ${target} HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`
}

it('logs, counts and names each handshake a route refuses before its chain', async () => {
  const cases = [
    { route: 'off', text: upgrade('/off/graphql') },
    { route: 'ws', text: upgrade('/graphql', { 'Sec-WebSocket-Version': '8' }), version: '13' },
    { route: 'ws', text: upgrade('/graphql', { 'Sec-WebSocket-Key': 'short' }) },
    { route: 'ws', text: upgrade('/graphql', { 'Sec-WebSocket-Extensions': 'permessage-deflate; =' }) },
  ]
  for (const c of cases) {
    const reply = (await rawExchange(proxy.port, c.text)).toString('latin1')
    expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request')
    if (c.version !== undefined) expect(reply).toContain(`\r\nsec-websocket-version: ${c.version}\r\n`)
    const id = /\r\nx-request-id: ([0-9a-f-]{36})\r\n/.exec(reply)?.[1]
    expect(id).toBeDefined()
    await expect.poll(() => proxy.logs.find('access').find((l) => l.reqId === id), { timeout: 3_000 }).toMatchObject({ method: 'GET', route: c.route, status: 400, code: 'BAD_REQUEST' })
    const line = proxy.logs.find('access').find((l) => l.reqId === id)!
    expect(typeof line.durMs).toBe('number')
    expect(proxy.logs.lines.filter((l) => l.reqId === id && l.msg === 'access')).toHaveLength(1)
  }
  await expect
    .poll(async () => {
      const text = await (await fetch(`${proxy.adminUrl}/metrics`)).text()
      return [metricSum(text, 'igw_requests_total', 'route="off"'), metricSum(text, 'igw_requests_total', 'route="ws"'), metricSum(text, 'igw_proxy_errors_total', 'code="BAD_REQUEST"')]
    }, { timeout: 3_000 })
    .toEqual([1, 3, 4])
})
