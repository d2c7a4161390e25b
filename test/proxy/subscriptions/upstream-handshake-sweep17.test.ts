// An upstream that accepts the WebSocket and then closes it before connection_ack — with a code
// graphql-ws reconnects (1000 Normal Closure from a draining backend, 1012, 4408…) — is up and
// refusing the handshake, not down. On the first connection graphql-ws reconnected a 1000 at
// once, forever (our backoff only spaced it out), and the client's subscribe never heard back;
// after a drop the hub retried every such close forever while its clients waited in silence.
// Now the first such close ends the operations, and after a drop MAX_HANDSHAKE_FAILURES in a row
// do: each gets an UPSTREAM_UNAVAILABLE error naming the close, it is counted in
// igw_subscription_upstream_final_closes_total{code} and logged, and nothing reconnects. Other
// connections carry on, and the next subscribe opens a fresh upstream connection.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createPubSub, createSchema } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { MAX_HANDSHAKE_FAILURES } from '../../../proxy/subscriptions/upstream.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './clients.ts'

/** The legacy protocol's error payload: the error's own fields, the whole list under `errors` (an object, as Apollo Kotlin reads it). */
const legacyPayload = (e: Record<string, unknown>) => ({ ...e, errors: [e] })

const GAVE_UP = 'upstream closed the subscription connection before acknowledging it; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE'

interface Upstream {
  url: string
  /** WebSocket handshakes, by authorization header. */
  attempts: Map<string, number>
  sockets: Map<string, Set<WebSocket>>
  /** authorization → close code the backend answers connection_init with (instead of an ack). */
  closeAtInit: Map<string, number>
  subscribes: string[]
  publish(channel: string, note: string): void
  close(): Promise<void>
}

