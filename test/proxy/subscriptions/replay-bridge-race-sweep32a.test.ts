// Sweep 32a: under continuous traffic a resumed client sometimes got a false `trimmed` gap for
// events Redis held (replay-bridge-sweep31j's seam test failed about one run in four). Two causes:
// the log's read went out as a MULTI, written at once, ahead of XADDs still queued behind the
// auto-pipeline in flight, so Redis answered without events logged before the read; and a bridge
// ended on any short page, although the ring (a few large events) may have evicted events logged
// after the read was sent, which the next read finds.
import { describe, expect, it } from 'vitest'
import { ReplayFeed } from '../../../proxy/subscriptions/replay-feed.ts'
import { readFeed, waitUntil } from './clients.ts'
import { epochRing, feedSource, fileRedis, ringEvent, withReplayLog } from './replay-log-fixture.ts'

const redis = fileRedis()

describe('the replay log reads after the writes issued before the read', () => {
  it('since() sees every event appended before it, also those queued behind an auto-pipeline in flight', async () => {
    await withReplayLog(redis.url, 'igw32a:', async (log) => {
      const payload = (o: number) => `{"data":{"n":${o}},"x":"${'y'.repeat(2_000)}"}`
      // One append goes out on its own (the auto-pipeline in flight), the next 200 queue behind it.
      log.append('order', 'e1', 1, Date.now(), payload(1))
      await new Promise((r) => setImmediate(r))
      for (let o = 2; o <= 201; o++) log.append('order', 'e1', o, Date.now(), payload(o))
      const range = await log.since('order', 'e1', 0, 1_000)
      expect(range?.exists).toBe(true)
      // Before: the MULTI overtook the queued XADDs and saw 1 of the 201.
      expect(range!.entries.map((e) => e.offset)).toEqual(Array.from({ length: 201 }, (_, i) => i + 1))
    })
  })
})

describe('a bridge reads on when the ring evicts events logged after its read was sent', () => {
  it('no trimmed gap for events Redis got after the page was asked for: they are read next, then the ring', async () => {
    await withReplayLog(redis.url, 'igw32afeed:', async (log, metrics) => {
      // 30-byte events, 100 bytes of ring: it holds the last three.
      const { ring, epoch, now } = epochRing(100)
      const logEvent = (offset: number) => {
        ring.push(ringEvent(epoch, offset, now), now)
        log.append('race', epoch, offset, now, `{"data":{"n":${offset}}}`)
      }
      for (let o = 1; o <= 10; o++) logEvent(o)
      await waitUntil(async () => (await redis.probe.xlen(log.key('race', epoch))) === 10, 5_000, 'ten in Redis')
      const src = feedSource(ring, 'race', metrics, log)
      // A client at offset 2: the ring (8..10) no longer holds 3.
      expect(ring.locate(epoch, 2, now).kind).toBe('gap')
      const feed = new ReplayFeed(src, ring.startSeq, epoch, 2, `${epoch}:2`)
      feed.bridge(log, epoch, 2, now, `${epoch}:2`)
      // The first page is asked for (it holds 3..10) ...
      expect(feed.next()).toBeNull()
      // ... and before it comes back, six more events are logged: the ring evicts 8..13.
      for (let o = 11; o <= 16; o++) logEvent(o)
      expect(ring.at(ring.startSeq)).toMatchObject({ offset: 14 })
      const got = await readFeed(feed)
      // Before: 3..10, then the ring's `trimmed` gap (11..13 missed), then 14..16.
      expect(got.filter((e) => e.kind === 'gap')).toEqual([])
      expect(got.map((e) => (e.kind === 'event' ? e.offset : e.kind))).toEqual(Array.from({ length: 14 }, (_, i) => i + 3))
    })
  })

  it('what Redis lacks although it was logged before the read (a lost write) is still announced', async () => {
    await withReplayLog(redis.url, 'igw32alost:', async (log, metrics) => {
      const { ring, epoch, now } = epochRing(100)
      for (let offset = 1; offset <= 10; offset++) {
        ring.push(ringEvent(epoch, offset, now), now)
        // 7 and 8 never reached Redis (an outage's writes); the ring holds 8..10.
        if (offset < 7) log.append('lost', epoch, offset, now, `{"data":{"n":${offset}}}`)
      }
      await waitUntil(async () => (await redis.probe.xlen(log.key('lost', epoch))) === 6, 5_000, 'six in Redis')
      const src = feedSource(ring, 'lost', metrics, log)
      const feed = new ReplayFeed(src, ring.startSeq, epoch, 2, `${epoch}:2`)
      feed.bridge(log, epoch, 2, now, `${epoch}:2`)
      const got = await readFeed(feed)
      expect(got.map((e) => (e.kind === 'event' ? e.offset : e.kind === 'gap' ? `gap:${e.gap.reason}:${e.gap.missed}` : e.kind))).toEqual([3, 4, 5, 6, 'gap:trimmed:1', 8, 9, 10])
    })
  })
})
