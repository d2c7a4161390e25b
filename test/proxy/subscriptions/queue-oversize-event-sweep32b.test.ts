// A tier's maxQueueBytes bounds what waits for a connection, not how large one message may be
// (the route's websocket.maxMessageBytes does that). An event larger than the bound that met an
// empty queue behind a throttled (or congested) socket was dropped at once: bronze and silver
// clients that read got a `dropped` gap instead of it, live or replayed, and a gold connection
// was closed with 1013 (its replay after the reconnect could be again). An empty queue now
// always takes one item; the bound still holds for anything queued behind it. Real proxy
// (worker thread), real graphql-yoga backend, graphql-ws clients.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

// One message every 500 ms after the first: the second event always waits in the queue.
const THROTTLED = { ratePerSec: 2, burst: 1, maxQueue: 10, maxQueueBytes: 4096 }
const BIG = 20_000

/** A backend and a proxy whose connections are all of `tier`, throttled to THROTTLED. */
async function startThrottled(tier: 'bronze' | 'gold'): Promise<{ be: SubscriptionBackend; proxy: TestProxy }> {
  const be = await startSubscriptionBackend()
  const proxy = await startTestProxy({
    log: { level: 'info' },
    subscriptions: { defaultTier: tier, qos: { [tier]: THROTTLED } },
    routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
  })
  return { be, proxy }
}

async function subscribed(be: SubscriptionBackend, channel: string): Promise<void> {
  await waitUntil(() => be.subscribes.some((s) => s.channel === channel), 5_000, `upstream subscribe to ${channel}`)
}

const blobOf = (p: { data?: { events?: { blob?: string | null } } }) => p.data?.events?.blob?.length ?? 0

describe('bronze: one event over maxQueueBytes with nothing queued', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => void ({ be, proxy } = await startThrottled('bronze')))
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('is delivered live and on replay, with no dropped gap and no drop counted', async () => {
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const a = new GqlClient(url)
    const b = new GqlClient(url)
    try {
      const live = a.subscribe(EVENTS('oversize', 'seq blob'))
      await subscribed(be, 'oversize')
      const s1 = be.publish('oversize')
      await live.received.wait((r) => r.events.length === 1, 5_000, 'the first event')
      // Its bucket refills (500 ms): the next small one goes straight out, the big one waits alone.
      await new Promise((r) => setTimeout(r, 700))
      const s2 = be.publish('oversize')
      const s3 = be.publish('oversize', { bytes: BIG })
      await live.received.wait((r) => r.events.length + r.gaps.length >= 3, 5_000, 'the big event (or its gap)')
      expect(live.received.gaps).toEqual([])
      expect(live.received.seqs).toEqual([s1, s2, s3])
      expect(blobOf(live.received.events[2]!)).toBe(BIG)

      // A replay from s1: s2 takes the fresh bucket's token, the big s3 is read into the empty queue.
      const cursor = live.received.events[0]!.extensions!.cursor!
      const replay = b.subscribe(EVENTS('oversize', 'seq blob'), { cursor })
      await replay.received.wait((r) => r.events.length + r.gaps.length >= 2, 5_000, 'the replay')
      expect(replay.received.gaps).toEqual([])
      expect(replay.received.seqs).toEqual([s2, s3])
      expect(blobOf(replay.received.events[1]!)).toBe(BIG)

      const text = await proxy.metricsText()
      expect(metricSum(text, 'igw_qos_drops_total', 'tier="bronze",kind="event"')).toBe(0)
      expect(metricSum(text, 'igw_replay_gaps_total', 'reason="dropped"')).toBe(0)
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscription_queued_bytes') === 0, 5_000, 'queue empty')
      expect(a.closed).toBeUndefined()
      expect(b.closed).toBeUndefined()
    } finally {
      await a.dispose()
      await b.dispose()
    }
  })
})

describe('gold: one event over maxQueueBytes with nothing queued', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => void ({ be, proxy } = await startThrottled('gold')))
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('is delivered, not a 1013; the hard cap still closes a connection over it with something queued', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    try {
      const sub = c.subscribe(EVENTS('gold-oversize', 'seq blob'))
      await subscribed(be, 'gold-oversize')
      const s1 = be.publish('gold-oversize')
      const s2 = be.publish('gold-oversize', { bytes: BIG })
      await waitUntil(() => sub.received.events.length >= 2 || c.closed !== undefined, 5_000, 'the big event (or a close)')
      expect(c.closed).toBeUndefined()
      expect(sub.received.seqs).toEqual([s1, s2])
      expect(blobOf(sub.received.events[1]!)).toBe(BIG)
      expect(metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="1013"')).toBe(0)
      expect(proxy.logs.find('gold connection over its delivery queue cap: closing with 1013')).toEqual([])

      // At most one token (burst 1): of three big ones, one waits alone and the next goes over the cap.
      for (let i = 0; i < 3; i++) be.publish('gold-oversize', { bytes: BIG })
      await waitUntil(() => c.closed !== undefined, 5_000, 'the 1013 close')
      expect(c.closed!.code).toBe(1013)
      expect(metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="1013"')).toBe(1)
      await waitUntil(() => proxy.logs.find('gold connection over its delivery queue cap: closing with 1013').length === 1, 5_000, 'the 1013 log line')
    } finally {
      await c.dispose()
    }
  })
})
