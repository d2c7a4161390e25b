// A Redis that dies with quota calls on the wire: ioredis (maxRetriesPerRequest 0) fails them with
// its own "Reached the max retries per request limit" error. That is a lost connection
// (igw_quota_redis_errors_total{error="unavailable"}), not Redis refusing the call (error="error",
// whose text the breaker's log line carries as `redisError`, as if Redis had said it).
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { localDayNumber, quotaKeys } from '../../../config/quota-usage.ts'
import { RedisQuotaStore, type RedisFailure } from '../../../filters/quota/redis-store.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startRedis } from '../../helpers/redis.ts'

describe('a quota call whose Redis connection is lost (sweep 22g)', () => {
  it('fails as "unavailable", and the breaker log carries no Redis error text', async () => {
    const redis = await startRedis()
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, 'igwlost:', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const failures: RedisFailure[] = []
    const said: (string | undefined)[] = []
    const store = new RedisQuotaStore(
      provider,
      { budgetMs: 1000, breakerFailures: 1, breakerOpenMs: 60_000, breakerAfterMs: 0 },
      { failure: (k) => failures.push(k), breakerChanged: (open, s) => open && said.push(s), recovered: () => undefined },
    )
    const day = localDayNumber('UTC', Date.now())
    const args = [1, day, 0, 1000, 10_000_000, 100, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    try {
      expect(await store.warmUp(2_000)).toBe(true)
      expect(Array.isArray(await store.decide(quotaKeys.kind('igwlost:', 't', 'graphql'), quotaKeys.budget('igwlost:', 't'), args))).toBe(true)
      redis.pause() // the call goes out and waits on a server that answers nothing…
      const pending = store.decide(quotaKeys.kind('igwlost:', 't', 'graphql'), quotaKeys.budget('igwlost:', 't'), args)
      await new Promise((r) => setTimeout(r, 50))
      await redis.stop() // …which then dies: the connection closes with the call on it
      expect(await pending).toBe('unavailable')
      expect(failures).toEqual(['unavailable'])
      expect(said).toEqual([undefined])
    } finally {
      await provider.close()
      await redis.close()
    }
  })
})
