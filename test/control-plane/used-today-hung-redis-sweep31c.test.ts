// usedToday while the document's Redis hangs (SIGSTOP: the connection stays up, nothing answers).
// Each read failed only at its 500 ms command timeout, and a listing reads once per tenant:
// GET /v1/quotas over 40 tenants took 20 s (a dashboard or a script's curl timed out) although
// the usage reports could answer at once. Now a failed Redis is left alone for a few seconds —
// the reports answer — and asked again after.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber, quotaKeys } from '../../config/quota-usage.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'

const TENANTS = Array.from({ length: 40 }, (_v, i) => `t${i}`)

let redis: TestRedis
let cp: TestControlPlane
beforeAll(async () => {
  redis = await startRedis()
  cp = await startTestControlPlane()
}, 60_000)
afterAll(async () => {
  redis?.resume()
  await cp?.close()
  await redis?.close()
})

type Quotas = { items: { tenant: string; usedToday: number }[] }

describe('usedToday with a hung Redis', () => {
  it('GET /v1/quotas answers from the reports at once instead of waiting out every tenant’s read; Redis answers again once it is back', async () => {
    const head = cp.store.head()!.document as { tenants: Record<string, unknown> }
    const doc = {
      ...head,
      redis: { url: redis.url, keyPrefix: 'hung31c:' },
      tenants: { ...head.tenants, ...Object.fromEntries(TENANTS.map((t) => [t, { tier: 'gold' }])) },
      quotas: { tenants: Object.fromEntries(TENANTS.map((t) => [t, { graphql: { limitPerDay: 1000 } }])) },
    }
    expect((await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify(doc) })).status).toBe(200)
    const r = new Redis(redis.url)
    for (const t of TENANTS) await r.hset(quotaKeys.kind('hung31c:', t, 'graphql'), 'd', String(localDayNumber('UTC', Date.now())), 'u', '42')
    r.disconnect()
    // 7 units reported for t0: what the reports say, to tell them from Redis' 42.
    const proxy = await cp.token({ roles: ['proxy'] })
    const usage = await cp.api('/v1/usage', { method: 'POST', token: proxy, body: JSON.stringify({ proxyId: 'p', bootId: 'b', seq: 1, at: new Date().toISOString(), tenants: { t0: { requests: 7, byKind: { graphql: 7 } } } }) })
    expect(usage.status).toBe(200)
    const used = async () => {
      const res = await cp.api('/v1/quotas')
      expect(res.status).toBe(200)
      return new Map(((await res.json()) as Quotas).items.map((q) => [q.tenant, q.usedToday]))
    }
    const up = await used()
    expect(TENANTS.map((t) => up.get(t))).toEqual(TENANTS.map(() => 42))

    redis.pause()
    const t0 = Date.now()
    const down = await used()
    const took = Date.now() - t0
    expect(down.get('t0')).toBe(7)
    expect(TENANTS.slice(1).map((t) => down.get(t))).toEqual(TENANTS.slice(1).map(() => 0))
    // One read waits for its timeout (500 ms); the others do not (they waited 40 × 500 ms).
    expect(took).toBeLessThan(5_000)
    const t1 = Date.now()
    await used()
    expect(Date.now() - t1).toBeLessThan(2_500)

    redis.resume()
    let back: number | undefined
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline && back !== 42) {
      back = (await used()).get('t0')
      if (back !== 42) await new Promise((res) => setTimeout(res, 250))
    }
    expect(back).toBe(42)
  }, 90_000)
})
