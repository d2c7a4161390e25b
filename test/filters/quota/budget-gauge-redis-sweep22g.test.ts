// igw_budget_used_ratio with Redis is Redis's figure, as igw_quota_used_today is: not the total
// this proxy's own last decision for the tenant saw (0 for a tenant the other proxies serve, and
// never falling as usage leaves the window, so `max by (tenant)` showed a month-old spend).
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { quotaKeys } from '../../../config/quota-usage.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

const HOUR = 3_600_000
const BUCKETS = 720
const KEY = quotaKeys.budget('igw:', 'acme')

let backend: DemoBackend
let redis: TestRedis
let client: Redis
let p: TestProxy
beforeAll(async () => {
  backend = await startDemoBackend()
  redis = await startRedis()
  client = new Redis(redis.url, { lazyConnect: true })
  await client.connect()
  p = await startTestProxy({
    redis: { url: redis.url },
    tenants: { acme: {} },
    // A generous Redis budget: at the default 5 ms a loaded CI host times the decide out, the
    // request is admitted on the local limiter, and "this proxy's last decision" becomes 0.01.
    quotas: { redis: { budgetMs: 1000 }, tenants: { acme: { budget: { units: 100, window: '30d', bucket: '1h' } } } },
    routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
  })
})
afterAll(async () => {
  await p?.close()
  client?.disconnect()
  await redis?.close()
  await backend?.close()
})

async function ratio(): Promise<number> {
  return metricSum(await (await fetch(`${p.adminUrl}/metrics`)).text(), 'igw_budget_used_ratio', 'tenant="acme"')
}

/** The current hour bucket on Redis's clock. */
async function currentBucket(): Promise<number> {
  const [s] = await client.time()
  return Math.floor((Number(s) * 1000) / HOUR)
}

describe('igw_budget_used_ratio with Redis (sweep 22g)', () => {
  it('shows the units other proxies spent, and falls as they leave the window', async () => {
    // A retry starts from a clean key (the last step leaves a string behind).
    await client.del(KEY)
    // Another proxy's decisions: 60 units in this hour.
    let cur = await currentBucket()
    await client.hset(KEY, { h: cur, tot: 60, bm: HOUR, n: BUCKETS, [`b${cur % BUCKETS}`]: 60 })
    expect(await ratio()).toBeCloseTo(0.6, 6) // was 0: this proxy had not served acme

    const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ hello }' }) })
    await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(await ratio()).toBeCloseTo(0.61, 6)

    // A whole window later (the ring's newest bucket 720 h old): nothing of it counts any more.
    cur = await currentBucket()
    await client.hset(KEY, 'h', cur - BUCKETS)
    expect(await ratio()).toBe(0) // was 0.61, this proxy's last decision's figure, for good

    // The ring's last decision an hour ago: its oldest bucket (720 h before now) has left since.
    cur = await currentBucket()
    await client.del(KEY)
    await client.hset(KEY, { h: cur - 1, tot: 70, bm: HOUR, n: BUCKETS, [`b${(cur - 1) % BUCKETS}`]: 30, [`b${cur % BUCKETS}`]: 40 })
    expect(await ratio()).toBeCloseTo(0.3, 6)

    // A key Redis refuses (another tool's string): the figure of this proxy's last decision.
    await client.del(KEY)
    await client.set(KEY, 'not a hash')
    expect(await ratio()).toBeCloseTo(0.61, 6)
  })
})
