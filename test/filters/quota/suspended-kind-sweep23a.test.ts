// `limitPerDay: 0` switches a kind off for a tenant (the control plane's suspension): everything
// is refused with QUOTA_EXCEEDED. A manifest operation with `costUnits: 0` went through all the
// same (0 used + 0 > 0 is false), locally and in the Redis script. Real proxy, real persisted
// filter, real redis-server; the tenant next to it, with a used-up day, shows that a free
// operation is still free where the kind is merely spent.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

const FREE = JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: 'free' } } })
const PAID = JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: 'paid' } } })

async function gql(url: string, tenant: string, body: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body })
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(await res.body.text()) as { errors?: { extensions: Record<string, unknown> }[] } }
}

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

function start(withRedis: boolean): Promise<TestProxy> {
  return startTestProxy({
    ...(withRedis ? { redis: { url: redis.url, keyPrefix: 'sweep23a:' } } : {}),
    tenants: { off: {}, spent: {} },
    persistedDocuments: { operations: { free: { document: 'query Free { hello }', costUnits: 0 }, paid: { document: 'query Paid { hello }', costUnits: 1 } } },
    quotas: { tenants: { off: { graphql: { limitPerDay: 0 } }, spent: { graphql: { limitPerDay: 1 } } } },
    routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never,
  })
}

describe.each([
  ['local', false],
  ['redis', true],
])('a kind switched off (limitPerDay 0), %s', (_path, withRedis) => {
  it('refuses a cost-0 operation too; a spent day still lets it through', async () => {
    const p = await start(withRedis)
    try {
      const off = await gql(p.url, 'off', FREE)
      expect(off.status).toBe(429)
      expect(off.json.errors![0]!.extensions).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily', limit: 0, remaining: 0, cost: 0 })
      expect(String(off.headers['retry-after'])).toMatch(/^[1-9]\d*$/)
      expect((await gql(p.url, 'off', PAID)).status).toBe(429)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="daily"')).toBe(2)
      // Decided where the case says (Redis's script, or the shared table without Redis).
      expect(metricSum(text, 'igw_quota_decision_seconds_count', 'path="redis"') > 0).toBe(withRedis)
      // A day's quota used up is not a suspension: what costs nothing stays free.
      expect((await gql(p.url, 'spent', PAID)).status).toBe(200)
      expect((await gql(p.url, 'spent', PAID)).status).toBe(429)
      expect((await gql(p.url, 'spent', FREE)).status).toBe(200)
    } finally {
      await p.close()
    }
  })
})
