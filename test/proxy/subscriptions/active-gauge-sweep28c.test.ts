// igw_subscriptions_active is "client subscriptions being delivered", and its ratio to
// igw_subscription_upstreams the dedup ratio (docs/subscriptions.md). A query or mutation sent
// over a terminated socket was counted in it for as long as it was in flight: a slow backend's
// queries showed up as subscriptions, and the dedup ratio rose with them.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { RawClient, waitUntil } from './clients.ts'

describe('igw_subscriptions_active counts subscriptions, not queries in flight', () => {
  let server: Server
  let wss: WebSocketServer
  let proxy: TestProxy
  /** Operations the upstream got, by type of document; it acknowledges and never answers. */
  const received: string[] = []

  beforeAll(async () => {
    // A graphql-transport-ws backend that takes every operation and answers none (a slow backend).
    server = createServer()
    wss = new WebSocketServer({ server, handleProtocols: (p) => (p.has('graphql-transport-ws') ? 'graphql-transport-ws' : false) })
    wss.on('connection', (ws) => {
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; payload?: { query?: string } }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        else if (m.type === 'ping') ws.send('{"type":"pong"}')
        else if (m.type === 'subscribe') received.push(m.payload?.query ?? '')
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    proxy = await startTestProxy({ routes: [{ name: 'gql', upstream, websocket: { mode: 'terminate' } }] })
  })
  afterAll(async () => {
    await proxy?.close()
    for (const c of wss?.clients ?? []) c.terminate()
    wss?.close()
    await new Promise((r) => server?.close(r))
  })

  it('a query in flight is not an active subscription; a subscription is', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      const metric = async (name: string) => metricSum(await proxy.metricsText(), name)

      c.send({ type: 'subscribe', id: 'q', payload: { query: '{ slow }' } })
      await waitUntil(() => received.includes('{ slow }'), 5_000, 'the query upstream')
      expect(await metric('igw_subscriptions_active')).toBe(0)

      c.send({ type: 'subscribe', id: 's', payload: { query: 'subscription { ticks }' } })
      await waitUntil(() => received.includes('subscription { ticks }'), 5_000, 'the subscription upstream')
      await expect.poll(() => metric('igw_subscriptions_active'), { timeout: 10_000 }).toBe(1)
      expect(await metric('igw_subscription_upstreams')).toBe(1)

      // The query ends first: the subscription is still the only one counted.
      c.send({ type: 'complete', id: 'q' })
      c.send({ type: 'ping' })
      await c.wait((x) => x.messages.some((m) => m.type === 'pong'))
      expect(await metric('igw_subscriptions_active')).toBe(1)
      // Then it ends too: back to 0, not below (its stream lingers upstream: lingerMs).
      c.send({ type: 'complete', id: 's' })
      await expect.poll(() => metric('igw_subscriptions_active'), { timeout: 10_000 }).toBe(0)
    } finally {
      c.end()
    }
  })
})
