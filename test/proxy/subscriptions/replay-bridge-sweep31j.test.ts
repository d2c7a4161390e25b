// Sweep 31j: the memory ring is bounded by bytes too (replay.maxBytes), the Redis log only by count
// and age ("Redis keeps up to maxEvents events younger than maxAgeMs, whatever the memory ring's
// maxBytes"). Another worker or replica replayed a client's missed events from Redis, but the very
// gateway that logged them answered a `trimmed` gap as soon as its ring had pushed them out for
// bytes — and so did a replay that fell behind the ring, although Redis still held every event.
// What the ring evicted is now read back from Redis until the ring holds the rest; only what
// neither holds is announced.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { QueuedEntry } from '../../../proxy/subscriptions/delivery-queue.ts'
import { ReplayFeed } from '../../../proxy/subscriptions/replay-feed.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, RawClient, readFeed, waitUntil, type Received } from './clients.ts'
import { epochRing, feedSource, fileRedis, ringEvent, withReplayLog } from './replay-log-fixture.ts'

const KEY = 'j'.repeat(48)
const shape = (r: Received) => r.payloads.map((p) => (p.extensions?.gap ? `gap:${p.extensions.gap.reason}` : p.data!.events!.seq))

const redis = fileRedis()

describe('a gateway resumes from its own Redis log what its memory ring pushed out for bytes', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const clients: GqlClient[] = []
  const client = () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      redis: { url: redis.url, keyPrefix: 'igw31j:' },
      // A 4 KiB ring holds three of the 1 KB events; Redis keeps up to 1,000.
      subscriptions: {
        cursorKey: KEY,
        replay: { maxEvents: 1_000, maxAgeMs: 60_000, maxBytes: '4kib' },
        topics: { big: { query: 'subscription($channel: String!) { events(channel: $channel) { seq blob } }', clientVariables: ['channel'] } },
      },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }],
    })
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await proxy?.close()
    await be?.close()
  })

  /** Publish `n` 1 KB events on `channel` and wait until they are all in the stream's Redis key. */
  const publish = async (channel: string, n: number, key: () => Promise<string>) => {
    for (let i = 0; i < n; i++) be.publish(channel, { bytes: 1_000 })
    const k = await key()
    await waitUntil(async () => (await redis.probe.xlen(k)) >= n, 5_000, `${n} events in Redis`)
    return k
  }
  const streamKey = async (): Promise<string> => {
    let keys: string[] = []
    await waitUntil(async () => (keys = await redis.probe.keys('igw31j:subs:*')).length > 0, 5_000, 'a stream key')
    return keys[keys.length - 1]!
  }

  it('a client resuming from an old cursor gets every event, in order, with no gap notice', async () => {
    const q = EVENTS('bridge', 'seq blob')
    const live = client().subscribe(q)
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'bridge'), 5_000, 'the upstream subscribe')
    await sleep(50)
    const key = await publish('bridge', 10, streamKey)
    await live.received.wait((r) => r.events.length === 10)
    const before = await proxy.metricsText()

    const back = client().subscribe(q, { cursor: live.received.events[0]!.extensions!.cursor! })
    await back.received.wait((r) => r.events.length >= 9, 5_000, 'the nine events after the cursor')
    be.publish('bridge', { bytes: 1_000 })
    await back.received.wait((r) => r.events.length === 10)
    // Before: a `trimmed` gap (missed 6), then 8, 9, 10 — Redis held 2..7 all along.
    expect(shape(back.received)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((n) => live.received.seqs[0]! - 1 + n))
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_replay_events_total', 'source="redis"') - metricSum(before, 'igw_replay_events_total', 'source="redis"')).toBeGreaterThanOrEqual(6)
    expect(metricSum(after, 'igw_replay_gaps_total') - metricSum(before, 'igw_replay_gaps_total')).toBe(0)
    expect(metricSum(after, 'igw_replay_requests_total', 'result="resumed"') - metricSum(before, 'igw_replay_requests_total', 'result="resumed"')).toBe(1)

    // What Redis no longer holds either is still announced, with the count, as before.
    await redis.probe.del(key)
    const lost = client().subscribe(q, { cursor: live.received.events[0]!.extensions!.cursor! })
    await lost.received.wait((r) => r.gaps.length === 1 && r.events.length >= 1, 5_000, 'the gap and what the ring holds')
    expect(lost.received.gaps[0]).toMatchObject({ reason: 'trimmed' })
    const firstAfter = lost.received.seqs[0]!
    expect(lost.received.gaps[0]!.missed).toBe(firstAfter - live.received.seqs[0]! - 1)
    await live.received.wait((r) => r.events.length === 11)
    await lost.received.wait((r) => r.seqs.at(-1) === live.received.seqs.at(-1), 5_000, 'the rest the ring holds')
    expect(lost.received.seqs).toEqual(live.received.seqs.filter((s) => s >= firstAfter))
  })

  it('under continuous traffic: the seam from Redis to the ring and on to live events has no hole and no duplicate', async () => {
    const q = EVENTS('seam', 'seq blob')
    const live = client().subscribe(q)
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'seam'), 5_000, 'the upstream subscribe')
    await sleep(50)
    let published = 0
    const pump = setInterval(() => {
      if (published < 300) {
        be.publish('seam', { bytes: 1_000 })
        published++
      }
    }, 2)
    try {
      await live.received.wait((r) => r.events.length >= 60, 10_000, 'sixty live events')
      // Resumed from the first event, far behind a ring of three, while events keep coming.
      const back = client().subscribe(q, { cursor: live.received.events[0]!.extensions!.cursor! })
      await waitUntil(() => published === 300, 10_000, 'all published')
      await live.received.wait((r) => r.events.length === 300, 10_000, 'every live event')
      await back.received.wait((r) => r.events.length >= 299, 10_000, 'the resumed client to catch up')
      expect(back.received.gaps).toEqual([])
      expect(back.received.seqs).toEqual(live.received.seqs.slice(1))
    } finally {
      clearInterval(pump)
    }
  })

  it('the topic protocol\'s replay re-sends from a cursor its own ring evicted', async () => {
    const t = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [])
    try {
      t.send({ op: 'subscribe', id: 's', topic: 'big', variables: { channel: 'topic-bridge' } })
      await t.wait((x) => x.messages.some((m) => m.op === 'subscribed'))
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'topic-bridge'), 5_000, 'the upstream subscribe')
      const keys = new Set(await redis.probe.keys('igw31j:subs:*'))
      await publish('topic-bridge', 8, async () => {
        let k: string | undefined
        await waitUntil(async () => (k = (await redis.probe.keys('igw31j:subs:*')).find((x) => !keys.has(x))) !== undefined, 5_000, 'the topic stream key')
        return k!
      })
      const events = () => t.of((m) => m.op === 'event' && m.id === 's')
      await t.wait((x) => events().length === 8)
      const firstCursor = (events()[0]!.payload as { extensions: { cursor: string } }).extensions.cursor
      const seqs = events().map((m) => (m.payload as { data: { events: { seq: number } } }).data.events.seq)
      const mark = t.messages.length
      t.send({ op: 'replay', id: 's', cursor: firstCursor })
      await t.wait((x) => x.messages.slice(mark).filter((m) => m.op === 'event').length === 7, 5_000, 'the seven events after the cursor')
      const replayed = t.messages.slice(mark).filter((m) => m.op === 'event' || m.op === 'gap')
      expect(replayed.map((m) => (m.op === 'gap' ? 'gap' : (m.payload as { data: { events: { seq: number } } }).data.events.seq))).toEqual(seqs.slice(1))
    } finally {
      t.end()
    }
  })
})

