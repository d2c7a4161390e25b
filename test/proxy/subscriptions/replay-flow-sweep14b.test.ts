// Sweep 14b: a replay is read from the log as the client's connection takes it (flow control),
// not pushed into its delivery queue all at once. Before the fix a bronze client resuming behind
// more than its tier's maxQueue events got a `dropped` gap on a socket that reads everything (and
// the same again when it replayed from the gap's `from`), and a gold client whose logs held more
// than its hard queue cap was closed with 1013 on every reconnect. A client that stops reading
// during a replay is still bounded: its queue stays small, the rest waits in the log, and what the
// log evicts before the client gets to it is announced as a `trimmed` gap.
import type { Socket } from 'node:net'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import type { QueuedEntry } from '../../../proxy/subscriptions/delivery-queue.ts'
import { HubMetrics } from '../../../proxy/subscriptions/metrics.ts'
import { ReplayFeed, type FeedSource } from '../../../proxy/subscriptions/replay-feed.ts'
import { ReplayRing, type LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'
import { EVENTS, GqlClient, RawClient, waitUntil, type NextPayload } from './clients.ts'

const route = (upstream: string) => [{ name: 'gql', upstream, websocket: { mode: 'terminate' as const }, filters: [{ name: 'tenant' as const }] }]
const subscribed = (be: SubscriptionBackend, channel: string, n = 1) => waitUntil(() => be.subscribes.filter((s) => s.channel === channel).length >= n, 5_000, `${n} backend subscribe(s) on ${channel}`)
const eventsLogged = async (p: TestProxy) => metricSum(await p.metricsText(), 'igw_subscription_events_total')
const publishMany = (be: SubscriptionBackend, channel: string, n: number, bytes?: number): number[] => Array.from({ length: n }, () => be.publish(channel, { bytes }))

/** Subscribe once, take the cursor of one event, leave: the stream lingers (or closes) and keeps what follows. */
async function cursorOf(p: TestProxy, be: SubscriptionBackend, tenant: string, channel: string, fields?: string): Promise<string> {
  const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': tenant })
  const active = async () => metricSum(await p.metricsText(), 'igw_subscriptions_active')
  let cursor: string
  let n: number
  try {
    const s = c.subscribe(EVENTS(channel, fields))
    await subscribed(be, channel)
    be.publish(channel)
    await s.received.wait((r) => r.events.length === 1)
    cursor = s.received.lastCursor!
    n = await active()
  } finally {
    await c.dispose()
  }
  // gone from the gateway too: what is published next is logged, not delivered to this client
  await waitUntil(async () => (await active()) < n, 5_000, 'the first client gone')
  return cursor
}

describe('subscription hub: replays longer than the queue bounds (in-memory log)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const clients: GqlClient[] = []
  const client = (tenant: string) => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': tenant })
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { bz: { tier: 'bronze' }, gd: { tier: 'gold' } },
      subscriptions: {
        replay: { maxEvents: 5_000, maxBytes: '16mib' },
        // bronze keeps its maxQueue of 200; a faster rate only keeps the test short
        qos: { bronze: { ratePerSec: 2_000, burst: 100 }, gold: { maxQueueBytes: '1mib' } },
      },
      routes: route(be.url),
    })
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await proxy?.close()
    await be?.close()
  })

  it('a bronze client resuming 1000 events behind gets all of them in order, then live events (also those published during the replay), no gap', async () => {
    const cursor = await cursorOf(proxy, be, 'bz', 'long')
    const before = await proxy.metricsText()
    const logged = await eventsLogged(proxy)
    const missed = publishMany(be, 'long', 1_000)
    await waitUntil(async () => (await eventsLogged(proxy)) >= logged + 1_000, 10_000, 'the 1000 events logged')
    const c = client('bz')
    const back = c.subscribe(EVENTS('long'), { cursor })
    await back.received.wait((r) => r.events.length >= 300 || r.gaps.length > 0, 20_000, 'the replay under way')
    const during = publishMany(be, 'long', 50) // live, while the replay still runs
    await back.received.wait((r) => r.events.length >= 1_050 || r.gaps.length > 0, 20_000, 'replay and live events')
    const after = publishMany(be, 'long', 5)
    await back.received.wait((r) => r.events.length >= 1_055 || r.gaps.length > 0, 20_000, 'the last live events')
    expect(back.received.gaps).toEqual([])
    expect(back.received.seqs).toEqual([...missed, ...during, ...after])
    expect(c.closed).toBeUndefined()
    const m = await proxy.metricsText()
    expect(metricSum(m, 'igw_qos_drops_total', 'tier="bronze"') - metricSum(before, 'igw_qos_drops_total', 'tier="bronze"')).toBe(0)
    expect(metricSum(m, 'igw_replay_requests_total', 'result="resumed"') - metricSum(before, 'igw_replay_requests_total', 'result="resumed"')).toBe(1)
    expect(metricSum(m, 'igw_replay_events_total', 'source="memory"') - metricSum(before, 'igw_replay_events_total', 'source="memory"')).toBe(1_000)
    // and re-sending from any earlier cursor still in the log works the same way
    const from = back.received.events[99]!.extensions!.cursor!
    const again = client('bz').subscribe(EVENTS('long'), { cursor: from })
    await again.received.wait((r) => r.events.length >= 955 || r.gaps.length > 0, 20_000, 'the re-send')
    expect(again.received.gaps).toEqual([])
    expect(again.received.seqs).toEqual([...missed, ...during, ...after].slice(100))
    back.stop()
    again.stop()
  })

  it('a gold client resuming several subscriptions whose logs exceed its hard queue cap is not closed with 1013', async () => {
    const channels = ['g1', 'g2', 'g3']
    const cursors: string[] = []
    for (const ch of channels) cursors.push(await cursorOf(proxy, be, 'gd', ch, 'seq blob'))
    const logged = await eventsLogged(proxy)
    // 40 × 200 kB per stream: 8 MB each, 24 MB in all (more than the kernel takes at once),
    // against a 1 MiB gold queue cap
    const published = channels.map((ch) => publishMany(be, ch, 40, 200_000))
    await waitUntil(async () => (await eventsLogged(proxy)) >= logged + 120, 10_000, 'the 120 events logged')
    const closesBefore = metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="1013"')
    const c = client('gd')
    const subs = channels.map((ch, i) => c.subscribe(EVENTS(ch, 'seq blob'), { cursor: cursors[i]! }))
    await waitUntil(() => c.closed !== undefined || subs.every((s) => s.received.events.length >= 40), 20_000, 'every replay, or a close')
    expect(c.closed).toBeUndefined()
    for (const [i, s] of subs.entries()) {
      expect(s.received.gaps).toEqual([])
      expect(s.received.seqs).toEqual(published[i])
    }
    // and live events follow on every subscription
    const live = channels.map((ch) => be.publish(ch))
    await waitUntil(() => subs.every((s) => s.received.events.length === 41), 10_000, 'live events')
    for (const [i, s] of subs.entries()) expect(s.received.seqs[40]).toBe(live[i])
    expect(metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="1013"')).toBe(closesBefore)
    for (const s of subs) s.stop()
  })
})

