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
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
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
  /** One round on a fresh proxy; false when a call did not land in the bucket the round needs it in (a slow box). */
  async function retryAfterReload(extra: object, quotaExtra: object): Promise<boolean> {
    let units = 4
    // `warm`: no budget, for the requests that warm the proxy up before the timed part.
    const doc = () => ({ ...extra, tenants: { t: {}, warm: {} }, quotas: { ...quotaExtra, tenants: { t: { budget: { units, window: BM * N, bucket: BM, hardCap: true, thresholds: [1] } } } }, routes: routes() })
    const p = await startTestProxy(doc() as never, { loadConfig: () => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...doc() }) })
    try {
      const bucket = () => Math.floor(Date.now() / BM)
      // The proxy decides between a call's start and its answer: both in `want` puts the unit there.
      const callIn = async (want: number) => {
        const from = bucket()
        const r = await call(p.url, 't')
        return from === want && bucket() === want ? r : undefined
      }
      // A fresh proxy's first requests are slow (JIT, the upstream's first connection): seen to take
      // half a bucket under load, they go first.
      for (let i = 0; i < 3; i++) expect((await call(p.url, 'warm')).status).toBe(200)
      // A fresh bucket first (room for the requests in it), then the next one.
      const b0 = bucket()
      await waitUntil(() => bucket() > b0, 5_000, 'the next bucket')
      const a = bucket()
      const inA = [await callIn(a), await callIn(a)]
      if (inA.includes(undefined)) return false
      expect(inA.map((r) => r!.status)).toEqual([200, 200])
      await waitUntil(() => bucket() > a, 5_000, 'the next bucket')
      const b = bucket()
      const inB = [await callIn(b), await callIn(b)]
      if (inB.includes(undefined)) return false
      expect(inB.map((r) => r!.status)).toEqual([200, 200])
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
      if (bucket() >= a + N) return false // A left the window: the box was too slow to tell
      expect(after.code).toBe('BUDGET_EXHAUSTED')
      // Under 2 units B must leave too.
      expect(after.retry).toBeGreaterThanOrEqual(Math.ceil(((b + N) * BM - t1) / 1000))
      expect(after.retry).toBeLessThanOrEqual(Math.ceil(((b + N) * BM - t0) / 1000))
      // Decided where the round says: the outage policy's answer (Redis late) is another one.
      expect(metricSum(await p.metricsText(), 'igw_quota_redis_fallbacks_total')).toBe(0)
      return true
    } finally {
      await p.close()
    }
  }

  /** `extra` per round: a round on Redis needs keys of its own. */
  async function rounds(extra: () => object, quotaExtra: object): Promise<void> {
    for (let i = 0; i < 3; i++) if (await retryAfterReload(extra(), quotaExtra)) return
    throw new Error('3 rounds in a row had a call outside its bucket')
  }

  it('a reload that lowers budget.units is answered with the wait under the new units (shared memory and Redis)', { timeout: 150_000 }, async () => {
    // Side by side: each waits for bucket boundaries. Redis is given up to a second to decide: at
    // the 5 ms default a loaded box had the outage policy answer instead ("a bucket", 2 s).
    let round = 0
    await Promise.all([rounds(() => ({}), {}), rounds(() => ({ redis: { url: redis.url, keyPrefix: `sweep21e-${Date.now()}-${round++}:` } }), { redis: { budgetMs: 1000 } })])
  })
})
