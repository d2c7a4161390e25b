// QoS on delivery: a slow bronze consumer loses its oldest events (each loss announced as a gap,
// counted by tier) while gold on the same stream is untouched; gold is never dropped but closed
// with 1013 over its hard cap; over the worker's memory budget bronze is shed before silver.
// Also: a config reload keeps streams open; shutdown flushes and closes with 1001.
import type { Socket } from 'node:net'
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient, waitUntil, type NextPayload } from './clients.ts'
import { sleep } from '../../helpers/wait.ts'

const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'
const key = new TextEncoder().encode(SECRET)
const token = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('10m').sign(key)
const subscribed = (be: SubscriptionBackend, channel: string, n = 1) => waitUntil(() => be.subscribes.filter((s) => s.channel === channel).length >= n, 5_000, `${n} backend subscribe(s) on ${channel}`)

function socketOf(c: RawClient): Socket {
  return (c.ws as unknown as { _socket: Socket })._socket
}

/** A graphql-transport-ws client on a raw socket (so a test can stop reading it). */
async function rawSubscriber(port: number, auth: string, id: string, query: string): Promise<RawClient> {
  const c = await RawClient.open(`ws://127.0.0.1:${port}/graphql`, ['graphql-transport-ws'])
  c.send({ type: 'connection_init', payload: { authorization: `Bearer ${auth}` } })
  c.send({ type: 'subscribe', id, payload: { query } })
  await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
  return c
}

const nexts = (c: RawClient) => c.of((m) => m.type === 'next').map((m) => m.payload as NextPayload)
const eventSeqs = (c: RawClient) => nexts(c).filter((p) => p.data?.events).map((p) => p.data!.events!.seq)
const gapsOf = (c: RawClient) => nexts(c).filter((p) => p.extensions?.gap).map((p) => p.extensions!.gap!)

// For proxies whose shutdown a test does not look at: a drain holds connections still open for a
// grace of a quarter of its deadline (1 s of the default 10 s), paid at every close.
const QUICK_SHUTDOWN = { drainTimeoutMs: 1_000 }

function chain(dedupClaims: string[] = []) {
  return [{ name: 'tenant' as const, jwt: { secret: SECRET, claim: 'tenant', algorithms: ['HS256' as const] } }, { name: 'subscriptions' as const, dedupClaims, tierClaim: 'tier' }]
}

