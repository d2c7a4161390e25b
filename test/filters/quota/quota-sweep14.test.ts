// Robustness sweep 14 of the quota filter, through the real proxy (worker threads, shared memory),
// a real backend and, for the decision script, a real redis-server:
// - tier multipliers (and small written numbers) must never turn a limit into "no limit" (a
//   rate that rounded to no refill was no bucket at all) or into "nothing ever" (a bucket
//   smaller than one unit refused every request forever);
// - a request several rules refuse at once is answered with the one that frees up last: the
//   crossing request that empties the bucket and the day's quota together was told
//   RATE_LIMITED, Retry-After: 1, and a client honouring it came back to QUOTA_EXCEEDED;
// - local-share during a Redis outage: a refill divided among the live proxies that rounded to
//   nothing meant no refill for the whole outage and "Retry-After: Infinity".
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { TenantCalendar } from '../../../filters/quota/calendar.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { registerLivePeers, startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'
import { parseList } from './structured-fields.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })

type Reply = { status: number; code?: string; retry?: number; ratelimit?: string; extensions?: Record<string, unknown> }

async function gql(url: string, tenant: string): Promise<Reply> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: QUERY })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  const ext = (JSON.parse(text) as { errors: { extensions: Record<string, unknown> }[] }).errors[0]!.extensions
  return { status: res.statusCode, code: ext.code as string, retry: Number(res.headers['retry-after']), ratelimit: res.headers['ratelimit'] as string | undefined, extensions: ext }
}

async function statuses(url: string, tenant: string, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push((await gql(url, tenant)).status)
  return out
}

/** A zone whose midnight is more than an hour away, so "until midnight" is clearly the longest wait. */
function zoneFarFromMidnight(): { zone: string; secondsLeft: number } {
  for (const zone of ['UTC', 'Pacific/Kiritimati', 'America/New_York', 'Asia/Kolkata']) {
    const ms = new TenantCalendar(zone).msToEndOfDay(Date.now())
    if (ms > 3_600_000) return { zone, secondsLeft: Math.ceil(ms / 1000) }
  }
  throw new Error('no zone more than an hour from midnight (cannot happen: they are hours apart)')
}

let backend: DemoBackend
const proxies: TestProxy[] = []
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  for (const p of proxies) await p.close()
  await backend?.close()
})

async function proxyWith(doc: Omit<GatewayConfigInput, 'routes'>): Promise<TestProxy> {
  const p = await startTestProxy({ workers: 2, routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }], ...doc })
  proxies.push(p)
  return p
}

describe('tier multipliers never lift or wedge a limit', () => {
  it('a bronze multiplier on an inherited rate of 0.001/s still limits bronze (it rounded to no refill: no bucket, unlimited)', async () => {
    const p = await proxyWith({
      tenants: { gold1: { tier: 'gold' }, bronze1: { tier: 'bronze' }, own: {} },
      quotas: {
        defaults: { graphql: { rate: 0.001, burst: 2 } },
        tiers: { gold: 2, silver: 1, bronze: 0.25 },
        // a rate written below the bucket's finest step (1/1000 unit/s) is enforced at that step
        tenants: { own: { graphql: { rate: 0.0001, burst: 2 } } },
      },
    })
    expect(await statuses(p.url, 'gold1', 5)).toEqual([200, 200, 200, 200, 429]) // burst 2 × 2
    // bronze: rate 0.00025/s and burst 0.5, enforced as 0.001/s and a bucket of one unit
    expect(await statuses(p.url, 'bronze1', 4)).toEqual([200, 429, 429, 429])
    const refused = await gql(p.url, 'bronze1')
    expect(refused.code).toBe('RATE_LIMITED')
    expect(refused.retry).toBeGreaterThan(100) // about 1000 s for one unit at 0.001/s
    expect(refused.retry).toBeLessThanOrEqual(1000)
    expect(await statuses(p.url, 'own', 4)).toEqual([200, 200, 429, 429])
    // what the headers advertise is what is enforced
    const bronzeHead = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'bronze1' }, body: QUERY })
    await bronzeHead.body.dump()
    const policy = parseList(bronzeHead.headers['ratelimit-policy'] as string)
    expect(policy.map((x) => [x.value, x.params.get('q'), x.params.get('w')])).toEqual([['rate', 1, 1000]])
  })

  it('a multiplier under 1 on an inherited burst of 1 still admits a request (the bucket could not hold one unit: every request refused forever)', async () => {
    const p = await proxyWith({
      tenants: { b: { tier: 'bronze' }, s: { tier: 'silver' } },
      quotas: { defaults: { graphql: { rate: 10, burst: 1 } } },
    })
    expect((await gql(p.url, 's')).status).toBe(200)
    const first = await gql(p.url, 'b')
    expect(first).toEqual({ status: 200 })
  })
})

