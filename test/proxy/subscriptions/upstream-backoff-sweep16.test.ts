// An upstream that accepts the connection (connection_ack) and then drops it at once, again and
// again — a backend that crashes on the resubscribe, a pod in a crash loop behind its service, a
// backend draining that ends each connection normally — must see the hub's reconnects back off
// exponentially up to retryMaxMs. graphql-ws resets its attempt count on every connection_ack, so
// an acknowledged connection that died at once restarted the backoff from its first step (one
// reconnect every retryInitialMs forever); and after a close with 1000 it reconnects without any
// wait at all (thousands of handshakes a second). Each reconnect is a new epoch: a gap notice to
// every client.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createPubSub, createSchema } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { describe, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

interface FlakyUpstream {
  url: string
  /** WebSocket connections accepted (each acknowledged). */
  connections: number
  /** Times (Date.now()) of those connections. */
  connectedAt: number[]
  open: Set<WebSocket>
  /** While set, every subscribe closes its socket with this code right after the ack. */
  crashing: number | undefined
  publish(channel: string, note: string): void
  close(): Promise<void>
}

async function startFlakyUpstream(): Promise<FlakyUpstream> {
  const pubsub = createPubSub<Record<string, [{ events: { seq: number; tenant: null; note: string } }]>>()
  let seq = 0
  const schema = createSchema({
    typeDefs: 'type Event { seq: Int!, tenant: String, note: String }  type Query { ok: Boolean! }  type Subscription { events(channel: String!): Event! }',
    resolvers: { Query: { ok: () => true }, Subscription: { events: { subscribe: (_: unknown, a: { channel: string }) => pubsub.subscribe(a.channel) } } },
  })
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ server, path: '/graphql' })
  const up: FlakyUpstream = {
    url: '',
    connections: 0,
    connectedAt: [],
    open: new Set(),
    crashing: undefined,
    publish: (channel, note) => pubsub.publish(channel, { events: { seq: ++seq, tenant: null, note } }),
    async close() {
      for (const ws of up.open) ws.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
  wss.on('connection', (ws) => {
    up.connections++
    up.connectedAt.push(Date.now())
    up.open.add(ws)
    ws.on('close', () => up.open.delete(ws))
  })
  useServer(
    {
      schema,
      onSubscribe: (ctx) => {
        if (up.crashing !== undefined) ctx.extra.socket.close(up.crashing, up.crashing === 1000 ? 'Normal Closure' : 'service restart')
        return undefined
      },
    },
    wss,
  )
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  up.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return up
}

// The cases run concurrently: each has its own upstream (its crash switch, its connection log) and
// proxy (its reconnect counter), and almost all of their time is spent waiting out the backoff.
describe('subscription hub: an upstream that acknowledges and then drops at once is retried with a growing backoff', () => {
  it.concurrent.for([
    [1012, 'service restart'],
    [1000, 'normal closure'],
  ] as const)('closes with %i (%s) right after every ack: reconnects back off to retryMaxMs, clients get one gap per reconnect; the stream resumes once the backend is healthy, and the next drop after a stable while retries quickly again', async ([code], { expect }) => {
    const up = await startFlakyUpstream()
    const p = await startTestProxy({
      subscriptions: { upstream: { retryInitialMs: 100, retryMaxMs: 1_500, lingerMs: 0 } },
      routes: [{ name: 'gql', upstream: up.url, websocket: { mode: 'terminate' } }],
    })
    const url = `ws://127.0.0.1:${p.port}/graphql`
    try {
      const channel = `flaky-${code}`
      const c = new GqlClient(url)
      const s = c.subscribe(EVENTS(channel))
      const first = up.connections
      await waitUntil(() => up.open.size === 1 && up.connections === first + 1, 5_000, 'the upstream connection')
      await sleep(100)
      up.publish(channel, 'one')
      await s.received.wait((r) => r.events.length === 1)

      // The backend turns into a crash loop: every connection is acknowledged, then dies on the resubscribe.
      const reconnects = async () => metricSum(await p.metricsText(), 'igw_subscription_upstream_reconnects_total')
      const reconnectsBefore = await reconnects()
      up.crashing = code
      const from = up.connections
      const t0 = Date.now()
      for (const ws of up.open) ws.terminate()
      await sleep(4_000)
      const during = up.connections - from
      // Exponential (100, 200, 400, 800, 1500, 1500 ms ceilings, jittered over their upper half):
      // at most ~7 attempts in 4 s. Restarting from 100 ms after every ack made about 50 (1012);
      // not waiting at all after a 1000 made thousands.
      expect(during).toBeGreaterThanOrEqual(2)
      expect(during).toBeLessThanOrEqual(9)
      // every reconnect is an epoch gap to the client: as few as the reconnects
      expect(s.received.gaps.length).toBeLessThanOrEqual(during + 1)
      // the gaps between attempts grow: the last one waited at least the half of retryMaxMs
      const times = up.connectedAt.slice(from).filter((t) => t >= t0)
      const waits = times.slice(1).map((t, i) => t - times[i]!)
      expect(Math.max(...waits)).toBeGreaterThanOrEqual(700)

      // Healthy again: the stream comes back within one retryMaxMs (plus a handshake), with an epoch gap.
      up.crashing = undefined
      await waitUntil(() => up.open.size === 1, 5_000, 'the healthy upstream connection')
      await sleep(300)
      up.publish(channel, 'two')
      await s.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'two'), 5_000, 'the event after the outage')
      expect(s.received.error).toBeUndefined()
      expect(s.received.gaps.some((g) => g.reason === 'epoch')).toBe(true)
      // every connection made after a drop is a reconnect (counted, its streams told), whatever the close code
      // (polled: the scrape gathers the worker's counts, which may not hold the last reconnect yet)
      await expect.poll(async () => (await reconnects()) - reconnectsBefore, { timeout: 5_000 }).toBeGreaterThanOrEqual(during + 1)

      // A connection that stayed up longer than retryMaxMs was healthy: the next drop retries from the first step.
      await sleep(2_000)
      const before = up.connections
      const dropAt = Date.now()
      for (const ws of up.open) ws.terminate()
      await waitUntil(() => up.connections > before, 5_000, 'the reconnect after a healthy while')
      expect(up.connectedAt[up.connections - 1]! - dropAt).toBeLessThan(1_000)
      await waitUntil(async () => (await reconnects()) >= reconnectsBefore + during + 2, 5_000, 'that reconnect counted')
      await c.dispose()
    } finally {
      await p.close()
      await up.close()
    }
  })
})
