// The GraphQL admin API shows every quota the REST API and the document accept. Quota.limitPerDay
// and Quota.usedToday were `Int` (32 bits): one tenant with a daily limit over 2147483647 (legal
// up to 9007199254740991), or a busy day's counter past it, made `quotas` answer `data: null`
// with a masked "Unexpected error." — the tenant's other quotas gone with it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
})
afterAll(async () => {
  await cp?.close()
})

const gql = async (query: string, variables?: Record<string, unknown>) => {
  const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query, ...(variables ? { variables } : {}) }) })
  expect(r.status).toBe(200)
  return (await r.json()) as { data?: { quotas?: { kind: string; limitPerDay: number; usedToday: number }[] } | null; errors?: { message: string }[] }
}

describe('GraphQL quotas past 32 bits (sweep 15)', () => {
  it('a daily limit above 2^31 and a counter above 2^31 are listed, next to the tenant’s other quotas', async () => {
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 5_000_000_000 }) })).status).toBe(201)
    expect((await cp.api('/v1/tenants/acme/quotas/ingest', { method: 'PUT', body: JSON.stringify({ limitPerDay: 1000 }) })).status).toBe(201)
    // Today's reported use of the ingest kind: past 2^31 as well.
    const report = { proxyId: 'safeint-p', bootId: 'b', seq: 1, at: new Date().toISOString(), tenants: { acme: { requests: 1, byKind: { ingest: 3_000_000_000 } } } }
    const posted = await cp.api('/v1/usage', { method: 'POST', token: await cp.token({ roles: ['proxy'] }), body: JSON.stringify(report) })
    expect(posted.status).toBe(200)

    const out = await gql('{ quotas(tenant: "acme") { kind limitPerDay usedToday } }')
    expect(out.errors).toBeUndefined()
    expect(out.data?.quotas).toEqual(
      expect.arrayContaining([
        { kind: 'graphql', limitPerDay: 5_000_000_000, usedToday: 0 },
        { kind: 'ingest', limitPerDay: 1000, usedToday: 3_000_000_000 },
      ]),
    )
  })

  it('setQuota still takes an Int! variable (clients declaring $limit: Int! keep validating) and answers the big neighbour too', async () => {
    const out = await gql('mutation Set($limit: Int!) { setQuota(kind: "embeddings", limitPerDay: $limit, tenant: "acme") { kind limitPerDay } }', { limit: 42 })
    expect(out.errors).toBeUndefined()
    expect(out).toMatchObject({ data: { setQuota: { kind: 'embeddings', limitPerDay: 42 } } })
    const all = await gql('{ quotas(tenant: "acme") { kind limitPerDay } }')
    expect(all.errors).toBeUndefined()
    expect(all.data?.quotas?.map((q) => q.kind).sort()).toEqual(['embeddings', 'graphql', 'ingest'])
  })
})
