// A Redis outage spanning the tenant's midnight: the units the proxy admitted on its own before
// midnight belong to that day and to the rolling budget. They were dropped at the first local
// decision of the new day (the budget in Redis never saw them), or, when Redis came back before
// any local decision of the new day, carried by the new day's first decision and charged to the
// new day's quota. Now they are kept as the earlier day's and pushed to Redis with that day:
// into its usage if Redis is still on that day, otherwise into the budget (and bucket) only.
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber, quotaKeys, usedTodayFromRedis } from '../../../config/quota-usage.ts'
import { decideLocal, mirrorRedis, takePending, Verdict } from '../../../filters/quota/local-limiter.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { RedisQuotaStore } from '../../../filters/quota/redis-store.ts'
import { resolveRule, type KindRule } from '../../../filters/quota/rules.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

const PREFIX = 'sw15m:'
const config = validateConfig({
  routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
  tenants: { acme: {}, initech: {} },
  quotas: { defaults: { graphql: { limitPerDay: 1000 }, budget: { units: 100_000, window: '1d', bucket: '1h' } } },
})

let redis: TestRedis
let provider: SharedRedis
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
})
afterAll(async () => {
  await provider?.close()
  await redis?.close()
})

/** The script's constant arguments for a rule (as the filter encodes them). */
function ruleArgs(rule: KindRule): number[] {
  const b = rule.budget!
  return [rule.perMs, rule.capacity, rule.limitPerDay, b.units, b.bucketMs, b.buckets, b.hardCap ? 1 : 0, rule.shadowMask & 7, b.thresholds.length, ...[0, 1, 2, 3].map((i) => Math.round((b.thresholds[i] ?? 0) * 1_000_000))]
}

/** What the filter does with Redis up: carry the day's outage units, decide, mirror the answer. */
async function decideViaRedis(t: ReturnType<typeof quotaRuntime>['table'], tenant: string, rule: KindRule, day: number): Promise<void> {
  const slot = t.slotOf(tenant)
  const pending = takePending(t, slot, rule.kindIndex, day)
  const r = await store.decide(quotaKeys.kind(PREFIX, tenant, 'graphql'), quotaKeys.budget(PREFIX, tenant), [1, day, pending, ...ruleArgs(rule)])
  if (!Array.isArray(r)) throw new Error(`redis: ${r}`)
  expect(r[0]).toBe(1)
  mirrorRedis(t, slot, rule, Date.now(), day, r[2]!, r[3]!, r[4]!)
}

async function budgetTotal(tenant: string): Promise<number> {
  return Number(await provider.client().hget(quotaKeys.budget(PREFIX, tenant), 'tot'))
}

describe('outage units across the tenant\'s midnight (sweep 15)', () => {
  const today = localDayNumber('UTC', Date.now())
  const yesterday = today - 1

  it('local decisions on both sides of midnight: yesterday\'s units still reach the budget, not today\'s quota', async () => {
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    const t = rt.table
    const rule = resolveRule(config.quotas, 'acme', 'graphql', undefined, 'UTC', false)
    const slot = t.slotOf('acme')
    const v = new Verdict()
    await decideViaRedis(t, 'acme', rule, yesterday) // Redis knew 1 unit of yesterday
    // Redis down before midnight: 3 admitted locally; still down after it: 2 more.
    for (let i = 0; i < 3; i++) expect(decideLocal(t, slot, rule, 1, Date.now(), yesterday, true, 1, v).allowed).toBe(true)
    for (let i = 0; i < 2; i++) expect(decideLocal(t, slot, rule, 1, Date.now(), today, true, 1, v).allowed).toBe(true)
    // Redis back: the heartbeat's reconciliation pushes what is owed.
    await rt.reconcile(store)
    expect(await budgetTotal('acme')).toBe(1 + 3 + 2)
    expect(await usedTodayFromRedis(provider.client(), PREFIX, 'acme', 'graphql', 'UTC')).toBe(2)
    await rt.reconcile(store) // nothing is pushed twice
    expect(await budgetTotal('acme')).toBe(6)
  })

  it('Redis back before the new day\'s first local decision: the first request of the day is not charged yesterday\'s units', async () => {
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    const t = rt.table
    const rule = resolveRule(config.quotas, 'initech', 'graphql', undefined, 'UTC', false)
    const slot = t.slotOf('initech')
    const v = new Verdict()
    await decideViaRedis(t, 'initech', rule, yesterday)
    for (let i = 0; i < 3; i++) expect(decideLocal(t, slot, rule, 1, Date.now(), yesterday, true, 1, v).allowed).toBe(true)
    // After midnight Redis answers again; a request comes before the next heartbeat.
    await decideViaRedis(t, 'initech', rule, today)
    expect(await usedTodayFromRedis(provider.client(), PREFIX, 'initech', 'graphql', 'UTC')).toBe(1)
    await rt.reconcile(store)
    expect(await usedTodayFromRedis(provider.client(), PREFIX, 'initech', 'graphql', 'UTC')).toBe(1)
    expect(await budgetTotal('initech')).toBe(1 + 3 + 1)
  })
})

describe('outage units reach the budget window they were used in (sweep 15)', () => {
  it('an outage longer than the window: the reconciled units count from now, not from the last decision before it', async () => {
    const day = localDayNumber('UTC', Date.now())
    // no bucket, no daily limit; budget 1000 units over 2 × 500 ms
    const args = (cost: number) => [cost, day, 0, 0, 0, -1, 1000, 500, 2, 0, 0, 1, 1_000_000, 0, 0, 0]
    const kindKey = quotaKeys.kind(PREFIX, 'globex', 'graphql')
    const budgetKey = quotaKeys.budget(PREFIX, 'globex')
    const first = await store.decide(kindKey, budgetKey, args(1))
    expect(Array.isArray(first) && first[4]).toBe(1)
    // Redis unreachable for longer than the window; meanwhile 5 units were admitted locally.
    await new Promise((r) => setTimeout(r, 1_200))
    expect(await store.reconcile('globex', 'graphql', 5, day)).toBe(true)
    // The next decision (well within a window of the reconciliation) still sees them.
    const next = await store.decide(kindKey, budgetKey, args(0))
    if (!Array.isArray(next)) throw new Error(`redis: ${next}`)
    expect(next[4]).toBe(5)
  })
})