describe('subscription hub: a client that stops reading during a replay', () => {
  it('stays bounded (its queue stays under the tier bound), loses nothing the log still holds, and gets a "trimmed" gap for what the log evicted meanwhile', async () => {
    const be = await startSubscriptionBackend()
    const proxy = await startTestProxy({
      tenants: { bz: { tier: 'bronze' } },
      subscriptions: { replay: { maxEvents: 400, maxBytes: '64mib' }, qos: { bronze: { ratePerSec: 5_000, burst: 500 } } },
      routes: route(be.url),
    })
    let c: RawClient | undefined
    try {
      const cursor = await cursorOf(proxy, be, 'bz', 'stall', 'seq blob')
      const logged = await eventsLogged(proxy)
      // 20 MB to replay: far more than the kernel buffers for a reader that stopped
      const replayed = publishMany(be, 'stall', 400, 50_000)
      await waitUntil(async () => (await eventsLogged(proxy)) >= logged + 400, 10_000, 'the 400 events logged')
      const before = await proxy.metricsText()
      c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'bz' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      const socket = (c.ws as unknown as { _socket: Socket })._socket
      socket.pause()
      c.send({ type: 'subscribe', id: '1', payload: { query: EVENTS('stall', 'seq blob'), extensions: { cursor } } })
      await sleep(300)
      // live events while it does not read: 400 more push the whole replay out of the log (maxEvents 400)
      const live: number[] = []
      for (let i = 0; i < 400; i += 50) {
        live.push(...publishMany(be, 'stall', 50, 50_000))
        await sleep(20)
        const queued = metricSum(await proxy.metricsText(), 'igw_subscription_queued_bytes')
        expect(queued).toBeLessThanOrEqual(256 * 1024) // bronze maxQueueBytes
      }
      await waitUntil(async () => (await eventsLogged(proxy)) >= logged + 800, 10_000, 'the live events logged')
      expect(metricSum(await proxy.metricsText(), 'igw_subscription_queued_bytes')).toBeLessThanOrEqual(256 * 1024)
      socket.resume()
      const nexts = () => c!.of((m) => m.type === 'next').map((m) => m.payload as NextPayload)
      const seqs = () => nexts().filter((p) => p.data?.events).map((p) => p.data!.events!.seq)
      await c.wait(() => seqs().includes(live[live.length - 1]!), 20_000, 'the last live event')
      const payloads = nexts()
      const gaps = payloads.filter((p) => p.extensions?.gap).map((p) => p.extensions!.gap!)
      // one notice, from the log: nothing was dropped by the queue
      expect(gaps.map((g) => g.reason)).toEqual(['trimmed'])
      const at = payloads.findIndex((p) => p.extensions?.gap)
      const head = payloads.slice(0, at).map((p) => p.data!.events!.seq)
      const tail = payloads.slice(at + 1).map((p) => p.data!.events!.seq)
      // before the notice: the start of the replay, in order; after it: everything the log still held
      expect(head).toEqual(replayed.slice(0, head.length))
      expect(head.length).toBeLessThan(400)
      expect(tail).toEqual(live)
      expect(gaps[0]!.from).toBe(head.length > 0 ? payloads[at - 1]!.extensions!.cursor : cursor)
      const after = await proxy.metricsText()
      expect(metricSum(after, 'igw_qos_drops_total', 'tier="bronze"') - metricSum(before, 'igw_qos_drops_total', 'tier="bronze"')).toBe(0)
      expect(metricSum(after, 'igw_replay_gaps_total', 'reason="trimmed"') - metricSum(before, 'igw_replay_gaps_total', 'reason="trimmed"')).toBe(1)
      expect(c.close).toBeUndefined()
    } finally {
      c?.end()
      await proxy.close()
      await be.close()
    }
  })
})

