// Sweep 20a: `redis.onOutage: fail-closed` refused (503 OVERLOADED) every request while Redis
// was unreachable — also those of tenants whose rules never refuse: a `shadow` rule ("decides
// and counts but never refuses", how a limit is tried on live traffic) or a budget without
// hardCap (events only). Fail-closed now refuses only where an enforced rule could; the others
// are counted by the local limiter (shadow refusals still show in igw_quota_would_reject_total).
// Real proxy, real redis-server killed, real client.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

let be: RawBackend
let redis: TestRedis
beforeAll(async () => {
  ;[be, redis] = await Promise.all([startRawBackend(echoHandler), startRedis()])
})
afterAll(async () => {
  await be?.close()
  await redis?.close()
})

async function call(url: string, tenant: string): Promise<{ status: number; code?: string }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  return { status: res.statusCode, code: (JSON.parse(text) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code }
}

describe('fail-closed and rules that never refuse (sweep 20a)', () => {
  it('while Redis is down, only tenants with an enforced rule get 503; shadow and soft-budget tenants are served and counted', async () => {
    const p = await startTestProxy({
      redis: { url: redis.url },
      tenants: { strict: {}, shadowy: {}, soft: {} },
      quotas: {
        // A generous budget: the calls before the outage must be Redis's (a 5 ms miss on a busy
        // machine is fail-closed's 503); once Redis is down a call fails at once anyway.
        redis: { onOutage: 'fail-closed', breakerOpenMs: 60_000, budgetMs: 500 },
        tenants: {
          strict: { graphql: { rate: 1000 } },
          shadowy: { graphql: { rate: 0.001, burst: 1, limitPerDay: 1, shadow: true } },
          soft: { budget: { units: 1000 } },
        },
      },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    try {
      for (const t of ['strict', 'shadowy', 'soft']) expect((await call(p.url, t)).status).toBe(200) // through Redis
      await redis.stop()
      expect(await call(p.url, 'strict')).toEqual({ status: 503, code: 'OVERLOADED' })
      const shadowy = [await call(p.url, 'shadowy'), await call(p.url, 'shadowy')]
      expect(shadowy.map((r) => r.status)).toEqual([200, 200])
      expect((await call(p.url, 'soft')).status).toBe(200)
      const text = await p.metricsText()
      // The shadow rule still decided (its bucket of 1 and day of 1 were spent before the outage).
      expect(metricSum(text, 'igw_quota_would_reject_total', 'reason="rate"')).toBeGreaterThanOrEqual(2)
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="redis_unavailable"')).toBe(1)
    } finally {
      await p.close()
    }
  })
})
