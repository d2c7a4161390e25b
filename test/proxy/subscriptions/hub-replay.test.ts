// Replay cursors and at-least-once delivery: a client that comes back with its cursor gets what
// it missed, in order, without duplicates, then live events; when that is impossible it gets an
// explicit gap notice saying why. Backend outages start a new epoch (or resume, when the backend
// can), and clients are told.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient, topicSeqs, waitUntil, type NextPayload, type Received } from './clients.ts'

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i)
const subscribed = (be: SubscriptionBackend, channel: string, n = 1) => waitUntil(() => be.subscribes.filter((s) => s.channel === channel).length >= n, 5_000, `${n} backend subscribe(s) on ${channel}`)

describe('subscription hub: replay cursors, gaps, outages', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  let short: TestProxy
  const clients: GqlClient[] = []
  const client = (p: TestProxy = proxy) => {
    const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
    clients.push(c)
    return c
  }
  const route = (upstream: string) => [{ name: 'gql', upstream, websocket: { mode: 'terminate' as const }, filters: [{ name: 'tenant' as const }] }]

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: { replay: { maxEvents: 200 }, topics: { events: { query: 'subscription($channel: String!) { events(channel: $channel) { seq note } }', clientVariables: ['channel'] } } },
      routes: route(be.url),
    })
    short = await startTestProxy({ tenants: { acme: {} }, subscriptions: { replay: { maxAgeMs: 1_000 } }, routes: route(be.url) })
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await proxy?.close()
    await short?.close()
    await be?.close()
  })

  it('a client that reconnects with its cursor gets exactly what it missed, in order, then live events', async () => {
    const first = client()
    const a = first.subscribe(EVENTS('r1'))
    await subscribed(be, 'r1')
    for (let i = 0; i < 5; i++) be.publish('r1')
    await a.received.wait((r) => r.events.length === 5)
    const base = a.received.seqs[0]! - 1
    const cursor = a.received.lastCursor!
    await first.dispose()
    // away: the stream lingers upstream and keeps logging (all 5 logged before the return, so
    // they come back as a replay, not live)
    const received = metricSum(await proxy.metricsText(), 'igw_subscription_events_total')
    for (let i = 0; i < 5; i++) be.publish('r1')
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscription_events_total') >= received + 5, 5_000, 'the 5 events logged while away')
    const back = client().subscribe(EVENTS('r1'), { cursor })
    await back.received.wait((r) => r.events.length === 5)
    be.publish('r1')
    be.publish('r1')
    await back.received.wait((r) => r.events.length === 7)
    expect(back.received.seqs).toEqual(range(base + 6, base + 12))
    expect(back.received.gaps).toEqual([])
    // still the one upstream subscription: the reconnect joined it, it did not restart it
    expect(be.subscribes.filter((s) => s.channel === 'r1')).toHaveLength(1)
    expect(metricSum(await proxy.metricsText(), 'igw_replay_events_total', 'source="memory"')).toBeGreaterThanOrEqual(5)
    back.stop()
  })

  it('no duplicate and no hole at the seam between replay and live, under continuous traffic', async () => {
    const first = client()
    const a = first.subscribe(EVENTS('seam'))
    await subscribed(be, 'seam')
    const pump = setInterval(() => be.publish('seam'), 2)
    try {
      await a.received.wait((r) => r.events.length >= 20)
      await first.dispose()
      const cut = a.received.events[a.received.events.length - 1]!
      const from = cut.data!.events!.seq
      await new Promise((r) => setTimeout(r, 30))
      const back = client().subscribe(EVENTS('seam'), { cursor: cut.extensions!.cursor })
      await back.received.wait((r) => r.events.length >= 40)
      const seqs = back.received.seqs
      expect(back.received.gaps).toEqual([])
      expect(seqs[0]).toBe(from + 1)
      expect(seqs).toEqual(range(from + 1, from + seqs.length))
      back.stop()
    } finally {
      clearInterval(pump)
    }
  })

  it('topic protocol: subscribe with a cursor, and re-send on demand from any cursor still in the log', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [], { 'x-tenant-id': 'acme' })
    c.send({ op: 'subscribe', id: 's', topic: 'events', variables: { channel: 'topic-replay' } })
    await subscribed(be, 'topic-replay')
    for (let i = 0; i < 5; i++) be.publish('topic-replay')
    await c.wait((x) => topicSeqs(x, 's').length === 5)
    const events = c.of((m) => m.op === 'event')
    const seqs = topicSeqs(c, 's')
    const second = (events[1]!.payload as NextPayload).extensions!.cursor!
    c.send({ op: 'replay', id: 's', cursor: second })
    await c.wait((x) => topicSeqs(x, 's').length === 8)
    be.publish('topic-replay')
    await c.wait((x) => topicSeqs(x, 's').length === 9)
    expect(topicSeqs(c, 's')).toEqual([...seqs, ...seqs.slice(2), seqs[4]! + 1])
    expect(c.of((m) => m.op === 'subscribed').map((m) => m.cursor)).toEqual([expect.any(String), second])
    // a new connection resuming by topic and cursor
    const d = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [], { 'x-tenant-id': 'acme' })
    d.send({ op: 'subscribe', id: 's', topic: 'events', variables: { channel: 'topic-replay' }, cursor: (events[3]!.payload as NextPayload).extensions!.cursor })
    await d.wait((x) => topicSeqs(x, 's').length === 2)
    expect(topicSeqs(d, 's')).toEqual([seqs[4], seqs[4]! + 1])
    c.end()
    d.end()
  })

  it('a cursor older than the log (count bound) gets a "trimmed" gap notice, then what is left, then live', async () => {
    const first = client()
    const a = first.subscribe(EVENTS('trim'))
    await subscribed(be, 'trim')
    for (let i = 0; i < 3; i++) be.publish('trim')
    await a.received.wait((r) => r.events.length === 3)
    const base = a.received.seqs[0]! - 1
    const cursor = a.received.lastCursor!
    await first.dispose()
    for (let i = 0; i < 210; i++) be.publish('trim') // the log keeps 200: events 4..13 are gone
    await new Promise((r) => setTimeout(r, 50))
    const back = client().subscribe(EVENTS('trim'), { cursor })
    await back.received.wait((r) => r.events.length === 200)
    const notice = back.received.payloads[0]!
    expect(notice.extensions!.gap).toEqual({ reason: 'trimmed', from: cursor, to: expect.any(String), missed: 10 })
    expect(notice.errors![0]!.extensions!.code).toBe('STREAM_GAP')
    expect(notice.extensions!.cursor).toBe(notice.extensions!.gap!.to)
    expect(back.received.seqs).toEqual(range(base + 14, base + 213))
    // the gap's `to` is a valid position: resuming from it gives the same continuation
    const again = client().subscribe(EVENTS('trim'), { cursor: notice.extensions!.gap!.to! })
    await again.received.wait((r) => r.events.length === 200)
    expect(again.received.gaps).toEqual([])
    expect(again.received.seqs).toEqual(back.received.seqs)
    expect(metricSum(await proxy.metricsText(), 'igw_replay_gaps_total', 'reason="trimmed"')).toBeGreaterThanOrEqual(1)
    back.stop()
    again.stop()
  })

  it('a cursor whose events aged out gets an "expired" gap notice', async () => {
    const first = client(short)
    const a = first.subscribe(EVENTS('age'))
    await subscribed(be, 'age')
    be.publish('age')
    await a.received.wait((r) => r.events.length === 1)
    const cursor = a.received.lastCursor!
    await first.dispose()
    const lost = be.publish('age')
    await new Promise((r) => setTimeout(r, 1_200))
    const kept = be.publish('age')
    await new Promise((r) => setTimeout(r, 50))
    const back = client(short).subscribe(EVENTS('age'), { cursor })
    await back.received.wait((r) => r.events.length === 1)
    expect(back.received.gaps).toEqual([{ reason: 'expired', from: cursor, to: expect.any(String), missed: 1 }])
    expect(back.received.seqs).toEqual([kept])
    expect(back.received.seqs).not.toContain(lost)
    back.stop()
  })

  it('forged, foreign or garbage cursors are refused with an "invalid" gap; delivery continues live', async () => {
    const a = client().subscribe(EVENTS('forge'))
    const other = client().subscribe(EVENTS('forge-other'))
    await subscribed(be, 'forge')
    await subscribed(be, 'forge-other')
    be.publish('forge')
    be.publish('forge-other')
    await a.received.wait((r) => r.events.length === 1)
    await other.received.wait((r) => r.events.length === 1)
    const good = a.received.lastCursor!
    const i = 30
    const forged = good.slice(0, i) + (good[i] === 'A' ? 'B' : 'A') + good.slice(i + 1)
    const tries: Received[] = []
    for (const cursor of [forged, other.received.lastCursor!, 'garbage', '']) tries.push(client().subscribe(EVENTS('forge'), { cursor }).received)
    for (const r of tries) await r.wait((x) => x.payloads.length >= 1)
    for (const r of tries) expect(r.gaps).toEqual([{ reason: 'invalid', from: null, to: expect.any(String) }])
    be.publish('forge')
    for (const r of tries) await r.wait((x) => x.events.length === 1)
    for (const r of tries) expect(r.events).toHaveLength(1)
    expect(metricSum(await proxy.metricsText(), 'igw_replay_gaps_total', 'reason="invalid"')).toBeGreaterThanOrEqual(4)
    a.stop()
    other.stop()
  })
})

