// A stream's replay parts without a proxy around them, for tests of how a ReplayFeed reads the
// memory ring and the Redis log: a real RedisReplayLog on a real Redis, a ring, 30-byte events.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { SharedRedis } from '../../../proxy/redis.ts'
import { HubMetrics } from '../../../proxy/subscriptions/metrics.ts'
import { RedisReplayLog } from '../../../proxy/subscriptions/redis-log.ts'
import type { FeedSource } from '../../../proxy/subscriptions/replay-feed.ts'
import { ReplayRing, type LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'
import { afterAll, beforeAll } from 'vitest'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

export const silentLogger = pino({ level: 'silent' })

/** A Redis for the calling file (started before its tests, stopped after them) and a plain client to look into it. */
export function fileRedis(): { readonly url: string; readonly probe: Redis } {
  let redis: TestRedis | undefined
  let probe: Redis | undefined
  beforeAll(async () => {
    redis = await startRedis()
    probe = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  })
  afterAll(async () => {
    probe?.disconnect()
    await redis?.close()
  })
  return {
    get url() {
      return redis!.url
    },
    get probe() {
      return probe!
    },
  }
}

/** A replay log under `prefix` on the Redis at `url`, connected before `run`, closed after it. */
export async function withReplayLog(url: string, prefix: string, run: (log: RedisReplayLog, metrics: HubMetrics) => Promise<void>, maxEvents = 10_000): Promise<void> {
  const metrics = new HubMetrics(new Registry())
  const shared = new SharedRedis(url, prefix, silentLogger, { up: metrics.redisUp, reconnects: metrics.redisReconnects })
  try {
    const log = new RedisReplayLog(shared, maxEvents, 300_000, metrics, silentLogger)
    // Connected first: a cold connection queues everything alike (no ordering to test).
    shared.client()
    await waitUntil(() => shared.ready, 5_000, 'redis ready')
    await run(log, metrics)
  } finally {
    await shared.close()
  }
}

/** A ring of `maxBytes` (1,000 events, 5 minutes) in epoch "e1", started now. */
export function epochRing(maxBytes: number): { ring: ReplayRing; epoch: string; now: number } {
  const ring = new ReplayRing(1_000, 300_000, maxBytes)
  const epoch = 'e1'
  const now = Date.now()
  ring.startEpoch(epoch, now)
  return { ring, epoch, now }
}

/** Event `offset` of `epoch` as the ring holds it: 30 bytes of tail (the ring's byte bound counts them). */
export function ringEvent(epoch: string, offset: number, ts: number): LogEvent {
  return { kind: 'event', epoch, offset, ts, cursor: `${epoch}:${offset}`, tail: 'x'.repeat(30), result: { data: { n: offset } }, receivedAt: 0 }
}

/** What a feed of stream `streamId` reads: `ring`, then `log`; cursors are "epoch:offset". */
export function feedSource(ring: ReplayRing, streamId: string, metrics: HubMetrics, log: RedisReplayLog): FeedSource {
  return { ring, streamId, maxAgeMs: 300_000, metrics, logger: silentLogger, redis: log, cursor: (e, o) => `${e}:${o}` }
}
