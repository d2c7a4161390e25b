// An upstream that closes its connection with 4403 Forbidden (or another 44xx) has refused these
// credentials: the hub must not reconnect forever while its clients hear nothing. The close is
// final for that upstream connection, like graphql-ws's own fatal codes (4401, 4500…): every
// operation on it ends with UPSTREAM_UNAVAILABLE naming the code and reason, it is logged once
// and counted, and the next subscribe opens a fresh connection. Other connections carry on.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createPubSub, createSchema } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { isFinalClose } from '../../../proxy/subscriptions/upstream.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './clients.ts'

const FORBIDDEN = 'Bearer forbidden'
const FINAL_LOG = 'upstream subscription connection closed with a final code; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE'

interface Upstream {
  url: string
  /** Connection attempts (WebSocket handshakes), by authorization header. */
  attempts: Map<string, number>
  /** Open sockets, by authorization header. */
  sockets: Map<string, Set<WebSocket>>
  /** Credentials refused at connection_init (graphql-ws: onConnect false → 4403 Forbidden). */
  refuseInit: Set<string>
  /** Subscribes seen, as `authorization channel`. */
  subscribes: string[]
  publish(channel: string, note: string): void
  close(): Promise<void>
}

/**
 * A graphql-transport-ws backend (graphql-ws over ws): it accepts every connection, and closes
 * the socket with 4403 'forbidden by backend' when a `Bearer forbidden` connection subscribes.
 */
