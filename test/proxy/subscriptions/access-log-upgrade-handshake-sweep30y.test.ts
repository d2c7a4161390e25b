// A WebSocket upgrade a terminate-mode route refuses before the hub takes it (sweep 30y): upgrades
// off on the route, a bad key or Upgrade value, a version this side does not speak, no subprotocol
// the hub speaks. Each was answered raw with no access line, no count and no x-request-id, where
// the same request without Upgrade gets all three (the passthrough bridge got this in 30x).
import { afterAll, beforeAll, expect, it } from 'vitest'
import { echoHandler, rawExchange, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  // Never reached: every case is refused before the hub opens anything upstream.
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    routes: [
      { name: 'off', match: { pathPrefix: '/off' }, upstream: backend.url, websocket: { enabled: false, mode: 'terminate' } },
      { name: 'ws', match: { pathPrefix: '/' }, upstream: backend.url, websocket: { mode: 'terminate' } },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const upgrade = (target: string, extra: Record<string, string> = {}): string => {
  const headers = { Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Protocol': 'graphql-transport-ws', ...extra }
  return `GET ${target} HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`
}

const counts = async (route: string): Promise<number[]> => {
  const text = await (await fetch(`${proxy.adminUrl}/metrics`)).text()
  return [metricSum(text, 'igw_requests_total', `route="${route}"`), metricSum(text, 'igw_proxy_errors_total', `route="${route}",code="BAD_REQUEST"`)]
}

it('logs, counts and names each handshake a terminate route refuses', async () => {
  const cases = [
    { route: 'off', text: upgrade('/off/graphql') },
    { route: 'ws', text: upgrade('/graphql', { 'Sec-WebSocket-Key': 'short' }) },
    { route: 'ws', text: upgrade('/graphql', { Upgrade: 'websocket, foo' }) },
    { route: 'ws', text: upgrade('/graphql', { 'Sec-WebSocket-Version': '8' }), version: '13' },
    { route: 'ws', text: upgrade('/graphql', { 'Sec-WebSocket-Protocol': 'mqtt' }), message: 'unsupported WebSocket subprotocol' },
  ]
  for (const c of cases) {
    const before = await counts(c.route)
    const reply = (await rawExchange(proxy.port, c.text)).toString('latin1')
    expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request')
    if (c.version !== undefined) expect(reply).toContain(`\r\nsec-websocket-version: ${c.version}\r\n`)
    if (c.message !== undefined) expect(reply).toContain(c.message)
    const id = /\r\nx-request-id: ([0-9a-f-]{36})\r\n/.exec(reply)?.[1]
    expect(id).toBeDefined()
    await expect.poll(() => proxy.logs.find('access').find((l) => l.reqId === id), { timeout: 3_000 }).toMatchObject({ method: 'GET', route: c.route, status: 400, code: 'BAD_REQUEST' })
    expect(proxy.logs.lines.filter((l) => l.reqId === id && l.msg === 'access')).toHaveLength(1)
    await expect.poll(() => counts(c.route), { timeout: 3_000 }).toEqual(before.map((n) => n + 1))
  }
})
