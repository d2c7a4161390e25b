// A refused read is documented as logged (not audited), but nothing logged it: a tenant-scoped
// token reading another tenant's quotas, statement or alerts over REST or GraphQL, or a proxy
// token reading the config, left no trace at all. Each is now a warn line naming the actor.
// A real control plane (SQLite, HTTP, the real Rego policy).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capturingLogger, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

describe('refused reads are logged', () => {
  let cp: TestControlPlane
  const { logger, lines } = capturingLogger()
  beforeAll(async () => {
    cp = await startTestControlPlane({ logger })
  })
  afterAll(async () => {
    await cp?.close()
  })

  const refusals = (actor: string) => lines.filter((l) => l.actor === actor && typeof l.msg === 'string' && l.msg.endsWith(' refused'))

  it('over REST: another tenant read by a tenant-scoped token, the config by a proxy token', async () => {
    const scoped = await cp.token({ sub: 'tess', roles: ['viewer'], tenant: 'acme' })
    for (const path of ['/v1/tenants/globex/quotas', '/v1/tenants/globex/statement', '/v1/alerts?tenant=globex']) {
      const r = await cp.api(path, { token: scoped, headers: { 'x-request-id': 'probe-1' } })
      expect(r.status).toBe(403)
      await r.body?.cancel()
    }
    const got = refusals('tess')
    expect(got.map((l) => l.resource)).toEqual(['tenants/globex/quotas', 'tenants/globex/statement', 'alerts'])
    expect(got[0]).toMatchObject({ level: 40, msg: 'admin.read refused', action: 'admin.read', requestId: 'probe-1' })
    expect(got[0]!.reason).toMatch(/scoped to tenant "acme"/)

    const proxy = await cp.token({ sub: 'pia', roles: ['proxy'] })
    const r = await cp.api('/v1/config', { token: proxy })
    expect(r.status).toBe(403)
    await r.body?.cancel()
    expect(refusals('pia')).toMatchObject([{ action: 'admin.read', resource: 'config' }])
    // A granted read is not logged as a refusal.
    const own = await cp.api('/v1/tenants/acme/quotas', { token: scoped })
    expect(own.status).toBe(200)
    await own.body?.cancel()
    expect(refusals('tess')).toHaveLength(3)
  })

  it('over GraphQL: each refused quotas field, aliases and fragments included', async () => {
    const scoped = await cp.token({ sub: 'gina', roles: ['viewer'], tenant: 'acme' })
    const query = 'fragment F on Query { b: quotas(tenant: "globex") { kind } } { a: quotas(tenant: "globex") { kind } ...F }'
    const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query }), token: scoped })
    const body = (await r.json()) as { errors?: { extensions?: { code?: string } }[] }
    expect(body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    const got = refusals('gina')
    // Both fields were refused (the response shows one: the first nulls the non-null root).
    expect(got).toHaveLength(2)
    expect(got[0]).toMatchObject({ level: 40, msg: 'admin.read refused', action: 'admin.read', resource: 'graphql/Query.quotas', tenant: 'globex' })
    // Still no audit entry for a read.
    const audit = (await (await cp.api('/v1/audit?limit=1000')).json()) as { items: { actor: string }[] }
    expect(audit.items.filter((e) => e.actor === 'gina' || e.actor === 'tess' || e.actor === 'pia')).toEqual([])
  })
})