/** graphql-ws over ws with graphql-yoga's schema; closes at connection_init for the credentials in closeAtInit. */
async function startUpstream(): Promise<Upstream> {
  const pubsub = createPubSub<Record<string, [{ events: { seq: number; tenant: null; note: string } }]>>()
  let seq = 0
  const schema = createSchema({
    typeDefs: 'type Event { seq: Int!, tenant: String, note: String }  type Query { ok: Boolean! }  type Subscription { events(channel: String!): Event! }',
    resolvers: { Query: { ok: () => true }, Subscription: { events: { subscribe: (_: unknown, a: { channel: string }) => pubsub.subscribe(a.channel) } } },
  })
  const attempts = new Map<string, number>()
  const sockets = new Map<string, Set<WebSocket>>()
  const closeAtInit = new Map<string, number>()
  const subscribes: string[] = []
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ server, path: '/graphql' })
  const auth = (headers: Record<string, unknown>) => String(headers.authorization ?? '')
  wss.on('connection', (ws, req) => {
    const a = auth(req.headers)
    attempts.set(a, (attempts.get(a) ?? 0) + 1)
    const set = sockets.get(a) ?? new Set()
    sockets.set(a, set.add(ws))
    ws.on('close', () => set.delete(ws))
  })
  useServer(
    {
      schema,
      onConnect: async (ctx) => {
        const code = closeAtInit.get(auth(ctx.extra.request.headers))
        if (code === undefined) return true
        const ws = ctx.extra.socket
        ws.close(code, 'not now')
        await once(ws, 'close')
        return false
      },
      onSubscribe: (ctx, _id, payload) => {
        subscribes.push(`${auth(ctx.extra.request.headers)} ${JSON.stringify(payload.query)}`)
        return undefined
      },
    },
    wss,
  )
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    attempts,
    sockets,
    closeAtInit,
    subscribes,
    publish: (channel, note) => pubsub.publish(channel, { events: { seq: ++seq, tenant: null, note } }),
    async close() {
      for (const set of sockets.values()) for (const ws of set) ws.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('subscription hub: an upstream that closes before connection_ack', () => {
  let up: Upstream
  let p: TestProxy
  let url: string
  const attempts = (a: string) => up.attempts.get(a) ?? 0
  const finalCloses = async (code: number) => metricSum(await p.metricsText(), 'igw_subscription_upstream_final_closes_total', `code="${code}"`)
  const upstreamSubscribed = (a: string, channel: string) => waitUntil(() => up.subscribes.some((s) => s.startsWith(`${a} `) && s.includes(`\\"${channel}\\"`)), 5_000, `the upstream subscribe on ${channel}`)

  beforeAll(async () => {
    up = await startUpstream()
    // Fast retries: the old behaviour (reconnect forever) shows within the test's window.
    p = await startTestProxy({
      subscriptions: { upstream: { retryInitialMs: 50, retryMaxMs: 100 } },
      routes: [{ name: 'gql', upstream: up.url, websocket: { mode: 'terminate' } }],
    })
    url = `ws://127.0.0.1:${p.port}/graphql`
  })
  afterAll(async () => {
    await p?.close()
    await up?.close()
  })

  it('first connection closed with 1000 before the ack: the subscribe (and a query) end with UPSTREAM_UNAVAILABLE, no reconnect loop, counted and logged; others carry on', async () => {
    const DRAINING = 'Bearer draining'
    up.closeAtInit.set(DRAINING, 1000)
    const by = new GqlClient(url, { authorization: 'Bearer ok' })
    const bys = by.subscribe(EVENTS('bystander'))
    await upstreamSubscribed('Bearer ok', 'bystander')

    const c = new GqlClient(url, { authorization: DRAINING })
    const s = c.subscribe(EVENTS('drained'))
    const q = c.subscribe('{ ok }')
    const error = [{ message: 'upstream subscription failed: upstream connection closed with 1000 "not now"', extensions: { code: 'UPSTREAM_UNAVAILABLE' } }]
    for (const op of [s, q]) {
      await op.received.wait((r) => r.error !== undefined || r.completed, 5_000, 'the operation to end')
      expect(op.received.error).toEqual(error)
      expect(op.received.completed).toBe(false)
    }
    // The old hub reconnected every 50–100 ms here, for ever.
    await sleep(1_000)
    expect(attempts(DRAINING)).toBe(1)
    expect(await finalCloses(1000)).toBe(1)
    const logged = p.logs.find(GAVE_UP)
    expect(logged).toHaveLength(1)
    expect(logged[0]).toMatchObject({ code: 1000, reason: 'not now', attempts: 1, afterDrop: false })
    // the bystander never noticed
    up.publish('bystander', 'still here')
    await bys.received.wait((r) => r.events.length === 1)
    expect(bys.received.error).toBeUndefined()

    // the backend takes these credentials again: a new subscribe opens a new upstream connection and works
    up.closeAtInit.delete(DRAINING)
    const again = c.subscribe(EVENTS('drained-2'))
    await upstreamSubscribed(DRAINING, 'drained-2')
    up.publish('drained-2', 'back')
    await again.received.wait((r) => r.events.length === 1)
    expect(attempts(DRAINING)).toBe(2)
    await c.dispose()
    await by.dispose()
  })

  it('legacy graphql-ws: the `start` gets an `error` naming the close', async () => {
    const LEGACY = 'Bearer legacy-draining'
    up.closeAtInit.set(LEGACY, 1000)
    const c = await RawClient.open(url, ['graphql-ws'])
    c.send({ type: 'connection_init', payload: { authorization: LEGACY } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    c.send({ type: 'start', id: 'L1', payload: { query: EVENTS('legacy') } })
    await c.wait((x) => x.messages.some((m) => m.type === 'error'), 5_000, 'the legacy error')
    expect(c.of((m) => m.type === 'error')[0]).toEqual({ id: 'L1', type: 'error', payload: legacyPayload({ message: 'upstream subscription failed: upstream connection closed with 1000 "not now"', extensions: { code: 'UPSTREAM_UNAVAILABLE' } }) })
    await sleep(500)
    expect(attempts(LEGACY)).toBe(1)
    expect(c.close).toBeUndefined()
    c.end()
  })

  for (const code of [1000, 4408]) {
    it(`after a drop, reconnects closed with ${code} before the ack end the streams after ${MAX_HANDSHAKE_FAILURES} attempts in a row`, async () => {
      const FLAKY = `Bearer flaky-${code}`
      const c = new GqlClient(url, { authorization: FLAKY })
      const d = new GqlClient(url, { authorization: FLAKY })
      const s = c.subscribe(EVENTS(`flaky-${code}`))
      const t = d.subscribe(EVENTS(`flaky-${code}-2`))
      await upstreamSubscribed(FLAKY, `flaky-${code}`)
      await upstreamSubscribed(FLAKY, `flaky-${code}-2`)
      up.publish(`flaky-${code}`, 'one')
      await s.received.wait((r) => r.events.length === 1)
      expect(attempts(FLAKY)).toBe(1)
      const by = new GqlClient(url, { authorization: 'Bearer ok' })
      const bys = by.subscribe(EVENTS(`bystander-${code}`))
      await upstreamSubscribed('Bearer ok', `bystander-${code}`)
      const closesBefore = await finalCloses(code)
      const logsBefore = p.logs.find(GAVE_UP).length

      // The connection drops (an outage: the hub reconnects), and the backend now closes every
      // new connection of these credentials at connection_init.
      up.closeAtInit.set(FLAKY, code)
      for (const ws of up.sockets.get(FLAKY) ?? []) ws.terminate()
      const error = [{ message: `upstream subscription failed: upstream connection closed with ${code} "not now"`, extensions: { code: 'UPSTREAM_UNAVAILABLE' } }]
      for (const sub of [s, t]) {
        await sub.received.wait((r) => r.error !== undefined || r.completed, 10_000, 'the streams to end')
        expect(sub.received.error).toEqual(error)
      }
      expect(attempts(FLAKY)).toBe(1 + MAX_HANDSHAKE_FAILURES)
      await sleep(1_000)
      expect(attempts(FLAKY)).toBe(1 + MAX_HANDSHAKE_FAILURES)
      expect(await finalCloses(code)).toBe(closesBefore + 1)
      const logged = p.logs.find(GAVE_UP)
      expect(logged).toHaveLength(logsBefore + 1)
      expect(logged.at(-1)).toMatchObject({ code, attempts: MAX_HANDSHAKE_FAILURES, afterDrop: true, streams: 2 })
      // (the gateway closes no client socket: graphql-ws's lazy client closes its own, with 1000, having nothing left to run)
      expect(c.closed).toEqual({ code: 1000, reason: 'Normal Closure' })

      // other credentials' connection is untouched
      up.publish(`bystander-${code}`, 'fine')
      await bys.received.wait((r) => r.events.length === 1)
      expect(bys.received.error).toBeUndefined()
      await c.dispose()
      await d.dispose()
      await by.dispose()
    })
  }
})