describe('subscription hub: QoS tiers', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  let gold: string
  let bronze: string

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    gold = await token({ tenant: 'acme', tier: 'gold' })
    bronze = await token({ tenant: 'acme', tier: 'bronze' })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: {
        qos: {
          bronze: { ratePerSec: 20, burst: 2, maxQueue: 3, maxQueueBytes: '256kib' },
          socketHighWaterBytes: '16kib',
        },
      },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: chain() }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('a bronze consumer over its rate loses its oldest events, each loss announced; gold on the same stream gets everything', async () => {
    const g = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { authorization: `Bearer ${gold}` })
    const b = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { authorization: `Bearer ${bronze}` })
    const gs = g.subscribe(EVENTS('rate'))
    const bs = b.subscribe(EVENTS('rate'))
    await subscribed(be, 'rate')
    await sleep(100)
    const before = await proxy.metricsText()
    for (let i = 0; i < 40; i++) be.publish('rate')
    await gs.received.wait((r) => r.events.length === 40, 2_000, 'gold to get all 40')
    // one upstream subscription carried both tiers
    expect(be.subscribes.filter((s) => s.channel === 'rate')).toHaveLength(1)
    expect(gs.received.gaps).toEqual([])
    expect(bs.received.events.length).toBeLessThan(40)
    // bronze: a few delivered at its rate, the rest announced as dropped; nothing silently lost
    await bs.received.wait((r) => r.events.length + r.gaps.reduce((n, x) => n + (x.missed ?? 0), 0) === 40, 5_000, 'bronze to account for all 40')
    const seqs = bs.received.seqs
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y))
    expect(bs.received.gaps.every((x) => x.reason === 'dropped' && x.from !== null && x.to !== null)).toBe(true)
    const missed = bs.received.gaps.reduce((n, x) => n + x.missed!, 0)
    expect(missed).toBeGreaterThan(20)
    // the newest events survive: bronze drops the oldest
    expect(seqs[seqs.length - 1]).toBe(gs.received.seqs[39])
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_qos_drops_total', 'tier="bronze"') - metricSum(before, 'igw_qos_drops_total', 'tier="bronze"')).toBe(missed)
    // dropped events, told apart from shed HTTP requests (kind="request", the quota filter's)
    expect(metricSum(after, 'igw_qos_drops_total', 'tier="bronze",kind="event"') - metricSum(before, 'igw_qos_drops_total', 'tier="bronze",kind="event"')).toBe(missed)
    expect(metricSum(after, 'igw_qos_drops_total', 'tier="gold"')).toBe(0)
    expect(metricSum(after, 'igw_replay_gaps_total', 'reason="dropped"')).toBeGreaterThanOrEqual(bs.received.gaps.length)
    // re-send on demand: the gap's `from` is still in the log
    const firstGap = bs.received.gaps[0]!
    const lastBefore = bs.received.events.find((e) => e.extensions!.cursor === firstGap.from)!.data!.events!.seq
    const resend = g.subscribe(EVENTS('rate'), { cursor: firstGap.from! })
    await resend.received.wait((r) => r.events.length >= firstGap.missed!)
    expect(resend.received.seqs.slice(0, firstGap.missed!)).toEqual(gs.received.seqs.filter((s) => s > lastBefore).slice(0, firstGap.missed!))
    await g.dispose()
    await b.dispose()
  })

  it('a bronze socket that stops reading: its queue drops, gold on the same stream streams on', async () => {
    const b = await rawSubscriber(proxy.port, bronze, 'b', EVENTS('slow', 'seq blob'))
    const g = await rawSubscriber(proxy.port, gold, 'g', EVENTS('slow', 'seq blob'))
    await subscribed(be, 'slow')
    await new Promise((r) => setTimeout(r, 50))
    socketOf(b).pause()
    // 30 MB in batches gold keeps up with: far more than the kernel buffers a stalled reader.
    const total = 600
    for (let i = 0; i < total; i += 10) {
      for (let j = 0; j < 10; j++) be.publish('slow', { bytes: 50_000 })
      await g.wait((x) => eventSeqs(x).length === i + 10, 5_000, 'gold to keep up')
    }
    expect(gapsOf(g)).toEqual([])
    expect(metricSum(await proxy.metricsText(), 'igw_qos_drops_total', 'tier="bronze"')).toBeGreaterThan(0)
    socketOf(b).resume()
    await b.wait((x) => eventSeqs(x).length + gapsOf(x).reduce((n, y) => n + (y.missed ?? 0), 0) === total, 10_000, 'bronze to account for every event')
    expect(gapsOf(b).length).toBeGreaterThan(0)
    expect(eventSeqs(b)).toEqual([...eventSeqs(b)].sort((x, y) => x - y))
    b.end()
    g.end()
  })

  it('gold is never dropped: over its hard memory cap the connection is closed with 1013', async () => {
    const capped = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: { qos: { gold: { maxQueueBytes: '512kib' }, socketHighWaterBytes: '16kib' } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: chain() }],
    })
    try {
      const g = await rawSubscriber(capped.port, gold, 'g', EVENTS('cap', 'seq blob'))
      await subscribed(be, 'cap')
      await sleep(50)
      socketOf(g).pause()
      for (let i = 0; i < 400; i++) be.publish('cap', { bytes: 50_000 })
      // polled, not slept on: the worker may take a while for 20 MB on a busy host
      await expect.poll(async () => metricSum(await capped.metricsText(), 'igw_subscription_closes_total', 'code="1013"'), { timeout: 10_000 }).toBe(1)
      const metrics = await capped.metricsText()
      expect(metricSum(metrics, 'igw_subscription_closes_total', 'code="1013"')).toBe(1)
      expect(metricSum(metrics, 'igw_qos_drops_total', 'tier="gold"')).toBe(0)
      socketOf(g).resume()
      const close = await g.closed(10_000)
      expect(close.code).toBe(1013)
      expect(gapsOf(g)).toEqual([]) // what it got before the close had no holes
      const seqs = eventSeqs(g)
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i))
    } finally {
      await capped.close()
    }
  })
})

