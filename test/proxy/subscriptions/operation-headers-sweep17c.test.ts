// Sweep 17c: headers the route's filters set anew on every operation are not credentials of the
// shared upstream WebSocket. The request-id filter makes a fresh id per subscribe (x-request-id is
// in upstream.volatileHeaders, but a route that names its id header otherwise, x-correlation-id,
// got no sharing at all: one upstream WebSocket and one upstream subscription per subscribe), and
// the persisted filter puts the hints of one manifest operation in x-igw-cost-hints (one upstream
// WebSocket per distinct operation of a client, each handshake carrying that operation's hints).
// Real proxy, real graphql-yoga backend over graphql-ws, real graphql-ws and ws clients.
// Failed on the code before the fix (2 upstream subscriptions, 2 upstream connections).
import { describe, expect, it } from 'vitest'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './clients.ts'

describe('subscription hub: per-operation headers do not split upstream connections', () => {
  it('a renamed request-id header: identical subscribes of one credential share one upstream subscription', async () => {
    const be = await startSubscriptionBackend()
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id', header: 'x-correlation-id' }, { name: 'tenant' }] }],
    })
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const a = new GqlClient(url, { 'x-tenant-id': 'acme' })
    const b = new GqlClient(url, { 'x-tenant-id': 'acme' })
    try {
      const sa = a.subscribe(EVENTS('rid'))
      const sb = b.subscribe(EVENTS('rid'))
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active') === 2, 5_000, 'two client subscriptions')
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'rid'))
      be.publish('rid')
      await sa.received.wait((r) => r.events.length === 1)
      await sb.received.wait((r) => r.events.length === 1)
      const text = await proxy.metricsText()
      expect(metricSum(text, 'igw_subscription_upstreams')).toBe(1)
      expect(metricSum(text, 'igw_subscription_upstream_connections')).toBe(1)
      expect(be.subscribes.filter((s) => s.channel === 'rid')).toHaveLength(1)
      // one stream: one cursor sequence
      expect(sa.received.lastCursor).toBe(sb.received.lastCursor)
      // the shared handshake carries no operation's id
      expect(be.connections.map((c) => c.headers['x-correlation-id'])).toEqual([undefined])
    } finally {
      await a.dispose()
      await b.dispose()
      await proxy.close()
      await be.close()
    }
  })

  it('two persisted operations of one client ride one upstream WebSocket, whose handshake carries no operation hints', async () => {
    const be = await startSubscriptionBackend()
    const A = 'subscription A { events(channel: "pa") { seq } }'
    const B = 'subscription B { events(channel: "pb") { seq note } }'
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { a: { document: A, costUnits: 3 }, b: { document: B, costUnits: 5 } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'persisted' }] }],
    })
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'], { 'x-tenant-id': 'acme' })
    try {
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'subscribe', id: 'a', payload: { query: A } })
      c.send({ type: 'subscribe', id: 'b', payload: { query: B } })
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'pa' || s.channel === 'pb').length === 2, 5_000, 'both operations subscribed upstream')
      be.publish('pa')
      be.publish('pb')
      await c.wait((x) => x.of((m) => m.type === 'next').length === 2)
      expect(metricSum(await proxy.metricsText(), 'igw_subscription_upstream_connections')).toBe(1)
      expect(be.connections).toHaveLength(1)
      expect(be.connections[0]!.headers['x-igw-cost-hints']).toBeUndefined()
    } finally {
      c.end()
      await proxy.close()
      await be.close()
    }
  })
})