describe('subscription hub: upstream outages', () => {
  it('backend killed and restarted mid-stream: clients get an epoch gap and the stream resumes', async () => {
    const be = await startSubscriptionBackend()
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: { upstream: { retryInitialMs: 50, retryMaxMs: 200 }, topics: { events: { query: 'subscription { events(channel: "k") { seq } }' } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    const t = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [], { 'x-tenant-id': 'acme' })
    try {
      const a = c.subscribe('subscription { events(channel: "k") { seq } }')
      t.send({ op: 'subscribe', topic: 'events' })
      await subscribed(be, 'k', 2)
      for (let i = 0; i < 3; i++) be.publish('k')
      await a.received.wait((r) => r.events.length === 3)
      await t.wait((x) => topicSeqs(x, 'events').length === 3)
      const beforeOutage = a.received.lastCursor!
      const midway = a.received.events[1]!.extensions!.cursor!

      await be.stop()
      be.publish('k') // nobody hears this one: the gap is real
      await new Promise((r) => setTimeout(r, 150))
      await be.start()
      await subscribed(be, 'k', 4)

      await a.received.wait((r) => r.gaps.length === 1)
      await t.wait((x) => x.messages.some((m) => m.op === 'gap'))
      const gap = a.received.gaps[0]!
      expect(gap).toEqual({ reason: 'epoch', from: beforeOutage, to: expect.any(String) })
      expect(t.of((m) => m.op === 'gap')[0]).toMatchObject({ op: 'gap', id: 'events', gap: { reason: 'epoch' } })
      be.publish('k')
      await a.received.wait((r) => r.events.length === 4)
      await t.wait((x) => topicSeqs(x, 'events').length === 4)
      expect(a.received.seqs[3]).toBe(5)
      expect(a.received.completed).toBe(false)
      expect(a.received.error).toBeUndefined()

      // A client that was behind when the backend went away: the rest of the old epoch from the
      // log, the epoch gap, then the new epoch. Nothing silently skipped.
      const late = c.subscribe('subscription { events(channel: "k") { seq } }', { cursor: midway })
      await late.received.wait((r) => r.events.length === 2)
      expect(late.received.seqs).toEqual([3, 5])
      expect(late.received.payloads.map((p) => (p.extensions?.gap ? 'gap' : p.data!.events!.seq))).toEqual([3, 'gap', 5])

      const metrics = await proxy.metricsText()
      expect(metricSum(metrics, 'igw_subscription_upstream_reconnects_total')).toBeGreaterThanOrEqual(1)
      expect(metricSum(metrics, 'igw_replay_gaps_total', 'reason="epoch"')).toBeGreaterThanOrEqual(2)
    } finally {
      t.end()
      await c.dispose()
      await proxy.close()
      await be.close()
    }
  })

  it('an upstream that was never reachable fails the subscribe with UPSTREAM_UNAVAILABLE (no endless retry)', async () => {
    const be = await startSubscriptionBackend()
    const dead = be.url
    await be.close() // nothing listens there any more
    const proxy = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'gql', upstream: dead, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }] })
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    try {
      const a = c.subscribe(EVENTS('nowhere'))
      await waitUntil(() => a.received.error !== undefined)
      expect(a.received.error).toEqual([expect.objectContaining({ extensions: { code: 'UPSTREAM_UNAVAILABLE' } })])
      const m = await proxy.metricsText()
      expect(metricSum(m, 'igw_subscription_upstreams')).toBe(0)
      expect(metricSum(m, 'igw_subscriptions_active')).toBe(0)
      expect(metricSum(m, 'igw_subscription_upstream_connections')).toBe(0)
    } finally {
      await c.dispose()
      await proxy.close()
    }
  })

  it('a backend that can resume (lastEventId → resumedFrom) keeps the epoch: no gap, nothing lost', async () => {
    const be = await startSubscriptionBackend({ resumable: true })
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: { upstream: { retryInitialMs: 50, retryMaxMs: 200, resume: true } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    try {
      const a = c.subscribe(EVENTS('res'))
      await subscribed(be, 'res')
      for (let i = 0; i < 3; i++) be.publish('res')
      await a.received.wait((r) => r.events.length === 3)
      await be.stop()
      be.publish('res')
      be.publish('res') // published while the gateway is cut off: the backend keeps them
      await be.start()
      await subscribed(be, 'res', 2)
      expect(be.subscribes.filter((s) => s.channel === 'res')[1]!.lastEventId).toBe('3')
      await a.received.wait((r) => r.events.length === 5)
      be.publish('res')
      await a.received.wait((r) => r.events.length === 6)
      expect(a.received.seqs).toEqual([1, 2, 3, 4, 5, 6])
      expect(a.received.gaps).toEqual([])
    } finally {
      await c.dispose()
      await proxy.close()
      await be.close()
    }
  })
})
