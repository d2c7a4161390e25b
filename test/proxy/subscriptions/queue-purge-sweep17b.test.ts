// A subscription the client ends while its events still wait in the connection's delivery queue
// (the token bucket empty, or the socket congested): those events are never sent, so they must
// not keep counting against the queue's bounds and the worker's memory budget. They did, until
// the pump reached them: a gold connection was closed with 1013 for events of a subscription it
// had already completed, a silver one lost live events (announced as `dropped` gaps) to make room
// for dead ones, and igw_subscription_queued_bytes stayed up.
import { afterEach, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, RawClient, waitUntil } from './clients.ts'
import { COMPLETE, DeliveryQueue, type GapHolder, type QueuedEntry } from '../../../proxy/subscriptions/delivery-queue.ts'

// Nearly stopped by its rate: one event goes out (the burst), the rest wait in the queue, whatever
// the kernel's socket buffers do — the queue's content is deterministic.
const STALLED = { ratePerSec: 0.001, burst: 1 }

describe('delivery queue: purge (pure)', () => {
  const holder = (): GapHolder => ({ lastCursor: null, pendingGap: undefined, closed: false })
  const ev = (offset: number): QueuedEntry => ({ kind: 'event', epoch: 'e', offset, ts: 0, cursor: `c${offset}`, tail: 'x'.repeat(10), result: {}, receivedAt: 0 })

  it('takes out every item of one subscription (events, terminal, owed gap), keeps the others in order, and its counts', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 100, maxQueueBytes: 1_000_000 })
    const a = holder()
    const b = holder()
    for (let i = 1; i <= 40; i++) q.push({ sub: i % 3 === 0 ? b : a, entry: ev(i), bytes: 10 })
    q.push({ sub: a, entry: COMPLETE, bytes: 96 })
    q.urgent.push({ sub: a, entry: COMPLETE, bytes: 96 }, { sub: b, entry: COMPLETE, bytes: 96 })
    q.gapOwed.add(a)
    q.gapOwed.add(b)
    a.closed = true
    q.purge(a)
    const left: number[] = []
    for (let item = q.shift(); item !== undefined; item = q.shift()) {
      expect(item.sub).toBe(b)
      left.push((item.entry as { offset: number }).offset)
    }
    expect(left).toEqual([3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39])
    expect(q.bytes).toBe(0)
    expect(q.events).toBe(0)
    expect(q.urgent.map((i) => i.sub)).toEqual([b])
    expect([...q.gapOwed]).toEqual([b])
    expect(q.dropped).toBe(0)
  })
})

describe('subscription hub: a completed subscription frees what it had queued (sweep 17b)', () => {
  let be: SubscriptionBackend | undefined
  let proxy: TestProxy | undefined
  afterEach(async () => {
    await proxy?.close()
    await be?.close()
    proxy = undefined
    be = undefined
  })

  async function setup(tier: 'gold' | 'silver', qos: Record<string, unknown>): Promise<{ c: RawClient; metric: (name: string, labels?: string) => Promise<number> }> {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      subscriptions: { defaultTier: tier, qos: { [tier]: { ...STALLED, ...qos } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
    })
    const p = proxy
    const metric = async (name: string, labels?: string) => metricSum(await p.metricsText(), name, labels)
    const c = await RawClient.open(`ws://127.0.0.1:${p.port}/graphql`, ['graphql-transport-ws'])
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    return { c, metric }
  }

  it('gold: the queued events of a completed subscription no longer count toward the hard cap (no 1013), and queued bytes fall at once', async () => {
    const { c, metric } = await setup('gold', { maxQueueBytes: '64kib' })
    const backend = be!
    c.send({ type: 'subscribe', id: 'noisy', payload: { query: EVENTS('purge-noisy', 'seq blob') } })
    c.send({ type: 'subscribe', id: 'quiet', payload: { query: EVENTS('purge-quiet', 'seq blob') } })
    await waitUntil(() => backend.subscribes.length >= 2, 5_000, 'both upstream subscribes')
    // The first event takes the only token; five wait (~50 kB of the 64 KiB cap).
    for (let i = 0; i < 6; i++) backend.publish('purge-noisy', { bytes: 10_000 })
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) >= 40_000, 5_000, 'five events queued')
    c.send({ type: 'complete', id: 'noisy' })
    await waitUntil(async () => (await metric('igw_subscriptions_active')) === 1, 5_000, 'the noisy subscription ended')
    // Nothing queued is for a live subscription any more.
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) < 1_000, 5_000, 'the dead events freed')
    // Three events of the live subscription (~30 kB) fit the cap once the dead ones are gone.
    for (let i = 0; i < 3; i++) backend.publish('purge-quiet', { bytes: 10_000 })
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) >= 25_000, 5_000, 'the quiet events queued')
    await sleep(200)
    expect(await metric('igw_subscription_closes_total', 'code="1013"')).toBe(0)
    expect(c.close).toBeUndefined()
    expect(await metric('igw_subscriptions_active')).toBe(1)
    // Nothing of the completed subscription was sent after its complete.
    expect(c.messages.filter((m) => m.id === 'noisy' && m.type === 'next').length).toBe(1)
    c.end()
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) === 0 && (await metric('igw_subscription_connections')) === 0, 5_000, 'everything released')
  })

  it('silver: a live subscription loses no event to make room for the queued events of a completed one', async () => {
    const { c, metric } = await setup('silver', { maxQueue: 4 })
    const backend = be!
    c.send({ type: 'subscribe', id: 'live', payload: { query: EVENTS('purge-live') } })
    c.send({ type: 'subscribe', id: 'gone', payload: { query: EVENTS('purge-gone') } })
    await waitUntil(() => backend.subscribes.length >= 2, 5_000, 'both upstream subscribes')
    // live#1 takes the token; queued: live#2, gone#1..3 (4 events: the bound).
    backend.publish('purge-live')
    await c.wait((x) => x.messages.some((m) => m.id === 'live' && m.type === 'next'))
    backend.publish('purge-live')
    // live#2 first in the queue (the oldest: what a drop takes first), then the other's three.
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) > 0, 5_000, 'live#2 queued')
    const one = await metric('igw_subscription_queued_bytes')
    for (let i = 0; i < 3; i++) backend.publish('purge-gone')
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) >= 3.5 * one, 5_000, 'four events queued')
    c.send({ type: 'complete', id: 'gone' })
    await waitUntil(async () => (await metric('igw_subscriptions_active')) === 1, 5_000, 'the completed subscription ended')
    // Two more live events: 3 queued for a live subscription, under the bound of 4.
    backend.publish('purge-live')
    backend.publish('purge-live')
    await sleep(300)
    expect(await metric('igw_qos_drops_total', 'tier="silver"')).toBe(0)
    expect(await metric('igw_replay_gaps_total', 'reason="dropped"')).toBe(0)
    c.end()
    await waitUntil(async () => (await metric('igw_subscription_queued_bytes')) === 0, 5_000, 'queue released')
  })
})