describe('subscription hub: replays longer than the queue bounds (Redis log)', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let proxy: TestProxy
  let r: Redis

  beforeAll(async () => {
    redis = await startRedis()
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      redis: { url: redis.url, keyPrefix: 'igwflow:' },
      tenants: { bz: { tier: 'bronze' } },
      subscriptions: {
        replay: { maxEvents: 5_000 },
        // the stream closes when its last client leaves: a resume finds its epoch in Redis only
        upstream: { lingerMs: 0 },
        qos: { bronze: { ratePerSec: 2_000, burst: 100 } },
      },
      routes: route(be.url),
    })
    r = new Redis(redis.url, { maxRetriesPerRequest: 0 })
  })
  afterAll(async () => {
    r?.disconnect()
    await proxy?.close()
    await be?.close()
    await redis?.close()
  })

  it('a bronze client resuming 1000 events behind from Redis gets all of them in order, an epoch gap, then live events', async () => {
    const a = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'bz' })
    let cursor: string
    let missed: number[]
    try {
      const s = a.subscribe(EVENTS('redis-long'))
      await subscribed(be, 'redis-long')
      be.publish('redis-long')
      await s.received.wait((x) => x.events.length === 1)
      cursor = s.received.lastCursor!
      missed = publishMany(be, 'redis-long', 1_000)
      let keys: string[] = []
      await waitUntil(async () => (keys = await r.keys('igwflow:subs:*')).length === 1 && (await r.xlen(keys[0]!)) === 1_001, 10_000, 'the 1001 events in Redis')
    } finally {
      await a.dispose()
    }
    await waitUntil(() => be.active() === 0, 5_000, 'the stream closed upstream')
    const before = await proxy.metricsText()
    const b = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'bz' })
    try {
      const back = b.subscribe(EVENTS('redis-long'), { cursor })
      await subscribed(be, 'redis-long', 2)
      await back.received.wait((x) => x.events.length >= 300 || x.gaps.length > 0, 20_000, 'the replay under way')
      const during = publishMany(be, 'redis-long', 50) // live on the new stream, while the replay runs
      await back.received.wait((x) => x.events.length >= 1_050 || x.gaps.length > 1, 20_000, 'replay and live events')
      const after = publishMany(be, 'redis-long', 5)
      await back.received.wait((x) => x.events.length >= 1_055 || x.gaps.length > 1, 20_000, 'the last live events')
      expect(back.received.gaps.map((g) => g.reason)).toEqual(['epoch'])
      expect(back.received.seqs).toEqual([...missed, ...during, ...after])
      // the epoch notice sits between the replayed events and the live ones
      const at = back.received.payloads.findIndex((p) => p.extensions?.gap)
      expect(back.received.payloads.slice(0, at).map((p) => p.data!.events!.seq)).toEqual(missed)
      expect(b.closed).toBeUndefined()
      const m = await proxy.metricsText()
      expect(metricSum(m, 'igw_qos_drops_total', 'tier="bronze"') - metricSum(before, 'igw_qos_drops_total', 'tier="bronze"')).toBe(0)
      expect(metricSum(m, 'igw_replay_events_total', 'source="redis"') - metricSum(before, 'igw_replay_events_total', 'source="redis"')).toBe(1_000)
      expect(metricSum(m, 'igw_replay_requests_total', 'result="resumed"') - metricSum(before, 'igw_replay_requests_total', 'result="resumed"')).toBe(1)
      back.stop()
    } finally {
      await b.dispose()
    }
  })
})

