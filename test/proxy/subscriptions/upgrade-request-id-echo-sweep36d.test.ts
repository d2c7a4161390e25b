// The x-request-id round trip on a WebSocket upgrade. A passthrough route's 101 carried the id
// (the chain's request-id filter echoed it, as on every HTTP answer); a terminate-mode route's 101
// carried none — not the client's own id, and none assigned when it sent none, while its access
// line and the operations refused before the chain go by the connection's id. README: every
// answer on a route with the request-id filter carries the id it assigns, WebSocket upgrades too.
// Real igw, an @apollo/server backend with graphql-ws, ws clients.
import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { startApolloBackend, type ApolloBackend } from '../../helpers/apollo-server.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let be: ApolloBackend
let p: TestProxy

beforeAll(async () => {
  be = await startApolloBackend()
  const tenant = { name: 'tenant' as const, header: 'x-tenant-id', defaultTenant: 'acme' }
  const filters = [{ name: 'request-id' as const }, tenant]
  p = await startTestProxy({
    mode: 'ingress',
    tenants: { acme: { tier: 'gold' } },
    routes: [
      { name: 'term', match: { host: 'term.example' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [...filters, { name: 'subscriptions' }] },
      { name: 'quiet', match: { host: 'quiet.example' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id', echo: false }, tenant] },
      { name: 'pass', match: { host: 'pass.example' }, upstream: be.url, filters },
    ],
  })
})
afterAll(async () => {
  await p?.close()
  await be?.stop()
})

async function upgrade(host: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  const ws = new WebSocket(`ws://127.0.0.1:${p.port}/graphql`, 'graphql-transport-ws', { headers: { host, ...headers } })
  const upgraded = once(ws, 'upgrade') as Promise<[IncomingMessage]>
  await once(ws, 'open') // 'upgrade' and 'open' come in one turn
  const [res] = await upgraded
  ws.close()
  await once(ws, 'close')
  return res
}

const line101 = async (route: string, n: number) => {
  await expect.poll(() => p.logs.find('access').filter((l) => l.route === route && l.status === 101).length, { timeout: 5_000 }).toBeGreaterThanOrEqual(n)
  return p.logs.find('access').filter((l) => l.route === route && l.status === 101)[n - 1]!
}

describe('the request id on a WebSocket 101', () => {
  it('passthrough and terminate alike send the client its own id back', async () => {
    expect((await upgrade('pass.example', { 'x-request-id': 'client-rid-1' })).headers['x-request-id']).toBe('client-rid-1')
    expect((await upgrade('term.example', { 'x-request-id': 'client-rid-2' })).headers['x-request-id']).toBe('client-rid-2')
    expect((await line101('term', 1)).reqId).toBe('client-rid-2')
  })

  it('a terminated upgrade without one gets the id its access line names', async () => {
    const pass = (await upgrade('pass.example')).headers['x-request-id']
    expect(pass).toMatch(/^[0-9a-f-]{36}$/)
    const id = (await upgrade('term.example')).headers['x-request-id']
    expect(id).toMatch(/^[0-9a-f-]{36}$/)
    expect((await line101('term', 2)).reqId).toBe(id)
  })

  it('echo: false sends none', async () => {
    expect((await upgrade('quiet.example', { 'x-request-id': 'client-rid-3' })).headers['x-request-id']).toBeUndefined()
  })
})
