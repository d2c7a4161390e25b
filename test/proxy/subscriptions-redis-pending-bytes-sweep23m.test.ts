// Events logged while the replay log's Redis is away wait in a queue bounded by bytes as well as
// by count: large events during an outage no longer pile up until the worker runs out of memory.
// The oldest go first (counted as pending_overflow); the newest reach Redis once it is back.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { SharedRedis } from '../../proxy/redis.ts'
import { HubMetrics } from '../../proxy/subscriptions/metrics.ts'
import { RedisReplayLog } from '../../proxy/subscriptions/redis-log.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

let redis: TestRedis
let shared: SharedRedis | undefined
let probe: Redis | undefined

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  probe?.disconnect()
  await shared?.close()
  await redis?.close()
})

it('parks at most 64 MiB of event text while Redis is down, dropping the oldest', async () => {
  await redis.stop()
  const registry = new Registry()
  const metrics = new HubMetrics(registry)
  const logger = pino({ level: 'silent' })
  shared = new SharedRedis(redis.url, 't:', logger, { up: metrics.redisUp, reconnects: metrics.redisReconnects })
  const log = new RedisReplayLog(shared, 1_000, 300_000, metrics, logger)
  // 64 MiB parked per worker: 16 events of 4 MiB.
  const size = 4 * 1024 * 1024
  const fit = 16
  const total = fit + 4
  const body = 'x'.repeat(size - 2)
  for (let offset = 1; offset <= total; offset++) log.append('s1', 'e1', offset, Date.now(), `"${body}"`)
  const overflow = async () => (await registry.getSingleMetric('igw_subscription_redis_errors_total')!.get()).values.find((v) => v.labels.op === 'pending_overflow')?.value ?? 0
  expect(await overflow()).toBe(total - fit)

  // Back: what was parked — the newest — is written in order.
  await redis.start()
  probe = new Redis(redis.url, { lazyConnect: false, maxRetriesPerRequest: 1 })
  const key = log.key('s1', 'e1')
  await waitUntil(async () => (await probe!.xlen(key)) === fit, 10_000, 'parked events written')
  const ids = (await probe.xrange(key, '-', '+')).map(([id]) => id)
  expect(ids[0]).toBe(`${total - fit + 1}-0`)
  expect(ids[ids.length - 1]).toBe(`${total}-0`)
})