describe('subscription hub: memory budget sheds bronze before silver', () => {
  it('sheds the oldest bronze events first; silver loses only once bronze has nothing left to give', async () => {
    const be = await startSubscriptionBackend()
    const silver = await token({ tenant: 'acme', tier: 'silver' })
    const bronze = await token({ tenant: 'acme', tier: 'bronze' })
    // Both tiers nearly stopped by their rate (deterministic queues, whatever the kernel buffers),
    // bounds far above the worker's budget: only the budget can drop anything.
    const slow = { ratePerSec: 0.001, burst: 1, maxQueue: 100_000, maxQueueBytes: '1gb' }
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: { qos: { bronze: slow, silver: slow, memoryBudgetBytes: '1mb' } },
      shutdown: QUICK_SHUTDOWN,
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: chain() }],
    })
    try {
      const s = await rawSubscriber(proxy.port, silver, 's', EVENTS('budget', 'seq blob'))
      const b = await rawSubscriber(proxy.port, bronze, 'b', EVENTS('budget', 'seq blob'))
      await subscribed(be, 'budget')
      await sleep(50)
      const drops = async () => {
        const m = await proxy.metricsText()
        return { bronze: metricSum(m, 'igw_qos_drops_total', 'tier="bronze"'), silver: metricSum(m, 'igw_qos_drops_total', 'tier="silver"'), queued: metricSum(m, 'igw_subscription_queued_bytes') }
      }
      // 8 × 100 kB per client = 1.6 MB queued in all: bronze must give way, silver must not.
      for (let i = 0; i < 9; i++) be.publish('budget', { bytes: 100_000 })
      await sleep(300)
      let d = await drops()
      expect(d.bronze).toBeGreaterThan(0)
      expect(d.silver).toBe(0)
      expect(d.queued).toBeLessThanOrEqual(1_000_000)
      // silver alone over the budget: now silver drops too (bronze has nothing left)
      for (let i = 0; i < 12; i++) be.publish('budget', { bytes: 100_000 })
      await sleep(300)
      d = await drops()
      expect(d.silver).toBeGreaterThan(0)
      expect(d.bronze).toBeGreaterThan(d.silver)
      expect(d.queued).toBeLessThanOrEqual(1_000_000)
      s.end()
      b.end()
    } finally {
      await proxy.close()
      await be.close()
    }
  })
})

// Concurrent: each test has its own backend, proxy and clients; the one timing assumption (fewer
// than 20 events out at 10/s, 100 ms after the first) has more than a second of margin.
describe.concurrent('subscription hub: reloads and shutdown', () => {
  it('a config reload keeps live streams open and in order; new subscribes see the new config', async ({ expect }) => {
    const be = await startSubscriptionBackend()
    const doc = (topics: Record<string, { query: string }>) => ({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      tenants: { acme: {} },
      subscriptions: { topics },
      shutdown: QUICK_SHUTDOWN,
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const }, filters: [{ name: 'tenant' as const }] }],
    })
    const proxy = await startTestProxy(doc({ old: { query: 'subscription { events(channel: "reload") { seq } }' } }))
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    const t = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [], { 'x-tenant-id': 'acme' })
    try {
      const a = c.subscribe(EVENTS('reload'))
      t.send({ op: 'subscribe', topic: 'old' })
      await subscribed(be, 'reload', 2)
      for (let i = 0; i < 3; i++) be.publish('reload')
      await a.received.wait((r) => r.events.length === 3)
      const res = await proxy.applyConfig(validateConfig(doc({ fresh: { query: 'subscription { events(channel: "reload") { seq note } }' } })))
      expect(res).toEqual({ ok: true, version: 2 })
      for (let i = 0; i < 3; i++) be.publish('reload')
      await a.received.wait((r) => r.events.length === 6)
      await t.wait((x) => x.of((m) => m.op === 'event').length === 6)
      expect(a.received.seqs).toEqual([1, 2, 3, 4, 5, 6])
      expect(a.received.gaps).toEqual([])
      expect(c.closed).toBeUndefined()
      expect(t.close).toBeUndefined()
      // nothing was resubscribed upstream
      expect(be.subscribes.filter((s) => s.channel === 'reload')).toHaveLength(2)
      // the new config applies to new subscribes: "old" is gone, "fresh" exists
      t.send({ op: 'subscribe', id: 'o2', topic: 'old' })
      t.send({ op: 'subscribe', id: 'f', topic: 'fresh' })
      await t.wait((x) => x.messages.some((m) => m.op === 'error' && m.id === 'o2') && x.messages.some((m) => m.op === 'subscribed' && m.id === 'f'))
    } finally {
      t.end()
      await c.dispose()
      await proxy.close()
      await be.close()
    }
  })

  it('shutdown flushes what is queued, then closes with 1001', async ({ expect }) => {
    const be = await startSubscriptionBackend()
    const proxy = await startTestProxy({
      tenants: { acme: { tier: 'bronze' } },
      subscriptions: { qos: { bronze: { ratePerSec: 10, burst: 1, maxQueue: 100 } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
    try {
      const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
      c.send({ type: 'subscribe', id: '1', payload: { query: EVENTS('bye') } })
      await subscribed(be, 'bye')
      for (let i = 0; i < 20; i++) be.publish('bye')
      await c.wait((x) => eventSeqs(x).length >= 1)
      await new Promise((r) => setTimeout(r, 100))
      expect(eventSeqs(c).length).toBeLessThan(20) // the rest waits in the bronze queue
      await proxy.close()
      const close = await c.closed()
      expect(close).toEqual({ code: 1001, reason: 'gateway shutting down' })
      expect(eventSeqs(c)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
      expect(gapsOf(c)).toEqual([])
    } finally {
      await proxy.close()
      await be.close()
    }
  })
})
