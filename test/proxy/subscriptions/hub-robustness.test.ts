// Adversarial robustness of the subscription hub through a real igw: hostile or careless clients
// and a misbehaving upstream. Each test names what it provokes and what must hold afterwards:
// the documented close code or error, a metric and a log line, nothing leaked, and the worker
// still serving everyone else.
import { once } from 'node:events'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep, waitUntil as waitFor } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './clients.ts'

function socketOf(c: RawClient): Socket {
  return (c.ws as unknown as { _socket: Socket })._socket
}

const subscribed = (be: SubscriptionBackend, channel: string, n = 1) => waitUntil(() => be.subscribes.filter((s) => s.channel === channel).length >= n, 5_000, `${n} backend subscribe(s) on ${channel}`)

/** A TCP server that accepts connections and never answers: an upstream whose handshake hangs. */
/** `asked`: sockets that sent something (an upgrade request), not the proxy's TCP health probes. */
async function startSilentUpstream(): Promise<{ url: string; sockets: Set<Socket>; asked: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  let asked = 0
  const server: Server = createServer((s) => {
    sockets.add(s)
    s.once('data', () => asked++)
    s.on('error', () => undefined)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sockets,
    asked: () => asked,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

interface ScriptedSub {
  ws: WebSocket
  id: string
  query: string
}

/**
 * A graphql-transport-ws upstream the test scripts message by message, to misbehave in ways no
 * conforming server library would: it acks, records subscribes, and sends
 * whatever the test tells it to.
 */
async function startScriptedUpstream(): Promise<{ url: string; subs: ScriptedSub[]; sockets: Set<WebSocket>; close(): Promise<void> }> {
  const subs: ScriptedSub[] = []
  const sockets = new Set<WebSocket>()
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
  wss.on('connection', (ws) => {
    sockets.add(ws)
    ws.on('close', () => sockets.delete(ws))
    ws.on('error', () => undefined)
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { type: string; id?: string; payload?: { query?: string } }
      if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
      else if (m.type === 'ping') ws.send('{"type":"pong"}')
      else if (m.type === 'subscribe') subs.push({ ws, id: m.id!, query: m.payload?.query ?? '' })
    })
  })
  await once(wss, 'listening')
  return {
    url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    subs,
    sockets,
    close: async () => {
      for (const ws of sockets) ws.terminate()
      await new Promise<void>((r) => wss.close(() => r()))
    },
  }
}

describe('subscription hub: robustness against hostile clients and a misbehaving upstream', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {}, cyc: {} },
      quotas: { tenants: { cyc: { subscriptions: { maxConcurrent: 10, rate: 100_000, burst: 100_000 } } } },
      subscriptions: {
        upstream: { lingerMs: 100 },
        qos: { socketHighWaterBytes: '16kib', gold: { maxQueueBytes: '1mib' }, silver: { maxQueueBytes: '256kib' } },
        topics: { events: { query: 'subscription($channel: String!) { events(channel: $channel) { seq note } }', clientVariables: ['channel'] } },
      },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('a client that floods pings and never reads the pongs is closed with 1013 at the reply cap, not buffered without bound', async () => {
    const by = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    const bys = by.subscribe(EVENTS('flood-bystander'))
    await subscribed(be, 'flood-bystander')
    const before = await proxy.metricsText()
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    socketOf(c).pause()
    const pad = 'x'.repeat(64 * 1024)
    const total = 600 // ~39 MB of pongs asked for
    for (let i = 0; i < total; i++) {
      c.send({ type: 'ping', payload: { i, pad } })
      if (i % 50 === 49) await sleep(5)
    }
    await sleep(200)
    socketOf(c).resume()
    await waitUntil(() => c.close !== undefined || c.of((m) => m.type === 'pong').length === total, 20_000, 'the close or every pong')
    const pongs = c.of((m) => m.type === 'pong').length
    expect(c.close?.code).toBe(1013)
    expect(pongs).toBeLessThan(total)
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_subscription_closes_total', 'code="1013"') - metricSum(before, 'igw_subscription_closes_total', 'code="1013"')).toBe(1)
    await waitUntil(() => proxy.logs.find('client does not read its replies: closing with 1013').length === 1, 5_000, 'the log line')
    be.publish('flood-bystander', { note: 'still here' })
    await bys.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'still here'))
    await by.dispose()
  })

  it('thousands of subscribe/complete cycles in every protocol leave nothing behind: subscriptions, upstreams, queues, quota slots', async () => {
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const t = await RawClient.open(url, ['graphql-transport-ws'])
    t.send({ type: 'connection_init', payload: { 'x-tenant-id': 'cyc' } })
    const l = await RawClient.open(url, ['graphql-ws'])
    l.send({ type: 'connection_init', payload: { 'x-tenant-id': 'cyc' } })
    const k = await RawClient.open(url, [], { 'x-tenant-id': 'cyc' })
    await t.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    await l.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    const N = 700
    for (let i = 0; i < N; i++) {
      const ch = `cyc-${i % 7}`
      // the same id again and again; half completed at once (still in admission), half a little later
      t.send({ type: 'subscribe', id: 'a', payload: { query: EVENTS(ch) } })
      l.send({ type: 'start', id: 'a', payload: { query: EVENTS(ch) } })
      k.send({ op: 'subscribe', id: 'a', topic: 'events', variables: { channel: ch } })
      if (i % 2 === 1) await sleep(1)
      t.send({ type: 'complete', id: 'a' })
      l.send({ type: 'stop', id: 'a' })
      k.send({ op: 'unsubscribe', id: 'a' })
      if (i % 50 === 0) await sleep(5)
    }
    await sleep(300)
    expect(t.close).toBeUndefined()
    // completed subscribes still being admitted hold their quota slot and count toward the
    // connection's operation limit until admission ends, so a burst (on a loaded machine, where
    // admissions lag) may see RATE_LIMITED or the per-connection QUOTA_EXCEEDED; nothing else
    const codes = [...l.of((m) => m.type === 'error').map((m) => m.payload), ...k.of((m) => m.op === 'error').map((m) => m.errors)].map((e) => JSON.stringify(e))
    expect(codes.filter((c) => !c.includes('"RATE_LIMITED"') && !(c.includes('"QUOTA_EXCEEDED"') && c.includes('operations per connection')))).toEqual([])
    const settled = async () => {
      const m = await proxy.metricsText()
      // only these three connections are open (earlier tests' are gone)
      return metricSum(m, 'igw_subscriptions_active') === 0 && metricSum(m, 'igw_subscription_upstreams') === 0 && be.active() === 0 && metricSum(m, 'igw_subscription_connections') === 3
    }
    await waitFor(settled, 10_000, 'every subscription and upstream subscription to end')
    expect(metricSum(await proxy.metricsText(), 'igw_subscription_queued_bytes')).toBe(0)
    // the quota's concurrency slots all came back: 10 may run at once again, the 11th is refused
    for (let i = 1; i <= 11; i++) t.send({ type: 'subscribe', id: `s${i}`, payload: { query: EVENTS(`cyc-slot-${i}`) } })
    const slotErrors = () => t.of((m) => m.type === 'error' && String(m.id).startsWith('s'))
    await t.wait(() => slotErrors().length > 0, 5_000, 'the eleventh to be refused')
    await sleep(100)
    expect(slotErrors().map((m) => m.id)).toEqual(['s11'])
    expect(JSON.stringify(slotErrors()[0])).toContain('"policy":"concurrent"')
    t.end()
    l.end()
    k.end()
  })

  it('a connection_init credential that cannot be an HTTP header value is refused for that operation; the worker serves on', async () => {
    const by = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    const bys = by.subscribe(EVENTS('hdr-bystander'))
    await subscribed(be, 'hdr-bystander')
    const before = await proxy.metricsText()
    for (const authorization of ['Bearer \u2713', 'Bearer a\r\nx-injected: 1']) {
      const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme', authorization } })
      c.send({ type: 'subscribe', id: 'h', payload: { query: EVENTS('hdr') } })
      await c.wait((x) => x.messages.some((m) => m.type === 'error'), 5_000, 'the refusal')
      expect(c.of((m) => m.type === 'error')[0]).toMatchObject({ id: 'h', payload: [{ extensions: { code: 'BAD_REQUEST' } }] })
      expect(JSON.stringify(c.of((m) => m.type === 'error')[0])).toContain('authorization')
      // the socket stays open for operations that are fine
      c.send({ type: 'ping' })
      await c.wait((x) => x.messages.some((m) => m.type === 'pong'))
      expect(c.close).toBeUndefined()
      c.end()
    }
    expect(be.subscribes.some((s) => s.channel === 'hdr')).toBe(false)
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_subscription_rejections_total', 'code="BAD_REQUEST"') - metricSum(before, 'igw_subscription_rejections_total', 'code="BAD_REQUEST"')).toBe(2)
    expect(metricSum(after, 'igw_worker_restarts_total')).toBe(0)
    be.publish('hdr-bystander', { note: 'still here' })
    await bys.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'still here'))
    await by.dispose()
  })

  describe('a misbehaving upstream', () => {
    let up: Awaited<ReturnType<typeof startScriptedUpstream>>
    let p: TestProxy
    beforeAll(async () => {
      up = await startScriptedUpstream()
      p = await startTestProxy({
        tenants: { acme: {} },
        subscriptions: { upstream: { resume: true, retryInitialMs: 50, retryMaxMs: 100 } },
        routes: [{ name: 'gql', upstream: up.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
      })
    })
    afterAll(async () => {
      await p?.close()
      await up?.close()
    })
    const upstreamSub = async (channel: string) => {
      await waitUntil(() => up.subs.some((s) => s.query.includes(`"${channel}"`)), 5_000, `the upstream subscribe on ${channel}`)
      return up.subs.find((s) => s.query.includes(`"${channel}"`))!
    }
    const next = (s: ScriptedSub, seq: number, extra: Record<string, unknown> = {}) => s.ws.send(JSON.stringify({ type: 'next', id: s.id, payload: { data: { events: { seq, tenant: null, note: null } }, ...extra } }))
    /** Several messages in one TCP write, so they arrive in one read. */
    const together = (ws: WebSocket, ...messages: unknown[]) => {
      const socket = (ws as unknown as { _socket: Socket })._socket
      socket.cork()
      for (const m of messages) ws.send(JSON.stringify(m))
      socket.uncork()
    }

    it('an `error` (or a second `complete`) right behind `complete` ends that operation only; the other streams on the shared connection go on', async () => {
      const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
      const live = c.subscribe(EVENTS('u-live'))
      const l = await upstreamSub('u-live')
      next(l, 1)
      await live.received.wait((r) => r.events.length === 1)
      let seq = 1
      for (const [channel, second] of [
        ['u-ends', { type: 'error', payload: [{ message: 'late' }] }],
        ['u-twice', { type: 'complete' }],
      ] as const) {
        // two operations on the connection: the live one and this one
        const other = c.subscribe(EVENTS(channel))
        const o = await upstreamSub(channel)
        expect(o.ws).toBe(l.ws) // one upstream connection carries both
        together(o.ws, { type: 'complete', id: o.id }, { ...second, id: o.id })
        await other.received.wait((r) => r.completed || r.error !== undefined, 5_000, `${channel} to end`)
        expect(other.received.error).toBeUndefined()
        expect(other.received.completed).toBe(true)
        await sleep(200)
        // the shared upstream connection was not closed as idle under the live stream
        expect(live.received.completed).toBe(false)
        expect(up.sockets.size).toBe(1)
        next(l, ++seq)
        await live.received.wait((r) => r.events.length === seq, 5_000, 'the live stream to go on')
      }
      expect(live.received.gaps).toEqual([])
      expect(p.logs.find('upstream subscription connection lost; reconnecting')).toEqual([])
      await c.dispose()
    })

    it('an event whose `extensions` is null (or not an object) is delivered with its cursor, never dropped in silence', async () => {
      const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
      const s = c.subscribe(EVENTS('u-ext'))
      const u = await upstreamSub('u-ext')
      next(u, 1, { extensions: null })
      next(u, 2, { extensions: 'text' })
      next(u, 3, { extensions: [1] })
      next(u, 4, { extensions: { eventId: '4', other: true } })
      await s.received.wait((r) => r.events.length === 4, 5_000, 'all four events')
      expect(s.received.seqs).toEqual([1, 2, 3, 4])
      for (const ev of s.received.events) expect(ev.extensions!.cursor).toMatch(/^[A-Za-z0-9_-]{60}$/)
      expect(s.received.events.map((ev) => Object.keys(ev.extensions!).sort())).toEqual([['cursor'], ['cursor'], ['cursor'], ['cursor', 'eventId', 'other']])
      expect(p.logs.find('handling an upstream event failed')).toEqual([])
      await c.dispose()
    })
  })

  it('events logged while the replay log\'s Redis was down reach it when it is back, with the key\'s TTL set (no key lives forever)', async () => {
    const redis = await startRedis()
    await redis.stop()
    const p = await startTestProxy({
      redis: { url: redis.url, keyPrefix: 'igwrob:' },
      tenants: { acme: {} },
      subscriptions: { replay: { maxAgeMs: 60_000 } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
    const r = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 })
    try {
      const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
      const s = c.subscribe(EVENTS('redis-down'))
      await subscribed(be, 'redis-down')
      for (let i = 0; i < 3; i++) be.publish('redis-down')
      // delivery never waits for the log
      await s.received.wait((x) => x.events.length === 3)
      await redis.start()
      await r.connect()
      let keys: string[] = []
      await waitFor(async () => (keys = await r.keys('igwrob:subs:*')).length === 1 && (await r.xlen(keys[0]!)) === 3, 10_000, 'the parked events to reach Redis')
      await sleep(100)
      const ttl = await r.pttl(keys[0]!)
      expect(ttl).toBeGreaterThan(0)
      expect(ttl).toBeLessThanOrEqual(65_000)
      await c.dispose()
    } finally {
      r.disconnect()
      await p.close()
      await redis.close()
    }
  })

  it('frames: binary JSON is read like text; garbage, invalid UTF-8 and oversized frames close with their codes, each counted', async () => {
    const small = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate', maxMessageBytes: '64kib' }, filters: [{ name: 'tenant' }] }],
    })
    try {
      const url = `ws://127.0.0.1:${small.port}/graphql`
      const bin = await RawClient.open(url, ['graphql-transport-ws'])
      bin.ws.send(Buffer.from(JSON.stringify({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })), { binary: true })
      await bin.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      bin.ws.send(Buffer.from([0xff, 0x00, 0x7b]), { binary: true })
      expect((await bin.closed()).code).toBe(4400)
      const huge = await RawClient.open(url, ['graphql-transport-ws'])
      huge.send({ type: 'connection_init', payload: { pad: 'x'.repeat(70_000) } })
      expect((await huge.closed()).code).toBe(1009)
      const utf = await RawClient.open(url, ['graphql-ws'])
      // a text frame that is not UTF-8 (ws sends it as given when told it is already valid)
      ;(utf.ws as unknown as { _sender: { send(d: Buffer, o: object, cb?: () => void): void } })._sender.send(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), { binary: false, fin: true, mask: true, compress: false, rsv1: false, opcode: 1, readOnly: false })
      expect((await utf.closed()).code).toBe(1007)
      const m = await small.metricsText()
      expect(metricSum(m, 'igw_subscription_closes_total', 'code="4400"')).toBe(1)
      expect(metricSum(m, 'igw_subscription_closes_total', 'code="1009"')).toBe(1)
      expect(metricSum(m, 'igw_subscription_closes_total', 'code="1007"')).toBe(1)
      await waitFor(async () => metricSum(await small.metricsText(), 'igw_subscription_connections') === 0, 5_000, 'every closed connection to be gone')
    } finally {
      await small.close()
    }
  })

  it('an operation abandoned while its upstream connection is still being opened does not take the worker down when that opening fails', async () => {
    const silent = await startSilentUpstream()
    const p = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      subscriptions: { upstream: { connectTimeoutMs: 400 } },
      routes: [
        { name: 'hang', upstream: silent.url, match: { pathPrefix: '/hang' }, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] },
        { name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] },
      ],
    } as never)
    try {
      // A bystander on the same worker, streaming from a healthy upstream.
      const by = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
      const bys = by.subscribe(EVENTS('bystander'))
      await subscribed(be, 'bystander')
      // A query over the socket toward the upstream that hangs, abandoned before the handshake ends.
      const c = await RawClient.open(`ws://127.0.0.1:${p.port}/hang`, ['graphql-transport-ws'], { 'x-tenant-id': 'acme' })
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'subscribe', id: 'q', payload: { query: '{ ok }' } })
      await waitUntil(() => silent.asked() > 0, 5_000, 'the upstream connection attempt (its upgrade request)')
      c.send({ type: 'complete', id: 'q' })
      await sleep(900) // the handshake times out (400 ms) and fails the opening
      be.publish('bystander', { note: 'after' })
      await bys.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'after'), 5_000, 'the bystander to keep streaming')
      expect(metricSum(await p.metricsText(), 'igw_worker_restarts_total')).toBe(0)
      c.end()
      await by.dispose()
    } finally {
      await p.close()
      await silent.close()
    }
  })
})

