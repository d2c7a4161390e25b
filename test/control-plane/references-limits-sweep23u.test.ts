// REST references and limits (sweep 23u):
// 1. DELETE of an upstream a route still uses answered 400 quoting the route's path as if the route
//    were wrong. Now 409 naming what refers to it (routes/graphql) and the paths; nothing committed.
// 2. A tenant was deleted while a route's tenant filter named it as defaultTenant (200: anonymous
//    traffic went on as a tenant that no longer existed), and one with quotas or a DLP preset got
//    the 400 of those entries. Now 409 naming each; a DLP preset still named anywhere likewise
//    (the seed's presets survive a delete of their redefinition, so that is not refused).
// 3. The document had no size bound (each PUT ≤ 4 MiB, but it grew item after item). Now a write
//    leaving it over 16 MiB (canonical JSON) is a 413 naming the limit.
// 4. PUT /v1/routes/{route}/filters/{filter} answered 200 when it added the filter. Now 201.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

const json = (v: unknown) => JSON.stringify(v)

async function auditCount(cp: TestControlPlane): Promise<number> {
  return Number((await cp.store.db.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM audit_log'))[0]!.n)
}

describe('references and limits (SQLite)', () => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    const seed = seedDocument()
    cp = await startTestControlPlane({ seed: { ...seed, mode: 'ingress', dlp: { presets: { strict2: { email: 'redact' }, mask_basic: { email: 'redact' } } } } })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('DELETE of an upstream a route uses is a 409 naming the route; once unused it is deleted', async () => {
    const version = cp.store.head()!.version
    const audited = await auditCount(cp)
    const r = await cp.api('/v1/upstreams/backend', { method: 'DELETE' })
    expect(await oa.check(r, 'DELETE', '/v1/upstreams/{id}')).toMatchObject({
      status: 409,
      detail: 'upstream "backend" is used by routes/graphql; change or delete those first',
      problems: ['routes[0].upstream: refers to upstream "backend"'],
    })
    expect(cp.store.head()!.version).toBe(version)
    expect(await auditCount(cp)).toBe(audited)
    expect((await cp.api('/v1/upstreams/other', { method: 'PUT', body: json({ url: 'http://127.0.0.1:9' }) })).status).toBe(201)
    const route = ((await (await cp.api('/v1/routes/graphql')).json()) as { config: Record<string, unknown> }).config
    expect((await cp.api('/v1/routes/graphql', { method: 'PUT', body: json({ ...route, upstream: 'other' }) })).status).toBe(200)
    expect(await oa.check(await cp.api('/v1/upstreams/backend', { method: 'DELETE' }), 'DELETE', '/v1/upstreams/{id}')).toMatchObject({ deleted: 'backend' })
  })

  it('DELETE of a tenant that a tenant filter defaults to, or with its own quotas or DLP preset, is a 409 naming each', async () => {
    const version = cp.store.head()!.version
    const byDefault = await cp.api('/v1/tenants/acme', { method: 'DELETE' })
    expect(await oa.check(byDefault, 'DELETE', '/v1/tenants/{id}')).toMatchObject({
      status: 409,
      detail: 'tenant "acme" is used by routes/graphql/filters/tenant; change or delete those first',
      problems: ['routes[0].filters[1].defaultTenant: refers to tenant "acme"'],
    })
    expect(cp.store.head()!.version).toBe(version)
    expect((await cp.api('/v1/tenants/acme')).status).toBe(200)

    expect((await cp.api('/v1/quota-limits/globex', { method: 'PUT', body: json({ graphql: { limitPerDay: 10 } }) })).status).toBe(201)
    expect((await cp.api('/v1/dlp-tenants/globex', { method: 'PUT', body: json({ preset: 'mask_basic' }) })).status).toBe(201)
    const owned = await cp.api('/v1/tenants/globex', { method: 'DELETE' })
    expect(await oa.check(owned, 'DELETE', '/v1/tenants/{id}')).toMatchObject({
      status: 409,
      detail: 'tenant "globex" is used by quota-limits/globex, dlp-tenants/globex; change or delete those first',
      problems: ['quotas.tenants.globex: refers to tenant "globex"', 'dlp.tenants.globex: refers to tenant "globex"'],
    })
    expect((await cp.api('/v1/quota-limits/globex', { method: 'DELETE' })).status).toBe(200)
    expect((await cp.api('/v1/dlp-tenants/globex', { method: 'DELETE' })).status).toBe(200)
    expect((await cp.api('/v1/tenants/globex', { method: 'DELETE' })).status).toBe(200)

    // The default moved elsewhere: acme is free to go.
    expect((await cp.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: json({}) })).status).toBe(200)
    expect((await cp.api('/v1/tenants/acme', { method: 'DELETE' })).status).toBe(200)
  })

  it('DELETE of a DLP preset still named is a 409; the seed’s preset survives a delete of its redefinition', async () => {
    expect((await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({}) })).status).toBe(201)
    expect((await cp.api('/v1/dlp-tenants/initech', { method: 'PUT', body: json({ preset: 'strict2' }) })).status).toBe(201)
    expect((await cp.api('/v1/routes/graphql/filters/dlp', { method: 'PUT', body: json({ preset: 'strict2', exports: { paths: [{ prefix: '/export' }] } }) })).status).toBe(201)
    const version = cp.store.head()!.version
    const r = await cp.api('/v1/dlp-presets/strict2', { method: 'DELETE' })
    expect(await oa.check(r, 'DELETE', '/v1/dlp-presets/{id}')).toMatchObject({
      status: 409,
      detail: 'DLP preset "strict2" is used by dlp-tenants/initech, routes/graphql/filters/dlp; change or delete those first',
      problems: ['dlp.tenants.initech.preset: refers to DLP preset "strict2"', 'routes[0].filters[2].preset: refers to DLP preset "strict2"'],
    })
    expect(cp.store.head()!.version).toBe(version)
    // mask_basic is the seed's too: deleting the document's version of it leaves the seed's in force.
    expect((await cp.api('/v1/dlp-tenants/initech', { method: 'PUT', body: json({ preset: 'mask_basic' }) })).status).toBe(200)
    expect((await cp.api('/v1/dlp-presets/mask_basic', { method: 'DELETE' })).status).toBe(200)
  })

  it('PUT of a route filter answers 201 when it adds it to the chain, 200 when it replaces it', async () => {
    const added = await cp.api('/v1/routes/graphql/filters/cache', { method: 'PUT', body: json({ ttlSeconds: 15 }) })
    expect(added.status).toBe(201)
    expect(await oa.check(added, 'PUT', '/v1/routes/{route}/filters/{filter}')).toMatchObject({ route: 'graphql', config: { name: 'cache', ttlSeconds: 15 } })
    const replaced = await cp.api('/v1/routes/graphql/filters/cache', { method: 'PUT', body: json({ ttlSeconds: 30 }) })
    expect(replaced.status).toBe(200)
    expect(await oa.check(replaced, 'PUT', '/v1/routes/{route}/filters/{filter}')).toMatchObject({ config: { ttlSeconds: 30 } })
  })
})

describe('document size bound (SQLite)', () => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane()
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('a write leaving the document over 16 MiB is a 413 naming the limit; nothing is committed', async () => {
    // Each body stays under the 4 MiB request bound; together they pass 16 MiB.
    const big = 'x'.repeat(3.9 * 1024 * 1024)
    for (let i = 0; i < 4; i++) expect((await cp.api(`/v1/tenants/big${i}`, { method: 'PUT', body: json({ displayName: big }) })).status).toBe(201)
    const version = cp.store.head()!.version
    const audited = await auditCount(cp)
    const over = await cp.api('/v1/tenants/big4', { method: 'PUT', body: json({ displayName: big }) })
    const body = (await oa.check(over, 'PUT', '/v1/tenants/{id}')) as { status: number; detail: string }
    expect(body.status).toBe(413)
    expect(body.detail).toContain(`limit of ${16 * 1024 * 1024} bytes`)
    expect(cp.store.head()!.version).toBe(version)
    expect(await auditCount(cp)).toBe(audited)
    expect((await cp.api('/v1/tenants/big4')).status).toBe(404)
  })
})
