// The Host of the hub's upstream WebSocket handshake on a route without hostRewrite: HTTP
// requests and passthrough sockets keep the client's Host (routes[].hostRewrite absent: "keep"),
// the terminated route named the upstream URL's own host unless `host` was in forwardHeaders, so a
// backend routing on Host (an ingress, a virtual host) got another site for subscriptions only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, RawClient, waitUntil } from './clients.ts'

describe('subscription hub: the client Host reaches the upstream handshake', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const clients: RawClient[] = []

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({ subscriptions: { upstream: { lingerMs: 0 } }, routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
  })
  afterAll(async () => {
    for (const c of clients) c.end()
    await proxy?.close()
    await be?.close()
  })

  const open = async (host: string, channel: string): Promise<RawClient> => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'], { host })
    clients.push(c)
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    c.send({ id: '1', type: 'subscribe', payload: { query: EVENTS(channel) } })
    return c
  }

  it('sends the client Host, and two Hosts never share a stream', async () => {
    const before = be.connections.length
    const a = await open('a.example.test', 'client-host')
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'client-host').length === 1, 5_000, 'the first upstream subscription')
    expect(be.connections.slice(before).map((x) => x.headers.host)).toEqual(['a.example.test'])
    await open('b.example.test', 'client-host')
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'client-host').length === 2, 5_000, 'a second upstream subscription')
    expect(be.connections.slice(before).map((x) => x.headers.host).sort()).toEqual(['a.example.test', 'b.example.test'])
    be.publish('client-host')
    await a.wait((x) => x.messages.some((m) => m.type === 'next'), 5_000, 'an event')
  })
})