async function startUpstream(): Promise<Upstream> {
  const pubsub = createPubSub<Record<string, [{ events: { seq: number; tenant: null; note: string } }]>>()
  let seq = 0
  const schema = createSchema({
    typeDefs: 'type Event { seq: Int!, tenant: String, note: String }  type Query { ok: Boolean! }  type Subscription { events(channel: String!): Event! }',
    resolvers: { Query: { ok: () => true }, Subscription: { events: { subscribe: (_: unknown, a: { channel: string }) => pubsub.subscribe(a.channel) } } },
  })
  const attempts = new Map<string, number>()
  const sockets = new Map<string, Set<WebSocket>>()
  const refuseInit = new Set<string>()
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
      onConnect: (ctx) => !refuseInit.has(auth(ctx.extra.request.headers)),
      onSubscribe: async (ctx, _id, payload) => {
        const a = auth(ctx.extra.request.headers)
        subscribes.push(`${a} ${JSON.stringify(payload.query)}`)
        if (a !== FORBIDDEN) return undefined
        const ws = ctx.extra.socket
        ws.close(4403, 'forbidden by backend')
        // Go on only once the socket is gone: graphql-ws then drops the operation unanswered.
        await once(ws, 'close')
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
    refuseInit,
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

describe('subscription hub: an upstream close with 4403 (or another 44xx) is final', () => {
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

  it('graphql-transport-ws: the operation ends promptly with UPSTREAM_UNAVAILABLE naming 4403 and the reason; no reconnect; logged once and counted; other credentials carry on', async () => {
    const by = new GqlClient(url, { authorization: 'Bearer ok' })
    const bys = by.subscribe(EVENTS('bystander'))
    await upstreamSubscribed('Bearer ok', 'bystander')
    up.publish('bystander', 'before')
    await bys.received.wait((r) => r.events.length === 1)

    const c = new GqlClient(url, { authorization: FORBIDDEN })
    const t0 = Date.now()
    const s = c.subscribe(EVENTS('secret'))
    await s.received.wait((r) => r.error !== undefined || r.completed, 2_000, 'the forbidden operation to end')
    expect(Date.now() - t0).toBeLessThan(2_000)
    expect(s.received.completed).toBe(false)
    expect(s.received.error).toEqual([{ message: 'upstream subscription failed: upstream connection closed with 4403 "forbidden by backend"', extensions: { code: 'UPSTREAM_UNAVAILABLE' } }])

    // No reconnect loop: with 50–100 ms backoff the old hub made ~15 attempts in this window.
    await sleep(1_500)
    expect(attempts(FORBIDDEN)).toBe(1)
    expect(up.sockets.get(FORBIDDEN)?.size ?? 0).toBe(0)
    expect(await finalCloses(4403)).toBe(1)
    const logged = p.logs.find(FINAL_LOG)
    expect(logged).toHaveLength(1)
    expect(logged[0]).toMatchObject({ code: 4403, reason: 'forbidden by backend' })
    expect(p.logs.find('upstream subscription connection lost; reconnecting')).toEqual([])

    // the bystander's connection (other credentials) never noticed
    expect(attempts('Bearer ok')).toBe(1)
    up.publish('bystander', 'after')
    await bys.received.wait((r) => r.events.length === 2)
    expect(bys.received.events.map((e) => e.data!.events!.note)).toEqual(['before', 'after'])
    expect(bys.received.error).toBeUndefined()

    // a later subscribe with the same credentials opens a fresh upstream connection (and is refused again)
    const again = c.subscribe(EVENTS('secret-2'))
    await again.received.wait((r) => r.error !== undefined, 2_000, 'the second forbidden operation to end')
    expect(attempts(FORBIDDEN)).toBe(2)
    expect(JSON.stringify(again.received.error)).toContain('4403')
    expect(await finalCloses(4403)).toBe(2)
    await c.dispose()
    await by.dispose()
  })

  it('legacy graphql-ws: every operation on the connection gets an `error` message naming the close', async () => {
    const before = attempts(FORBIDDEN)
    const c = await RawClient.open(url, ['graphql-ws'])
    c.send({ type: 'connection_init', payload: { authorization: FORBIDDEN } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    c.send({ type: 'start', id: 'L1', payload: { query: EVENTS('legacy') } })
    await c.wait((x) => x.messages.some((m) => m.type === 'error'), 2_000, 'the legacy error')
    expect(c.of((m) => m.type === 'error')[0]).toEqual({ id: 'L1', type: 'error', payload: [{ message: 'upstream subscription failed: upstream connection closed with 4403 "forbidden by backend"', extensions: { code: 'UPSTREAM_UNAVAILABLE' } }] })
    await sleep(1_000)
    expect(attempts(FORBIDDEN)).toBe(before + 1)
    expect(c.close).toBeUndefined()
    c.end()
  })

  it('a backend that refuses the credentials at connection_init (4403) when the hub reconnects after a drop ends the streams instead of retrying forever', async () => {
    const REVOKED = 'Bearer revoked'
    // two clients, one upstream connection (same credentials)
    const c = new GqlClient(url, { authorization: REVOKED })
    const d = new GqlClient(url, { authorization: REVOKED })
    const s = c.subscribe(EVENTS('revoked'))
    const t = d.subscribe(EVENTS('revoked-2'))
    await upstreamSubscribed(REVOKED, 'revoked')
    await upstreamSubscribed(REVOKED, 'revoked-2')
    up.publish('revoked', 'one')
    await s.received.wait((r) => r.events.length === 1)
    expect(attempts(REVOKED)).toBe(1)
    const closesBefore = await finalCloses(4403)
    const logsBefore = p.logs.find(FINAL_LOG).length

    // The backend drops the connection (an outage: the hub reconnects) and now refuses these credentials.
    up.refuseInit.add(REVOKED)
    for (const ws of up.sockets.get(REVOKED) ?? []) ws.terminate()
    const error = [{ message: 'upstream subscription failed: upstream connection closed with 4403 "Forbidden"', extensions: { code: 'UPSTREAM_UNAVAILABLE' } }]
    for (const sub of [s, t]) {
      await sub.received.wait((r) => r.error !== undefined || r.completed, 2_000, 'the streams to end')
      expect(sub.received.error).toEqual(error)
    }
    expect(attempts(REVOKED)).toBe(2)
    await sleep(1_500)
    expect(attempts(REVOKED)).toBe(2)
    expect(await finalCloses(4403)).toBe(closesBefore + 1)
    expect(p.logs.find(FINAL_LOG)).toHaveLength(logsBefore + 1)
    await c.dispose()
    await d.dispose()
  })
})

describe('isFinalClose: which upstream closes end the connection', () => {
  const close = (code: number) => ({ code, reason: '', wasClean: true })
  it('44xx (but 4408 and 4499) and graphql-ws\'s own fatal codes are final; outages and 4504 are retried', () => {
    for (const code of [4400, 4401, 4403, 4404, 4406, 4409, 4429, 4451, 4500, 4004, 4005, 1002, 1008, 1011]) expect(isFinalClose(close(code)), String(code)).toBe(true)
    for (const code of [1000, 1001, 1005, 1006, 1012, 1013, 1014, 4408, 4499, 4504, 4000, 4600]) expect(isFinalClose(close(code)), String(code)).toBe(false)
    expect(isFinalClose(new Error('boom'))).toBe(false)
    expect(isFinalClose({ type: 'error' })).toBe(false)
    expect(isFinalClose(null)).toBe(false)
  })
})
