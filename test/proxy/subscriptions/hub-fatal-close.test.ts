// An upstream that closes its connection with 4403 Forbidden (or another 44xx) has refused these
// credentials: the hub must not reconnect forever while its clients hear nothing. The close is
// final for that upstream connection, like graphql-ws's own fatal codes (4401, 4500…): every
// operation on it ends with UPSTREAM_UNAVAILABLE naming the code and reason, it is logged once
// and counted, and the next subscribe opens a fresh connection. Other connections carry on.
import { once } from 'node:events'
import { createServer, STATUS_CODES, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { createPubSub, createSchema } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { isFinalClose, isFinalHandshakeStatus } from '../../../proxy/subscriptions/upstream.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './clients.ts'

/** The legacy protocol's error payload: the error's own fields, the whole list under `errors` (an object, as Apollo Kotlin reads it). */
const legacyPayload = (e: Record<string, unknown>) => ({ ...e, errors: [e] })

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
    expect(c.of((m) => m.type === 'error')[0]).toEqual({ id: 'L1', type: 'error', payload: legacyPayload({ message: 'upstream subscription failed: upstream connection closed with 4403 "forbidden by backend"', extensions: { code: 'UPSTREAM_UNAVAILABLE' } }) })
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

const FINAL_HANDSHAKE_LOG = 'upstream refused the subscription connection handshake with a final HTTP status; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE'
const LOST_LOG = 'upstream subscription connection lost; reconnecting'

interface GatedUpstream {
  url: string
  /** WebSocket handshakes (upgrade requests), by authorization header — answered 101 or refused. */
  handshakes: Map<string, number>
  /** Open sockets, by authorization header. */
  sockets: Map<string, Set<WebSocket>>
  /** Credentials whose upgrade requests get this HTTP status instead of 101. */
  refuse: Map<string, number>
  subscribes: string[]
  publish(channel: string, note: string): void
  close(): Promise<void>
}

/**
 * A graphql-transport-ws backend behind its own upgrade handler (ws in noServer mode): it counts
 * every handshake and answers those of credentials in `refuse` with a plain HTTP status (403
 * Forbidden, 503…) instead of switching protocols, as an auth proxy or a load balancer in front of
 * a backend does.
 */
async function startGatedUpstream(): Promise<GatedUpstream> {
  const pubsub = createPubSub<Record<string, [{ events: { seq: number; tenant: null; note: string } }]>>()
  let seq = 0
  const schema = createSchema({
    typeDefs: 'type Event { seq: Int!, tenant: String, note: String }  type Query { ok: Boolean! }  type Subscription { events(channel: String!): Event! }',
    resolvers: { Query: { ok: () => true }, Subscription: { events: { subscribe: (_: unknown, a: { channel: string }) => pubsub.subscribe(a.channel) } } },
  })
  const handshakes = new Map<string, number>()
  const sockets = new Map<string, Set<WebSocket>>()
  const refuse = new Map<string, number>()
  const subscribes: string[] = []
  const raw = new Set<Socket>()
  const auth = (headers: Record<string, unknown>) => String(headers.authorization ?? '')
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket: Socket, head) => {
    raw.add(socket)
    socket.on('close', () => raw.delete(socket))
    socket.on('error', () => {}) // the gateway drops a refused handshake's socket as soon as it has read the status
    const a = auth(req.headers)
    handshakes.set(a, (handshakes.get(a) ?? 0) + 1)
    const status = refuse.get(a)
    if (status !== undefined) {
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nrefused`)
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const set = sockets.get(a) ?? new Set()
      sockets.set(a, set.add(ws))
      ws.on('close', () => set.delete(ws))
      wss.emit('connection', ws, req)
    })
  })
  useServer(
    {
      schema,
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
    handshakes,
    sockets,
    refuse,
    subscribes,
    publish: (channel, note) => pubsub.publish(channel, { events: { seq: ++seq, tenant: null, note } }),
    async close() {
      for (const set of sockets.values()) for (const ws of set) ws.terminate()
      for (const s of raw) s.destroy()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('subscription hub: an upstream that refuses the WebSocket handshake with an HTTP 4xx is final', () => {
  let up: GatedUpstream
  let p: TestProxy
  let url: string
  const handshakes = (a: string) => up.handshakes.get(a) ?? 0
  const metric = async (name: string, labels?: string) => metricSum(await p.metricsText(), name, labels)
  const finalCloses = (label: string) => metric('igw_subscription_upstream_final_closes_total', `code="${label}"`)
  const upstreamSubscribed = (a: string, channel: string, times = 1) =>
    waitUntil(() => up.subscribes.filter((s) => s.startsWith(`${a} `) && s.includes(`\\"${channel}\\"`)).length >= times, 5_000, `the upstream subscribe on ${channel}`)
  const refusedWith = (status: number) => [{ message: `upstream subscription failed: upstream refused the WebSocket handshake with HTTP ${status}`, extensions: { code: 'UPSTREAM_UNAVAILABLE' } }]

  beforeAll(async () => {
    up = await startGatedUpstream()
    // Fast retries, configured as above: a reconnect loop shows within the tests' windows.
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

  it('a 403 handshake answer after a drop ends every operation on the connection with UPSTREAM_UNAVAILABLE naming 403; no reconnect loop; the connection leaves the pool; counted as http_403 and logged once', async () => {
    const DENIED = 'Bearer denied-after-drop'
    // two clients, one upstream connection (same credentials)
    const c = new GqlClient(url, { authorization: DENIED })
    const d = new GqlClient(url, { authorization: DENIED })
    const s = c.subscribe(EVENTS('h403-a'))
    const t = d.subscribe(EVENTS('h403-b'))
    await upstreamSubscribed(DENIED, 'h403-a')
    await upstreamSubscribed(DENIED, 'h403-b')
    up.publish('h403-a', 'one')
    await s.received.wait((r) => r.events.length === 1)
    expect(handshakes(DENIED)).toBe(1)
    const lostBefore = p.logs.find(LOST_LOG).length

    // The upstream drops the connection (an outage: the hub reconnects) and from now on answers
    // the handshake with 403 Forbidden.
    up.refuse.set(DENIED, 403)
    const t0 = Date.now()
    for (const ws of up.sockets.get(DENIED) ?? []) ws.terminate()
    for (const sub of [s, t]) {
      await sub.received.wait((r) => r.error !== undefined || r.completed, 2_000, 'the streams to end')
      expect(sub.received.completed).toBe(false)
      expect(sub.received.error).toEqual(refusedWith(403))
    }
    expect(Date.now() - t0).toBeLessThan(2_000)
    expect(handshakes(DENIED)).toBe(2)

    // No reconnect loop: with 50–100 ms backoff the old hub made ~15 more handshakes in this window.
    await sleep(1_500)
    expect(handshakes(DENIED)).toBe(2)
    expect(await finalCloses('http_403')).toBe(1)
    const logged = p.logs.find(FINAL_HANDSHAKE_LOG)
    expect(logged).toHaveLength(1)
    expect(logged[0]).toMatchObject({ status: 403, afterDrop: true })
    expect(p.logs.find(LOST_LOG)).toHaveLength(lostBefore + 1) // the drop itself, once
    expect(await metric('igw_subscription_upstream_connections')).toBe(0)

    // It left the pool: a later subscribe with the same credentials opens a new connection, whose
    // very first handshake is refused — the operation fails at once, naming the status, and the
    // refusal is final there too (counted, logged), never retried.
    const again = c.subscribe(EVENTS('h403-c'))
    await again.received.wait((r) => r.error !== undefined || r.completed, 2_000, 'the new operation to end')
    expect(again.received.error).toEqual(refusedWith(403))
    expect(handshakes(DENIED)).toBe(3)
    await sleep(500)
    expect(handshakes(DENIED)).toBe(3)
    expect(await finalCloses('http_403')).toBe(2)
    expect(p.logs.find(FINAL_HANDSHAKE_LOG)).toHaveLength(2)
    expect(p.logs.find(FINAL_HANDSHAKE_LOG)[1]).toMatchObject({ status: 403, afterDrop: false })
    await c.dispose()
    await d.dispose()
  })

  it('a 503 handshake answer is an outage: retried with backoff while the streams wait, which resume when the upstream answers 101 again', async () => {
    const BUSY = 'Bearer busy'
    const c = new GqlClient(url, { authorization: BUSY })
    const s = c.subscribe(EVENTS('h503'))
    await upstreamSubscribed(BUSY, 'h503')
    up.publish('h503', 'before')
    await s.received.wait((r) => r.events.length === 1)
    const reconnects = await metric('igw_subscription_upstream_reconnects_total')

    up.refuse.set(BUSY, 503)
    for (const ws of up.sockets.get(BUSY) ?? []) ws.terminate()
    await waitUntil(() => handshakes(BUSY) >= 1 + 3, 1_500, 'three refused reconnect attempts')
    expect(s.received.error).toBeUndefined()
    expect(s.received.completed).toBe(false)
    expect(await finalCloses('http_503')).toBe(0)

    // the upstream recovers: the next attempt is accepted, the hub resubscribes, events flow again
    up.refuse.delete(BUSY)
    await upstreamSubscribed(BUSY, 'h503', 2)
    up.publish('h503', 'after')
    await s.received.wait((r) => r.events.length === 2, 5_000, 'the resumed event')
    expect(s.received.events.map((e) => e.data!.events!.note)).toEqual(['before', 'after'])
    expect(s.received.error).toBeUndefined()
    expect(await metric('igw_subscription_upstream_reconnects_total')).toBe(reconnects + 1)
    expect(p.logs.find(FINAL_HANDSHAKE_LOG).filter((l) => l.status === 503)).toEqual([])
    await c.dispose()
  })
})

describe('isFinalHandshakeStatus: which HTTP answers to the upstream handshake end the connection', () => {
  it('4xx (but 408 and 429) is final; 5xx, 3xx and the rest are retried', () => {
    for (const status of [400, 401, 403, 404, 405, 410, 426, 451, 499]) expect(isFinalHandshakeStatus(status), String(status)).toBe(true)
    for (const status of [408, 429, 500, 502, 503, 504, 301, 302, 200, 101, undefined]) expect(isFinalHandshakeStatus(status), String(status)).toBe(false)
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