describe('a replay that falls behind the ring continues from Redis', () => {
  it('the ring evicts ahead of a slow reader: the reader gets every event from Redis, then the ring, no gap', async () => {
    await withReplayLog(redis.url, 'igw31jfeed:', async (log, metrics) => {
      // 30-byte events, 100 bytes of ring: it holds the last three.
      const { ring, epoch, now } = epochRing(100)
      const logEvent = (offset: number) => {
        const payload = `{"data":{"n":${offset}},"extensions":{"cursor":"${epoch}:${offset}"}}`
        ring.push(ringEvent(epoch, offset, now), now)
        log.append('s31j', epoch, offset, now, payload)
      }
      for (let o = 1; o <= 10; o++) logEvent(o)
      const src = feedSource(ring, 's31j', metrics, log)
      const at = ring.locate(epoch, 7, now)
      expect(at.kind).toBe('ok')
      const feed = new ReplayFeed(src, (at as { seq: number }).seq, epoch, 7, `${epoch}:7`)

      const got: QueuedEntry[] = []
      // The reader takes one event, then stops while ten more are logged: the ring pushes out 9..17.
      got.push(feed.next() as QueuedEntry)
      for (let o = 11; o <= 20; o++) logEvent(o)
      await waitUntil(async () => (await redis.probe.xlen(log.key('s31j', epoch))) === 20, 5_000, 'all twenty in Redis')
      expect(ring.at(ring.startSeq)).toMatchObject({ offset: 18 })
      got.push(...(await readFeed(feed)))
      expect(got.filter((e) => e.kind === 'gap')).toEqual([])
      expect(got.map((e) => (e.kind === 'event' ? e.offset : e.kind))).toEqual(Array.from({ length: 13 }, (_, i) => i + 8))
    }, 1_000)
  })

  it('writes Redis lost, in a range the ring still holds: the ring fills them, no gap; outside it, the hole is announced', async () => {
    await withReplayLog(redis.url, 'igw31jhole:', async (log, metrics) => {
      // 30-byte events, 120 bytes of ring: it holds the last four (17..20).
      const { ring, epoch, now } = epochRing(120)
      for (let offset = 1; offset <= 20; offset++) {
        ring.push(ringEvent(epoch, offset, now), now)
        // 17 and 18 never reached Redis (an outage's writes), nor did 3.
        if (offset !== 3 && offset !== 17 && offset !== 18) log.append('hole', epoch, offset, now, `{"data":{"n":${offset}}}`)
      }
      await waitUntil(async () => (await redis.probe.xlen(log.key('hole', epoch))) === 17, 5_000, 'seventeen in Redis')
      const src = feedSource(ring, 'hole', metrics, log)
      expect(ring.locate(epoch, 1, now).kind).toBe('gap')
      const feed = new ReplayFeed(src, ring.startSeq, epoch, 1, `${epoch}:1`)
      feed.bridge(log, epoch, 1, now, `${epoch}:1`)
      const got = await readFeed(feed)
      expect(got.map((e) => (e.kind === 'event' ? e.offset : e.kind === 'gap' ? `gap:${e.gap.reason}:${e.gap.missed}` : e.kind))).toEqual([
        2,
        'gap:trimmed:1',
        ...Array.from({ length: 17 }, (_, i) => i + 4),
      ])
    }, 1_000)
  })
})