describe('an upstream event over the route\'s message limit', () => {
  it('is refused at the upstream socket (the route\'s maxMessageBytes, not ws\'s 100 MiB): the stream ends with an error, and the hub serves on', async () => {
    const be = await startSubscriptionBackend()
    const p = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate', maxMessageBytes: '64kib' }, filters: [{ name: 'tenant' }] }],
    })
    try {
      const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
      const s = c.subscribe(EVENTS('huge', 'seq note blob'))
      await subscribed(be, 'huge')
      be.publish('huge', { note: 'small', bytes: 1_000 })
      await s.received.wait((r) => r.events.length === 1)
      be.publish('huge', { note: 'huge', bytes: 1_000_000 })
      await s.received.wait((r) => r.error !== undefined || r.completed || r.gaps.length > 0, 5_000, 'the stream to end or report a gap')
      expect(s.received.events.map((e) => e.data!.events!.note)).not.toContain('huge')
      // the hub keeps serving: a new subscription on the same route gets its events
      const again = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
      const t = again.subscribe(EVENTS('after'))
      await subscribed(be, 'after')
      be.publish('after', { note: 'still here' })
      await t.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'still here'))
      await c.dispose()
      await again.dispose()
    } finally {
      await p.close()
      await be.close()
    }
  })
})
