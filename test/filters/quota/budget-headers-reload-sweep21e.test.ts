// Sweep 21e: what the rolling budget tells clients.
// - A budget without hardCap only counts (events, gauges): it never refuses. It was advertised in
//   RateLimit-Policy / RateLimit as if enforced, and clients (the IETF draft) plan around it.
// - A refusal's Retry-After is cached in the ring (shared memory, or Redis) while refusals repeat.
//   A reload that lowered `budget.units` answered the next refusal with the wait computed under the
//   old units (too early: under fewer units more old usage must leave the window).
// Real proxy (worker threads, shared memory), real redis-server, real HTTP client.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

let be: RawBackend
let redis: TestRedis
beforeAll(async () => {
  ;[be, redis] = await Promise.all([startRawBackend(echoHandler), startRedis()])
})
afterAll(async () => {
  await be?.close()
  await redis?.close()
})

async function call(url: string, tenant: string): Promise<{ status: number; code?: string; retry: number; policy?: string; ratelimit?: string }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  const text = await res.body.text()
  const code = res.statusCode === 200 ? undefined : (JSON.parse(text) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code
  return { status: res.statusCode, code, retry: Number(res.headers['retry-after']), policy: res.headers['ratelimit-policy'] as string | undefined, ratelimit: res.headers['ratelimit'] as string | undefined }
}

function routes() {
  return [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }] as never
}

describe('rolling budget headers and reloads (sweep 21e)', () => {
  it('only a hard-capped budget is advertised in RateLimit-Policy and RateLimit', async () => {
    const p = await startTestProxy({
      tenants: { soft: {}, hard: {} },
      quotas: {
        defaults: { graphql: { rate: 100, burst: 100 } },
        tenants: { soft: { budget: { units: 1000 } }, hard: { budget: { units: 1000, hardCap: true } } },
      },
      routes: routes(),
    })
    try {
      const soft = await call(p.url, 'soft')
      expect(soft.status).toBe(200)
      expect(soft.policy).toMatch(/^"rate";q=100;w=1$/)
      expect(soft.ratelimit).toMatch(/^"rate";r=\d+;t=\d+$/)
      const hard = await call(p.url, 'hard')
      expect(hard.policy).toMatch(/^"rate";q=100;w=1, "budget";q=1000;w=2592000$/)
      expect(hard.ratelimit).toMatch(/, "budget";r=999;t=\d+$/)
    } finally {
      await p.close()
    }
  })

  // Bucket 2 s, window 5 buckets: two units in bucket A, two in bucket B (the next one). Under 4
  // units a refusal waits for A to leave the window; under 2 units, for B (2 s later).
  const BM = 2_000
  const N = 5
  async function retryAfterReload(extra: object): Promise<void> {
    let units = 4
    const doc = () => ({ ...extra, tenants: { t: {} }, quotas: { tenants: { t: { budget: { units, window: BM * N, bucket: BM, hardCap: true, thresholds: [1] } } } }, routes: routes() })
    const p = await startTestProxy(doc() as never, { loadConfig: () => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...doc() }) })
    try {
      const bucket = () => Math.floor(Date.now() / BM)
      // A fresh bucket first (room for the requests in it), then the next one.
      const b0 = bucket()
      await waitUntil(() => bucket() > b0, 5_000, 'the next bucket')
      const a = bucket()
      expect([(await call(p.url, 't')).status, (await call(p.url, 't')).status]).toEqual([200, 200])
      await waitUntil(() => bucket() > a, 5_000, 'the next bucket')
      const b = bucket()
      expect([(await call(p.url, 't')).status, (await call(p.url, 't')).status]).toEqual([200, 200])
      let t0 = Date.now()
      const before = await call(p.url, 't')
      expect(before.code).toBe('BUDGET_EXHAUSTED')
      expect(before.retry).toBeLessThanOrEqual(Math.ceil(((a + N) * BM - t0) / 1000)) // A leaving is enough
      units = 2
      const rl = await p.reload()
      expect(rl, JSON.stringify(rl)).toMatchObject({ ok: true })
      t0 = Date.now()
      const after = await call(p.url, 't')
      const t1 = Date.now()
      expect(bucket()).toBeLessThan(a + N) // still in A's window (the test is not too slow to tell)
      expect(after.code).toBe('BUDGET_EXHAUSTED')
      // Under 2 units B must leave too.
      expect(after.retry).toBeGreaterThanOrEqual(Math.ceil(((b + N) * BM - t1) / 1000))
      expect(after.retry).toBeLessThanOrEqual(Math.ceil(((b + N) * BM - t0) / 1000))
    } finally {
      await p.close()
    }
  }

  it('a reload that lowers budget.units is answered with the wait under the new units (shared memory and Redis)', async () => {
    // Side by side: each waits for bucket boundaries.
    await Promise.all([retryAfterReload({}), retryAfterReload({ redis: { url: redis.url, keyPrefix: `sweep21e-${Date.now()}:` } })])
  })
})
