// The Redis replay log is bounded by count (XADD MAXLEN replay.maxEvents) and age (XTRIM MINID,
// replay.maxAgeMs) — not by the memory ring's byte bound (replay.maxBytes), which is about this
// worker's memory. The age trim took its MINID from the ring: the first event the ring still held
// that was not older than maxAgeMs. When the ring had pushed fresh events out for its byte bound,
// that was a fresh event too, so Redis lost every fresh event the ring no longer held: a restarted
// gateway (or another worker, another replica) replayed a "trimmed" gap instead of the events
// Redis was configured to keep.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ReplayRing, type LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const KEY = 'k'.repeat(48)

function ev(epoch: string, offset: number, ts: number, bytes = 10): LogEvent {
  return { kind: 'event', epoch, offset, ts, cursor: `c${offset}`, tail: 'x'.repeat(bytes), result: {}, receivedAt: 0 }
}

describe('replay ring: the age bound a copy of the log may apply (firstOffsetSince)', () => {
  it('nothing older than the cutoff was logged: no trim, even when the byte bound pushed fresh events out', () => {
    const ring = new ReplayRing(1_000, 60_000, 100)
    for (let i = 1; i <= 20; i++) ring.push(ev('e1', i, 1_000 + i, 30), 1_000 + i)
    expect(ring.size).toBeLessThan(20)
    expect(ring.firstOffsetSince('e1', 1_000 + 1 - 60_000)).toBeUndefined()
  })

  it('events older than the cutoff: the first one not older is where a copy may start', () => {
    const ring = new ReplayRing(1_000, 60_000, 1_000_000)
    for (let i = 1; i <= 10; i++) ring.push(ev('e1', i, i * 1_000), i * 1_000)
    expect(ring.firstOffsetSince('e1', 5_500)).toBe(6)
    // the ones before the cutoff evicted for age, then for bytes: the evicted ones were all older
    const aged = new ReplayRing(1_000, 3_000, 1_000_000)
    for (let i = 1; i <= 10; i++) aged.push(ev('e1', i, i * 1_000), i * 1_000)
    expect(aged.firstOffsetSince('e1', 7_000)).toBe(7)
  })

  it('evicted for bytes while still fresh, some of them now older than the cutoff: trim only what is known to be older', () => {
    const ring = new ReplayRing(1_000, 60_000, 100)
    // offsets 1..10 at ts 1..10 s, each 30 bytes: the ring keeps the last 3
    for (let i = 1; i <= 10; i++) ring.push(ev('e1', i, i * 1_000, 30), i * 1_000)
    expect(ring.at(ring.startSeq)).toMatchObject({ offset: 8 })
    // cutoff 5.5 s: offsets 1..5 are older, 6 and 7 are not (evicted, fresh), 8.. are retained
    expect(ring.firstOffsetSince('e1', 5_500)).toBe(6)
  })

  it('a slow stream of large events the byte bound keeps short: the copy is still trimmed by age as time goes by', () => {
    // one 30-byte event every 10 s, a ring of 3 such events, 60 s of age: offsets up to 13 (ts ≤ 130 s) are older than 140 s
    const ring = new ReplayRing(1_000, 60_000, 100)
    for (let i = 1; i <= 20; i++) ring.push(ev('e1', i, i * 10_000, 30), i * 10_000)
    const min = ring.firstOffsetSince('e1', 200_000 - 60_000)!
    expect(min).toBeGreaterThanOrEqual(13)
    expect(min).toBeLessThanOrEqual(14)
    // and never past an event that is not older than the cutoff
    for (let cut = 0; cut <= 200_000; cut += 2_500) {
      const m = ring.firstOffsetSince('e1', cut)
      if (m !== undefined) expect((m - 1) * 10_000).toBeLessThan(cut)
    }
  })
})

describe('subscription hub: the Redis replay log keeps maxEvents fresh events whatever the memory ring\'s byte bound', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let a: TestProxy
  let b: TestProxy
  let r: Redis

  beforeAll(async () => {
    redis = await startRedis()
    be = await startSubscriptionBackend()
    const doc = {
      redis: { url: redis.url, keyPrefix: 'igwtrim:' },
      subscriptions: { cursorKey: KEY, replay: { maxEvents: 1_000, maxAgeMs: 60_000, maxBytes: '4kib' } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }],
    }
    a = await startTestProxy(doc)
    b = await startTestProxy(doc)
    r = new Redis(redis.url, { maxRetriesPerRequest: 0 })
  })
  afterAll(async () => {
    r?.disconnect()
    await a?.close()
    await b?.close()
    await be?.close()
    await redis?.close()
  })

  it('21 fresh 1 KB events, a 4 KiB ring: Redis holds all 21, and another gateway replays every one of them from a cursor at the first', async () => {
    const q = EVENTS('big', 'seq blob')
    const c = new GqlClient(`ws://127.0.0.1:${a.port}/graphql`)
    const s = c.subscribe(q)
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'big').length === 1)
    await sleep(100)
    // three bursts over more than two seconds: the log is maintained (TTL, age trim) in between
    for (let burst = 0; burst < 3; burst++) {
      for (let i = 0; i < 7; i++) be.publish('big', { bytes: 1_000 })
      await s.received.wait((x) => x.events.length === (burst + 1) * 7)
      if (burst < 2) await sleep(1_100)
    }
    let keys: string[] = []
    await waitUntil(async () => (keys = await r.keys('igwtrim:subs:*')).length === 1, 5_000, 'the stream\'s key')
    await waitUntil(async () => (await r.xlen(keys[0]!)) >= 21, 2_000, 'all 21 events in Redis').catch(() => undefined)
    expect(await r.xlen(keys[0]!)).toBe(21)

    // Another gateway (its own stream, its own epoch) resumes a client from the first event's cursor.
    const first = s.received.events[0]!.extensions!.cursor!
    const d = new GqlClient(`ws://127.0.0.1:${b.port}/graphql`)
    const t = d.subscribe(q, { cursor: first })
    await t.received.wait((x) => x.gaps.some((g) => g.reason === 'epoch'), 5_000, 'the replay up to the epoch gap')
    expect(t.received.gaps.map((g) => g.reason)).toEqual(['epoch'])
    expect(t.received.seqs).toEqual(s.received.seqs.slice(1))
    await c.dispose()
    await d.dispose()
  })
})
