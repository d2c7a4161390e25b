// A cost-0 operation takes nothing: "a day merely used up still lets cost-0 operations through"
// (docs/quota.md), and a used-up hard-capped budget did too. Over the limit — a plan downgraded
// mid-day by a reload (the control plane lowering limitPerDay or budget units), or usage an
// outage's proxies overshot — the same operation got 429 QUOTA_EXCEEDED / BUDGET_EXHAUSTED until
// midnight (or the window moved), locally and in the Redis script. Costly operations are still
// refused; `limitPerDay: 0` (the suspension) still refuses everything. Real proxy, persisted filter
// (manifest costs), redis-server, reloads through the supervisor.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, testProxyConfig } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

const op = (id: string) => JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: id } } })

async function gql(url: string, tenant: string, id: string): Promise<{ status: number; code?: string }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: op(id) })
  const json = JSON.parse(await res.body.text()) as { errors?: { extensions: { code: string } }[] }
  return { status: res.statusCode, code: json.errors?.[0]?.extensions.code }
}

let backend: DemoBackend
let redis: TestRedis
beforeAll(async () => {
  ;[backend, redis] = await Promise.all([startDemoBackend(), startRedis()])
})
afterAll(async () => {
  await Promise.all([backend?.close(), redis?.close()])
})

describe.each([
  ['local', false],
  ['redis', true],
])('cost-0 operations over a lowered limit (%s)', (_path, withRedis) => {
  it('pass a day or hard budget over its limit after a downgrade; costly ones and a suspension still refuse', async () => {
    const prefix = `sweep31i-zero-${Date.now()}:`
    const doc = (limitPerDay: number, units: number) => ({
      ...(withRedis ? { redis: { url: redis.url, keyPrefix: prefix } } : {}),
      tenants: { daily: {}, capped: {} },
      persistedDocuments: { operations: { free: { document: 'query Free { hello }', costUnits: 0 }, paid: { document: 'query Paid { hello }', costUnits: 3 } } },
      quotas: {
        tenants: {
          daily: { graphql: { limitPerDay } },
          capped: { budget: { units, window: '1d', bucket: '1h', hardCap: true } },
        },
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never,
    })
    const p = await startTestProxy(doc(10, 10))
    try {
      for (const t of ['daily', 'capped']) for (let i = 0; i < 2; i++) expect((await gql(p.url, t, 'paid')).status).toBe(200) // 6 of 10 used
      // The plan is downgraded mid-day: 4 units a day, a budget of 4.
      expect((await p.applyConfig(testProxyConfig(doc(4, 4)))).ok).toBe(true)
      expect(await gql(p.url, 'daily', 'paid')).toMatchObject({ status: 429, code: 'QUOTA_EXCEEDED' })
      expect(await gql(p.url, 'capped', 'paid')).toMatchObject({ status: 429, code: 'BUDGET_EXHAUSTED' })
      const free = [await gql(p.url, 'daily', 'free'), await gql(p.url, 'capped', 'free')]
      expect(free).toEqual([
        { status: 200, code: undefined },
        { status: 200, code: undefined },
      ])
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_decision_seconds_count', 'path="redis"') > 0).toBe(withRedis)
      expect(metricSum(text, 'igw_quota_rejections_total')).toBe(2)
      // The suspension is not a spent day: even what costs nothing is refused.
      expect((await p.applyConfig(testProxyConfig(doc(0, 4)))).ok).toBe(true)
      expect(await gql(p.url, 'daily', 'free')).toMatchObject({ status: 429, code: 'QUOTA_EXCEEDED' })
    } finally {
      await p.close()
    }
  }, 30_000)
})
