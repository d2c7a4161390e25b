// An operator's journey through docs/control-plane.md found writes whose bodies said more than was
// done, answered 200 with the extra silently dropped:
// - `POST /v1/config/rollback {"version": 2, "ifMatch": …}` rolled back over whatever the head had
//   become (the precondition belongs in If-Match; the body's was ignored);
// - `PUT /v1/routes/a {"name": "b", …}` replaced route a and renamed nothing, and
//   `PUT /v1/routes/r/filters/cache {"name": "quota", …}` set the cache filter.
// Each is now a 400 naming the key, with nothing committed or audited.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

describe('write bodies that name more than the request does', () => {
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
  const head = async () => {
    const r = await cp.api('/v1/config')
    return { version: ((await r.json()) as { version: number }).version, etag: r.headers.get('etag')! }
  }
  const auditCount = async () => ((await (await cp.api('/v1/audit?limit=1000')).json()) as { items: unknown[] }).items.length

  it('a rollback body with more than version is a 400 naming the key; nothing is committed', async () => {
    const seen = await head()
    expect((await cp.api('/v1/tenants/acme', { method: 'PUT', body: json({ tier: 'bronze' }) })).status).toBe(200)
    const moved = await head()
    const entries = await auditCount()
    const refused = await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: seen.version, ifMatch: seen.etag }) })
    const body = (await oa.check(refused, 'POST', '/v1/config/rollback')) as { status: number; problems: string[] }
    expect(body.status).toBe(400)
    expect(body.problems).toEqual([expect.stringMatching(/^\(body\): unknown key "ifMatch": a rollback takes only version .*If-Match/)])
    expect(await head()).toEqual(moved)
    expect(await auditCount()).toBe(entries)
    // The documented form still works, and its If-Match is honoured.
    const stale = await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: seen.version }), headers: { 'if-match': seen.etag } })
    expect(stale.status).toBe(412)
    const ok = await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: seen.version }), headers: { 'if-match': moved.etag } })
    expect(await oa.check(ok, 'POST', '/v1/config/rollback')).toEqual({ version: moved.version + 1, changed: true })
  })

  it('a route body naming another route than the path is a 400 on name; the same name or none is taken', async () => {
    const before = await head()
    const refused = await cp.api('/v1/routes/graphql', { method: 'PUT', body: json({ name: 'renamed', upstream: 'backend', filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'acme' }] }) })
    const body = (await oa.check(refused, 'PUT', '/v1/routes/{id}')) as { status: number; problems: string[] }
    expect(body.status).toBe(400)
    expect(body.problems).toEqual([expect.stringMatching(/^name: expected "graphql" \(the name in the path routes\/graphql\) or nothing, got "renamed"; to rename/)])
    expect(await head()).toEqual(before)
    expect((await cp.api('/v1/routes/renamed')).status).toBe(404)

    const same = await cp.api('/v1/routes/extra', { method: 'PUT', body: json({ name: 'extra', upstream: 'backend', match: { pathPrefix: '/extra' } }) })
    expect(same.status).toBe(201)
    const none = await cp.api('/v1/routes/extra', { method: 'PUT', body: json({ upstream: 'backend', match: { pathPrefix: '/extra2' } }) })
    expect(((await oa.check(none, 'PUT', '/v1/routes/{id}')) as { config: { name: string } }).config.name).toBe('extra')
  })

  it('a filter body naming another filter than the path is a 400 on name', async () => {
    const before = await head()
    const refused = await cp.api('/v1/routes/graphql/filters/cache', { method: 'PUT', body: json({ name: 'quota', kind: 'graphql' }) })
    const body = (await oa.check(refused, 'PUT', '/v1/routes/{route}/filters/{filter}')) as { status: number; problems: string[] }
    expect(body.status).toBe(400)
    expect(body.problems).toEqual([expect.stringMatching(/^name: expected "cache" \(the name in the path routes\/graphql\/filters\/cache\) or nothing, got "quota"/)])
    expect(await head()).toEqual(before)
    expect((await cp.api('/v1/routes/graphql/filters/cache')).status).toBe(404)
    // Repeating the path's name is fine.
    const ok = await cp.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: json({ name: 'tenant', defaultTenant: 'globex' }) })
    expect(ok.status).toBe(200)
  })

  it('a map item’s body is not checked for a name (tenants are keyed by id, upstreams too)', async () => {
    const r = await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'gold', displayName: 'Initech Corp.' }) })
    expect(r.status).toBe(201)
    expect(((await r.json()) as { config: { displayName: string } }).config.displayName).toBe('Initech Corp.')
  })

  it('the decide dry run names a real action in its hint', async () => {
    const r = await cp.api('/v1/policies/admin/decide', { method: 'POST', body: json({ subject: { sub: 'x' }, resource: { type: 'config' } }) })
    const body = (await r.json()) as { problems: string[] }
    expect(r.status).toBe(400)
    const hint = /e\.g\. "([^"]+)"/.exec(body.problems.find((p) => p.startsWith('action:'))!)![1]!
    const decided = (await (await cp.api('/v1/policies/admin/decide', { method: 'POST', body: json({ subject: { sub: 'x', roles: ['admin'] }, action: hint, resource: { type: 'config' } }) })).json()) as { allow: boolean; reason: string }
    expect(decided).toEqual({ allow: true, reason: 'allowed' })
  })
})
