// Outage usage pushed to a Redis that answers slowly: the reconciliation call had its own 500 ms
// limit and reported a slower (but successful) call as not taken, so the units went back to the
// table and the next heartbeat pushed them again — Redis counted the outage twice (the script
// adds; it cannot tell a repeat) and the tenant was refused early for the rest of the day.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber, quotaKeys } from '../../../config/quota-usage.ts'
import { decideLocal, Verdict } from '../../../filters/quota/local-limiter.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { RedisQuotaStore } from '../../../filters/quota/redis-store.ts'
import { resolveRule } from '../../../filters/quota/rules.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

const PREFIX = 'sw23n:'
const config = validateConfig({
  routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
  tenants: { acme: {} },
  quotas: { defaults: { graphql: { limitPerDay: 1000 } } },
})

let redis: TestRedis
let provider: SharedRedis
let admin: Redis
let store: RedisQuotaStore
beforeAll(async () => {
  redis = await startRedis()
  const registry = new Registry()
  provider = new SharedRedis(redis.url, PREFIX, pino({ level: 'silent' }), {
    up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
    reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
  })
  store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
  await store.warmUp(2_000)
  admin = new Redis(redis.url)
})
afterAll(async () => {
  admin?.disconnect()
  await provider?.close()
  await redis?.close()
})

describe('reconciliation against a slow Redis (sweep 23n)', () => {
  it('a reconcile Redis runs late is not reported as failed, so the units are pushed once', async () => {
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    const t = rt.table
    const rule = resolveRule(config.quotas, 'acme', 'graphql', undefined, 'UTC', false)
    const slot = t.slotOf('acme')
    const today = localDayNumber('UTC', Date.now())
    const v = new Verdict()
    // Redis out: 7 units admitted locally, owed to Redis.
    for (let i = 0; i < 7; i++) expect(decideLocal(t, slot, rule, 1, Date.now(), today, true, 1, v).allowed).toBe(true)
    // Redis back but slow: scripts wait 1.2 s (well past the old 500 ms limit), then run.
    await admin.client('PAUSE', 1_200, 'WRITE')
    await rt.reconcile(store)
    await rt.reconcile(store) // the next heartbeat's: nothing is owed any more
    // A script on the store's connection runs after every call sent on it before.
    await provider.client().eval('return 1', 0)
    const used = await admin.hget(quotaKeys.kind(PREFIX, 'acme', 'graphql'), 'u')
    expect(Number(used)).toBe(7)
  })
})
