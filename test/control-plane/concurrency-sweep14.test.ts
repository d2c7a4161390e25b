// Optimistic concurrency where it was missing: a rollback honours If-Match like PUT /v1/config
// (it used to ignore it and undo whatever was committed meanwhile), and a daily quota can be read
// with the ETag that its PUT/DELETE take as If-Match (GET answered 405, so a conditional quota
// write needed the ETag from a write of one's own). Real control plane over SQLite.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

let cp: TestControlPlane
let oa: Conformance
beforeAll(async () => {
  cp = await startTestControlPlane()
  oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
})
afterAll(async () => {
  await cp?.close()
})

const json = (v: unknown) => JSON.stringify(v)

describe('rollback and If-Match', () => {
  it('a rollback decided on a head that has moved since is refused with 412, and nothing is committed', async () => {
    const seen = await cp.api('/v1/config')
    const seenEtag = seen.headers.get('etag')!
    const seenVersion = ((await seen.json()) as { version: number }).version
    // Someone else commits meanwhile.
    expect((await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'gold' }) })).status).toBe(201)
    const head = await cp.api('/v1/config')
    const headEtag = head.headers.get('etag')!
    const headVersion = ((await head.json()) as { version: number }).version
    expect(headEtag).not.toBe(seenEtag)

    const stale = await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: seenVersion }), headers: { 'if-match': seenEtag } })
    expect(await oa.check(stale, 'POST', '/v1/config/rollback')).toMatchObject({ status: 412, current: headEtag })
    expect(stale.headers.get('etag')).toBe(headEtag)
    // Nothing changed: the tenant added meanwhile is still there, the head did not move.
    const after = (await (await cp.api('/v1/config')).json()) as { version: number; document: { tenants: Record<string, unknown> } }
    expect(after.version).toBe(headVersion)
    expect(after.document.tenants.initech).toEqual({ tier: 'gold' })

    // With the current ETag the rollback goes through; its ETag is the new head's.
    const ok = await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: seenVersion }), headers: { 'if-match': headEtag } })
    expect(await oa.check(ok.clone(), 'POST', '/v1/config/rollback')).toEqual({ version: headVersion + 1, changed: true })
    const now = await cp.api('/v1/config')
    expect(ok.headers.get('etag')).toBe(now.headers.get('etag'))
    expect(((await now.json()) as { document: { tenants: Record<string, unknown> } }).document.tenants.initech).toBeUndefined()
    // Malformed If-Match is a 400 here too, as on every other write.
    expect((await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: seenVersion }), headers: { 'if-match': 'W/*' } })).status).toBe(400)
  })
})

describe('a daily quota has an ETag one can read', () => {
  it('GET /v1/tenants/{id}/quotas/{kind} answers the quota with its ETag; a stale If-Match on PUT and DELETE is 412', async () => {
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 100 }) })).status).toBe(201) // created
    const r = await cp.api('/v1/tenants/acme/quotas/graphql')
    const etag = r.headers.get('etag')
    expect(await oa.check(r, 'GET', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ tenant: 'acme', kind: 'graphql', limitPerDay: 100, usedToday: 0 })
    expect(etag).toMatch(/^"[0-9a-f]+"$/)
    // A viewer reads it too.
    const viewer = await cp.token({ roles: ['viewer'] })
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { token: viewer })).headers.get('etag')).toBe(etag)

    // Two admins read the same ETag; the first conditional write wins, the second is refused.
    const first = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 200 }), headers: { 'if-match': etag! } })
    expect(first.status).toBe(200)
    const second = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 300 }), headers: { 'if-match': etag! } })
    expect(second.status).toBe(412)
    const current = (await (await cp.api('/v1/tenants/acme/quotas/graphql')).json()) as { limitPerDay: number }
    expect(current.limitPerDay).toBe(200)
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'DELETE', headers: { 'if-match': etag! } })).status).toBe(412)
    const fresh = (await cp.api('/v1/tenants/acme/quotas/graphql')).headers.get('etag')!
    expect(fresh).toBe(first.headers.get('etag'))
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'DELETE', headers: { 'if-match': fresh } })).status).toBe(200)

    // Not set, unknown tenant, unknown kind: 404 naming what is missing.
    expect(await oa.check(await cp.api('/v1/tenants/acme/quotas/graphql'), 'GET', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ status: 404, detail: 'tenants/acme/quotas/graphql is not set' })
    expect(await oa.check(await cp.api('/v1/tenants/nobody/quotas/graphql'), 'GET', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ status: 404, detail: 'tenants/nobody does not exist' })
    expect(await oa.check(await cp.api('/v1/tenants/acme/quotas/bogus'), 'GET', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ status: 404 })
    // A token scoped to another tenant does not read it.
    const globex = await cp.token({ roles: ['admin'], tenant: 'globex' })
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { token: globex })).status).toBe(403)
  })
})

describe('GraphQL admin: an empty tenant argument', () => {
  it('means the caller’s tenant for the policy as for the resolver: a tenant-scoped admin sets its own quota, as with no argument', async () => {
    const acmeAdmin = await cp.token({ sub: 'acme-admin', roles: ['admin'], tenant: 'acme' })
    const gql = async (query: string) => (await cp.api('/graphql', { method: 'POST', body: json({ query }), token: acmeAdmin })).json() as Promise<{ data?: Record<string, unknown> | null; errors?: { extensions?: { code?: string } }[] }>
    const set = await gql('mutation { setQuota(kind: "ingest", limitPerDay: 7, tenant: "") { tenant kind limitPerDay } }')
    expect(set.errors).toBeUndefined()
    expect(set.data).toEqual({ setQuota: { tenant: 'acme', kind: 'ingest', limitPerDay: 7 } })
    // The same as omitting it, and what REST stores.
    expect((await gql('mutation { setQuota(kind: "ingest", limitPerDay: 8) { tenant limitPerDay } }')).data).toEqual({ setQuota: { tenant: 'acme', limitPerDay: 8 } })
    expect((await (await cp.api('/v1/tenants/acme/quotas/ingest')).json()) as object).toMatchObject({ tenant: 'acme', limitPerDay: 8 })
    const read = await gql('{ quotas(tenant: "") { tenant kind limitPerDay } }')
    expect(read.errors).toBeUndefined()
    expect(read.data).toEqual({ quotas: [{ tenant: 'acme', kind: 'ingest', limitPerDay: 8 }] })
    // Another tenant stays out of reach.
    expect((await gql('mutation { setQuota(kind: "ingest", limitPerDay: 9, tenant: "globex") { tenant } }')).errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
  })
})