describe('replay feed (pure): reading the ring by sequence number', () => {
  const E1 = '1111111111111111'
  const ev = (offset: number): LogEvent => ({ kind: 'event', epoch: E1, offset, ts: offset, cursor: `a${offset}`, tail: '', result: { data: { n: offset } }, receivedAt: 0 })
  const src = (ring: ReplayRing): FeedSource => ({ ring, streamId: 's', maxAgeMs: 60_000, metrics: new HubMetrics(new Registry()), logger: pino({ level: 'silent' }), cursor: (_e, offset) => `a${offset}` })
  const label = (e: QueuedEntry | null | undefined) => (e === null ? 'wait' : e === undefined ? 'live' : e.kind === 'event' ? e.cursor : e.kind === 'gap' ? `gap:${e.gap.reason}:${e.gap.from}->${e.gap.to}` : e.kind)

  it('reads what was logged after the cursor and what is logged meanwhile, then says live; a ring that evicts ahead of it becomes one trimmed gap', () => {
    const ring = new ReplayRing(5, Number.MAX_SAFE_INTEGER)
    ring.startEpoch(E1)
    for (let i = 1; i <= 3; i++) ring.push(ev(i), i)
    const at = ring.locate(E1, 1, 3)
    expect(at).toEqual({ kind: 'ok', seq: ring.startSeq + 1 })
    const feed = new ReplayFeed(src(ring), (at as { seq: number }).seq, E1, 1, 'a1')
    expect(label(feed.next())).toBe('a2')
    ring.push(ev(4), 4)
    expect([label(feed.next()), label(feed.next()), label(feed.next())]).toEqual(['a3', 'a4', 'live'])
    for (let i = 5; i <= 12; i++) ring.push(ev(i), i) // holds 8..12: 5..7 evicted before the feed read them
    const rest: string[] = []
    for (let e = feed.next(); e !== undefined; e = feed.next()) rest.push(label(e))
    expect(rest).toEqual(['gap:trimmed:a4->a7', 'a8', 'a9', 'a10', 'a11', 'a12'])
    expect(ring.at(ring.startSeq)).toMatchObject({ offset: 8 })
    expect(ring.at(ring.endSeq)).toBeUndefined()
  })
})
