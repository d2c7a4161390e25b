// A refused write is a security event: a token probing what it may change (a viewer PUTting a
// tenant, an operator scoped to one tenant writing another's quota, a setQuota over GraphQL) left
// no trace in the signed audit log, while a refused detokenize did. Each is now audited as
// `<action>.denied` (who, what, why), once per actor and action a minute; refused reads are not.
// A real control plane (SQLite, HTTP, the real Rego policy).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

type Entry = { actor: string; action: string; resource: string; after: { reason?: string; request?: string; tenant?: string | null } | null }

describe('refused admin writes are audited', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  async function denied(actor: string): Promise<Entry[]> {
    const r = await cp.api('/v1/audit?limit=1000')
    expect(r.status).toBe(200)
    return ((await r.json()) as { items: Entry[] }).items.filter((e) => e.actor === actor && e.action.endsWith('.denied'))
  }

  it('a REST write the policy refuses leaves one entry per actor and action a minute; a refused read none', async () => {
    const viewer = await cp.token({ sub: 'vera', roles: ['viewer'] })
    const put = () => cp.api('/v1/tenants/probe', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }), token: viewer })
    expect((await put()).status).toBe(403)
    const got = await denied('vera')
    expect(got).toHaveLength(1)
    expect(got[0]).toMatchObject({ action: 'admin.write.denied', resource: 'tenants/probe', after: { request: 'PUT /v1/tenants/probe' } })
    expect(got[0]!.after!.reason).toMatch(/admin\.write/)
    for (let i = 0; i < 3; i++) expect((await put()).status).toBe(403)
    expect(await denied('vera')).toHaveLength(1)

    // a tenant-scoped operator writing another tenant's quota
    const scoped = await cp.token({ sub: 'otto', roles: ['operator'], tenant: 'acme' })
    expect((await cp.api('/v1/tenants/globex/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 10 }), token: scoped })).status).toBe(403)
    expect(await denied('otto')).toMatchObject([{ action: 'admin.write.denied', resource: 'tenants/globex/quotas/graphql' }])

    // a refused read is no security event worth the signed log
    const nobody = await cp.token({ sub: 'nina', roles: [] })
    expect((await cp.api('/v1/tenants', { token: nobody })).status).toBe(403)
    expect(await denied('nina')).toEqual([])
    expect(((await (await cp.api('/v1/audit/verify')).json()) as { ok: boolean }).ok).toBe(true)
  })

  it('a GraphQL mutation the policy refuses is audited too', async () => {
    const viewer = await cp.token({ sub: 'gwen', roles: ['viewer'] })
    const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: 'mutation { setQuota(kind: "graphql", limitPerDay: 5, tenant: "acme") { limitPerDay } }' }), token: viewer })
    const body = (await r.json()) as { errors?: { extensions?: { code?: string } }[] }
    expect(body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    expect(await denied('gwen')).toMatchObject([{ action: 'admin.write.denied', resource: 'graphql/Mutation.setQuota', after: { tenant: 'acme' } }])
  })
})
