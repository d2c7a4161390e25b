// Sweep 24n: a replay read from Redis asked for pages of up to 512 events, but the log cut each
// page to the reading process's own replay.maxEvents. A key written under a larger bound — by the
// gateway before a restart that lowered maxEvents, or by a replica still on the old config — then
// answered a page shorter than asked, which the feed takes for the end of the log: the client got
// an `epoch` gap after the first pages, and the events Redis still held after them were never sent.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { SharedRedis } from '../../../proxy/redis.ts'
import { HubMetrics } from '../../../proxy/subscriptions/metrics.ts'
import { RedisReplayLog } from '../../../proxy/subscriptions/redis-log.ts'
import { ReplayFeed } from '../../../proxy/subscriptions/replay-feed.ts'
import { ReplayRing } from '../../../proxy/subscriptions/replay-ring.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'
import { readFeed } from './clients.ts'

const logger = pino({ level: 'silent' })
let redis: TestRedis
const shared: SharedRedis[] = []
let probe: Redis | undefined

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  probe?.disconnect()
  await Promise.all(shared.map((s) => s.close()))
  await redis?.close()
})

function replayLog(maxEvents: number, metrics: HubMetrics): RedisReplayLog {
  const s = new SharedRedis(redis.url, 'p24n:', logger, { up: metrics.redisUp, reconnects: metrics.redisReconnects })
  shared.push(s)
  return new RedisReplayLog(s, maxEvents, 300_000, metrics, logger)
}

it('replays every event a key holds, whatever the reader\'s own maxEvents', async () => {
  const total = 300
  const writer = replayLog(1_000, new HubMetrics(new Registry()))
  const now = Date.now()
  for (let offset = 1; offset <= total; offset++) writer.append('s1', 'old', offset, now, `{"data":{"n":${offset}},"extensions":{"cursor":"w${offset}"}}`)
  probe = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  await waitUntil(async () => (await probe!.xlen(writer.key('s1', 'old'))) === total, 5_000, 'the writer\'s events in Redis')

  // This process runs with replay.maxEvents 100 and its own epoch "new".
  const metrics = new HubMetrics(new Registry())
  const reader = replayLog(100, metrics)
  const ring = new ReplayRing(100, 300_000)
  ring.startEpoch('new', now)
  const feed = new ReplayFeed({ ring, streamId: 's1', maxAgeMs: 300_000, metrics, logger, cursor: (e, o) => `${e}:${o}` }, ring.endSeq, 'new', 0, 'new:0')
  feed.fromRedis(reader, { streamId: 's1', epoch: 'old', offset: 0, ts: now }, 'old:0', 'new:0')

  const got = await readFeed(feed)
  const events = got.filter((e) => e.kind === 'event')
  expect(events.map((e) => e.offset)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
  // one notice, after the last replayed event: the replay passes to this process's own epoch
  expect(got.filter((e) => e.kind === 'gap').map((e) => (e.kind === 'gap' ? e.gap : undefined))).toEqual([{ reason: 'epoch', from: `old:${total}`, to: 'new:0' }])
  expect(got[got.length - 1]!.kind).toBe('gap')
  expect((await metrics.replayEvents.get()).values.find((v) => v.labels.source === 'redis')?.value).toBe(total)
})