describe('a request several rules refuse is told about the one that frees up last', () => {
  const check = async (p: TestProxy, secondsLeft: number) => {
    // bucket of 3 at 1/s, 3 a day: the third request empties both at once
    expect(await statuses(p.url, 'acme', 3)).toEqual([200, 200, 200])
    const r = await gql(p.url, 'acme')
    expect(r.status).toBe(429)
    expect(r.code).toBe('QUOTA_EXCEEDED') // was RATE_LIMITED with Retry-After: 1
    expect(r.extensions).toMatchObject({ policy: 'daily', limit: 3, remaining: 0 })
    expect(r.retry).toBeGreaterThan(secondsLeft - 120)
    expect(r.retry).toBeLessThanOrEqual(secondsLeft)
    expect(r.extensions!.retryAfterSeconds).toBe(r.retry)
    expect(parseList(r.ratelimit!).map((x) => [x.value, x.params.get('t')])).toEqual([['daily', r.retry]])
    // the hard-capped budget and the bucket empty together: the budget's wait, not the bucket's 1 s
    expect(await statuses(p.url, 'capped', 2)).toEqual([200, 200])
    const b = await gql(p.url, 'capped')
    expect(b.code).toBe('BUDGET_EXHAUSTED')
    expect(b.retry).toBeGreaterThan(60) // the first bucket (10 min) leaves a 1 h window
  }
  const quotas = (zone: string) => ({
    tenants: { acme: { timezone: zone }, capped: {} },
    quotas: {
      tenants: {
        acme: { graphql: { rate: 1, burst: 3, limitPerDay: 3 } },
        capped: { graphql: { rate: 1, burst: 2 }, budget: { units: 2, window: '1h', bucket: '10m', hardCap: true } },
      },
    },
  })

  it('local decisions (shared memory): the day, not the empty bucket', async () => {
    const { zone, secondsLeft } = zoneFarFromMidnight()
    const p = await proxyWith(quotas(zone))
    await check(p, secondsLeft)
  })

  describe('Redis decisions (the Lua script)', () => {
    let redis: TestRedis
    beforeAll(async () => {
      redis = await startRedis()
    })
    afterAll(async () => {
      await redis?.close()
    })
    it('the day, not the empty bucket', async () => {
      const { zone, secondsLeft } = zoneFarFromMidnight()
      const p = await proxyWith({ ...quotas(zone), redis: { url: redis.url, keyPrefix: 'sweep14:' }, quotas: { ...quotas(zone).quotas, redis: { budgetMs: 1000, onOutage: 'fail-closed' } } })
      await check(p, secondsLeft)
    })
  })
})

describe('local-share during a Redis outage', () => {
  let redis: TestRedis
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.close()
  })

  it("a proxy's share of a slow refill is still a refill: Retry-After is a number of seconds, not Infinity", async () => {
    const prefix = 'sweep14share:'
    // Two more proxies are live.
    await registerLivePeers(redis.url, prefix, 'peer-a', 'peer-b')
    const p = await proxyWith({
      redis: { url: redis.url, keyPrefix: prefix },
      tenants: { acme: {} },
      // 0.002 units/s shared by 3 proxies: 2/3 of a micro-unit per ms, which rounded down to 0
      quotas: { redis: { onOutage: 'local-share', budgetMs: 1000, heartbeatMs: 60_000 }, tenants: { acme: { graphql: { rate: 0.002, burst: 3 } } } },
    })
    await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_live_proxies') === 3, 10_000, 'three live proxies')
    await redis.stop()
    // this proxy's share of the bucket: one unit
    expect((await gql(p.url, 'acme')).status).toBe(200)
    const r = await gql(p.url, 'acme')
    expect(r.status).toBe(429)
    expect(r.code).toBe('RATE_LIMITED')
    expect(Number.isInteger(r.retry)).toBe(true) // was the header "Infinity" (and null in the extensions)
    expect(r.retry).toBeGreaterThan(0)
    expect(r.retry).toBeLessThanOrEqual(1000) // one unit at 1/1000 unit/s
    expect(r.extensions!.retryAfterSeconds).toBe(r.retry)
    expect(parseList(r.ratelimit!).map((x) => [x.value, x.params.get('t')])).toEqual([['rate', r.retry]])
    expect(metricSum(await p.metricsText(), 'igw_quota_redis_fallbacks_total', 'policy="local-share"')).toBeGreaterThanOrEqual(2)
  })
})
