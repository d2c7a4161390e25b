// A request whose cost can never fit — over the bucket's burst, the whole day's quota or a
// hard-capped budget — is refused for good: 400 BAD_REQUEST without Retry-After or a RateLimit
// reset (a 429 with Retry-After had Apollo's RetryLink and job runners retry it forever), a
// message that says so, and counted as reason "too_expensive" apart from ordinary rate limiting.
// Real proxy (worker threads, shared memory), real redis-server, real HTTP client.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

type Reply = { status: number; headers: Record<string, string | string[] | undefined>; json: { data?: unknown; errors?: { message: string; extensions: Record<string, unknown> }[] } }

async function gql(url: string, tenant: string, query = '{ hello }'): Promise<Reply> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query }) })
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(await res.body.text()) as Reply['json'] }
}

/** 10^18 estimated units (charged as 10^9): far beyond any limit below. */
const ENORMOUS = '{ items(first: 1000000000) { more(first: 1000000000) { id } } }'

let backend: DemoBackend
let redis: TestRedis
beforeAll(async () => {
  backend = await startDemoBackend()
  redis = await startRedis()
})
afterAll(async () => {
  await backend?.close()
  await redis?.close()
})

const TENANTS = { burst: {}, day: {}, cap: {}, off: {} }
const QUOTAS = {
  defaults: { budget: { units: 1_000_000_000_000 } },
  tenants: {
    burst: { graphql: { rate: 0.001, burst: 2 } },
    day: { graphql: { limitPerDay: 1000 } },
    cap: { budget: { units: 1000, hardCap: true, thresholds: [0.5, 1] } },
    // 0 switches the kind off for the tenant: a used-up day, not a request too large for it.
    off: { graphql: { limitPerDay: 0 } },
  },
}
function routes() {
  return [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never
}

async function expectTooExpensive(url: string, tenant: string, policy: string, limit: number, what: RegExp): Promise<void> {
  const r = await gql(url, tenant, ENORMOUS)
  expect(r.status).toBe(400)
  expect(r.headers['retry-after']).toBeUndefined()
  expect(r.headers.ratelimit).toBeUndefined()
  expect(r.headers['ratelimit-policy']).toBeDefined()
  const e = r.json.errors![0]!
  expect(e.extensions).toMatchObject({ code: 'BAD_REQUEST', kind: 'graphql', reason: 'too_expensive', policy, limit, cost: 1_000_000_000 })
  expect(e.extensions.retryAfterSeconds).toBeUndefined()
  expect(e.message).toMatch(what)
  expect(e.message).toMatch(/can never be admitted/)
}

describe('a request that can never fit', () => {
  it('is refused for good (400, no Retry-After / RateLimit reset), counted as too_expensive, and spends and fires nothing (local)', async () => {
    const p = await startTestProxy({ tenants: TENANTS, quotas: QUOTAS, routes: routes() })
    try {
      await expectTooExpensive(p.url, 'burst', 'rate', 2, /exceeds the graphql burst of 2 units/)
      await expectTooExpensive(p.url, 'day', 'daily', 1000, /exceeds the daily graphql quota of 1000 units/)
      await expectTooExpensive(p.url, 'cap', 'budget', 1000, /exceeds the budget of 1000 units per 30 d/)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="too_expensive"')).toBe(3)
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="rate"')).toBe(0)
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="daily"')).toBe(0)
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="budget"')).toBe(0)
      // One absurd request is not the tenant's budget running out: no 100 % event (usedUnits 0).
      expect(metricSum(text, 'igw_quota_events_total')).toBe(0)
      // Nothing was spent: the whole burst and the whole day are still there.
      const ok = await gql(p.url, 'burst')
      expect(ok.status).toBe(200)
      expect(String(ok.headers.ratelimit)).toMatch(/^"rate";r=1;t=1000(?:$|, )/)
      const d = await gql(p.url, 'day')
      expect(String(d.headers.ratelimit)).toMatch(/^"daily";r=999;t=\d+(?:$|, )/)
      // An ordinary refusal (the bucket is empty for a request that fits it) is still a 429 to retry.
      await gql(p.url, 'burst')
      const limited = await gql(p.url, 'burst')
      expect(limited.status).toBe(429)
      expect(limited.json.errors![0]!.extensions.code).toBe('RATE_LIMITED')
      expect(String(limited.headers['retry-after'])).toMatch(/^[1-9]\d*$/)
      expect(metricSum(await p.metricsText(), 'igw_quota_rejections_total', 'reason="rate"')).toBe(1)
      const off = await gql(p.url, 'off')
      expect([off.status, off.json.errors![0]!.extensions.code]).toEqual([429, 'QUOTA_EXCEEDED'])
    } finally {
      await p.close()
    }
  })

  it('is refused the same way with Redis, without a Redis round trip or a budget event', async () => {
    const prefix = 'sweep18b:'
    const p = await startTestProxy({ redis: { url: redis.url, keyPrefix: prefix }, tenants: TENANTS, quotas: QUOTAS, routes: routes() })
    try {
      await expectTooExpensive(p.url, 'burst', 'rate', 2, /exceeds the graphql burst of 2 units/)
      await expectTooExpensive(p.url, 'day', 'daily', 1000, /exceeds the daily graphql quota of 1000 units/)
      await expectTooExpensive(p.url, 'cap', 'budget', 1000, /exceeds the budget of 1000 units per 30 d/)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="too_expensive"')).toBe(3)
      expect(metricSum(text, 'igw_quota_events_total')).toBe(0)
      expect(metricSum(text, 'igw_quota_decision_seconds_count', 'path="redis"')).toBe(0)
      const ok = await gql(p.url, 'burst')
      expect(ok.status).toBe(200)
      expect(String(ok.headers.ratelimit)).toMatch(/^"rate";r=1;t=1000(?:$|, )/)
    } finally {
      await p.close()
    }
  })

  it('a shadow rule it could never fit counts it as would-reject too_expensive, and admits it', async () => {
    const p = await startTestProxy({
      tenants: { burst: {} },
      quotas: { tenants: { burst: { graphql: { rate: 0.001, burst: 2, shadow: true } } } },
      routes: routes(),
    })
    try {
      const r = await gql(p.url, 'burst', ENORMOUS)
      expect(r.status).toBe(200)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_would_reject_total', 'reason="too_expensive"')).toBe(1)
      expect(metricSum(text, 'igw_quota_would_reject_total', 'reason="rate"')).toBe(0)
      expect(metricSum(text, 'igw_quota_rejections_total')).toBe(0)
    } finally {
      await p.close()
    }
  })
})
