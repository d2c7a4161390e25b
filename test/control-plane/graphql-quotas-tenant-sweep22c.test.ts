// GraphQL `quotas(tenant:)` of a tenant that does not exist answered an empty list, which reads
// as "exists, no quotas" (a typo in the tenant looked fine), while REST's GET
// /v1/tenants/{id}/quotas answers 404. Now a NOT_FOUND error, as the schema gives elsewhere.
import { rmSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

describe('GraphQL quotas of an unknown tenant', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
    if (cp) rmSync(cp.dir, { recursive: true, force: true })
  })

  const gql = async (query: string, token?: string) => {
    const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query }), ...(token ? { token } : {}) })
    return (await r.json()) as { data: { quotas: { kind: string }[] } | null; errors?: { message: string; extensions: { code: string } }[] }
  }

  it('is NOT_FOUND, as REST 404s it; a known tenant still lists its quotas', async () => {
    const rest = await cp.api('/v1/tenants/unknown/quotas')
    expect(rest.status).toBe(404)
    await rest.body?.cancel()
    const missing = await gql('{ quotas(tenant: "unknown") { kind } }')
    expect(missing.data).toBeNull()
    expect(missing.errors).toEqual([expect.objectContaining({ message: 'tenants/unknown does not exist', extensions: expect.objectContaining({ code: 'NOT_FOUND' }) })])
    // The caller's own tenant claim, when it names no tenant, is the same.
    const scoped = await gql('{ quotas { kind } }', await cp.token({ sub: 'v', roles: ['viewer'], tenant: 'ghost' }))
    expect(scoped.errors?.[0]?.extensions.code).toBe('NOT_FOUND')
    const put = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 10 }) })
    expect(put.status).toBe(201) // created (sweep 24f)
    await put.body?.cancel()
    const known = await gql('{ quotas(tenant: "acme") { kind } }')
    expect(known.errors).toBeUndefined()
    expect(known.data?.quotas).toEqual([{ kind: 'graphql' }])
    const none = await gql('{ quotas(tenant: "globex") { kind } }')
    expect(none).toEqual({ data: { quotas: [] } })
  })
})
