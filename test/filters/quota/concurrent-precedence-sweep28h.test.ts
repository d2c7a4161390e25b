// Sweep 28h: the concurrency slot was checked before the bucket, the daily quota and the budget,
// and refused on its own: a tenant at maxConcurrent whose day was used up got 429 RATE_LIMITED
// (`concurrent`, retry in 1 s) until its midnight, against docs/quota.md ("names the one that
// frees up last"). The refusal now names the daily quota (or a used-up budget, or a bucket that
// refills later than a second), takes neither a slot nor tokens, and counts as that reason.
// Real proxy (two worker threads), real held requests, without and with a real redis-server.
import type { ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

const held: ServerResponse[] = []
let be: RawBackend
let redis: TestRedis
beforeAll(async () => {
  ;[be, redis] = await Promise.all([startRawBackend((_req, res) => void held.push(res)), startRedis()])
})
afterAll(async () => {
  await be?.close()
  await redis?.close()
})

interface Answer {
  status: number
  retryAfter?: string
  ext?: { code: string; policy: string; retryAfterSeconds: number }
}

async function call(url: string, tenant: string): Promise<Answer> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  const ext = (JSON.parse(text) as { errors: { extensions: Answer['ext'] }[] }).errors[0]!.extensions
  return { status: res.statusCode, retryAfter: res.headers['retry-after'] as string, ext }
}

function release(): void {
  for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
}

async function run(redisDoc: { url: string; keyPrefix: string } | undefined): Promise<void> {
  const p = await startTestProxy({
    workers: 2,
    ...(redisDoc !== undefined ? { redis: redisDoc } : {}),
    tenants: { day: {}, budget: {}, slow: {}, plain: {} },
    quotas: {
      redis: { budgetMs: 1000 },
      tenants: {
        day: { graphql: { maxConcurrent: 1, limitPerDay: 1 } },
        budget: { graphql: { maxConcurrent: 1 }, budget: { units: 1, window: '30d', bucket: '1d', hardCap: true } },
        slow: { graphql: { maxConcurrent: 1, rate: 0.01, burst: 1 } },
        plain: { graphql: { maxConcurrent: 1, rate: 1000, limitPerDay: 1000 } },
      },
    },
    routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
  })
  try {
    const first = ['day', 'budget', 'slow', 'plain'].map((t) => call(p.url, t))
    await waitUntil(() => held.length === 4, 5_000, 'four held requests')
    const day = await call(p.url, 'day')
    expect(day.status).toBe(429)
    expect(day.ext).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily' })
    expect(Number(day.retryAfter)).toBeGreaterThan(1)
    expect(day.ext!.retryAfterSeconds).toBe(Number(day.retryAfter))
    const budget = await call(p.url, 'budget')
    expect(budget.ext).toMatchObject({ code: 'BUDGET_EXHAUSTED', policy: 'budget' })
    expect(Number(budget.retryAfter)).toBeGreaterThan(1)
    const slow = await call(p.url, 'slow')
    expect(slow.ext).toMatchObject({ code: 'RATE_LIMITED', policy: 'rate' })
    expect(Number(slow.retryAfter)).toBeGreaterThan(1)
    // Only the slot refuses: still the concurrency answer.
    const plain = await call(p.url, 'plain')
    expect(plain.ext).toMatchObject({ code: 'RATE_LIMITED', policy: 'concurrent', retryAfterSeconds: 1 })
    release()
    expect((await Promise.all(first)).map((a) => a.status)).toEqual([200, 200, 200, 200])
    // The refusals took no slot and nothing of the day: plain's next request is admitted.
    const again = call(p.url, 'plain')
    await waitUntil(() => held.length === 1, 5_000, 'plain admitted again')
    release()
    expect((await again).status).toBe(200)
    const text = await p.metricsText()
    expect(metricSum(text, 'igw_quota_rejections_total', 'reason="concurrent"')).toBe(1)
    expect(metricSum(text, 'igw_quota_rejections_total', 'reason="daily"')).toBe(1)
    expect(metricSum(text, 'igw_quota_rejections_total', 'reason="budget"')).toBe(1)
    expect(metricSum(text, 'igw_quota_rejections_total', 'reason="rate"')).toBe(1)
  } finally {
    release()
    await p.close()
  }
}

describe('a concurrency refusal names the limit that frees up last (sweep 28h)', () => {
  it('without Redis (shared table, two worker threads)', () => run(undefined))
  it('with Redis', () => run({ url: redis.url, keyPrefix: `sweep28h-${Date.now()}:` }))
})
