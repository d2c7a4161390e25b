// REST/GraphQL admin HTTP semantics (sweep 23l):
// 1. GET /v1/tenants/{id}/quotas/{kind} sends the limit's ETag (what If-Match takes), but its body
//    also holds usedToday: a poller sending that ETag back as If-None-Match got 304 while usedToday
//    had moved, and a usage dashboard stayed at its first reading. Now always the 200.
// 2. GET /v1/tenants/{id}/statement?to=<a past day> without `from` counted `from` back from today,
//    and answered 400 "from: … is after to: …" for a parameter the caller never sent. Now `from`
//    defaults to 30 days before `to`.
// 3. A compressed body (Content-Encoding: gzip) was read as the JSON text itself: REST refused it as
//    "not valid UTF-8 … re-encode it", GraphQL as "invalid JSON" echoing the gzip bytes. Now 415
//    naming Content-Encoding on both; `identity` is still an uncompressed body.
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

const json = (v: unknown) => JSON.stringify(v)

/** The calendar day `n` days before `day` (YYYY-MM-DD). */
const minusDays = (day: string, n: number) => new Date(Date.UTC(Number(day.slice(0, 4)), Number(day.slice(5, 7)) - 1, Number(day.slice(8, 10)) - n)).toISOString().slice(0, 10)

describe('admin API HTTP semantics (sweep 23l)', () => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane()
    oa = new Conformance(cp.openapi)
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('a quota read with If-None-Match of its ETag still shows usedToday as it is now', async () => {
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 1000 }) })).status).toBe(201) // created
    const first = await cp.api('/v1/tenants/acme/quotas/graphql')
    const etag = first.headers.get('etag')!
    const before = (await oa.check(first, 'GET', '/v1/tenants/{id}/quotas/{kind}')) as { usedToday: number }
    const proxy = await cp.token({ sub: 'p-23l', roles: ['proxy'] })
    const report = { proxyId: 'p-23l', bootId: 'boot-1', seq: 1, at: new Date().toISOString(), tenants: { acme: { requests: 7, byKind: { graphql: 7 } } } }
    expect((await cp.api('/v1/usage', { method: 'POST', token: proxy, body: json(report) })).status).toBe(200)

    const again = await cp.api('/v1/tenants/acme/quotas/graphql', { headers: { 'if-none-match': etag } })
    expect(again.status).toBe(200)
    // The same ETag (the limit did not change: If-Match with it still works), the use as it is now.
    expect(again.headers.get('etag')).toBe(etag)
    expect(((await oa.check(again, 'GET', '/v1/tenants/{id}/quotas/{kind}')) as { usedToday: number }).usedToday).toBe(before.usedToday + 7)
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 1001 }), headers: { 'if-match': etag } })).status).toBe(200)
    // Other reads with an ETag still answer 304.
    const tenant = await cp.api('/v1/tenants/acme')
    await tenant.body?.cancel()
    expect((await cp.api('/v1/tenants/acme', { headers: { 'if-none-match': tenant.headers.get('etag')! } })).status).toBe(304)
  })

  it('a statement given only `to` covers the 30 days before it', async () => {
    const past = await cp.api('/v1/tenants/acme/statement?to=2025-03-15')
    const body = (await oa.check(past, 'GET', '/v1/tenants/{id}/statement')) as { from: string; to: string }
    expect(past.status).toBe(200)
    expect([body.from, body.to]).toEqual([minusDays('2025-03-15', 30), '2025-03-15'])
    // Without either: the 30 days up to today in the tenant's zone (acme: UTC), as before.
    const now = (await (await cp.api('/v1/tenants/acme/statement')).json()) as { from: string; to: string }
    expect(now.from).toBe(minusDays(now.to, 30))
    // Given, `from` is taken as it is, and a `from` after `to` is still the caller's 400.
    expect(((await (await cp.api('/v1/tenants/acme/statement?from=2025-03-01&to=2025-03-15')).json()) as { from: string }).from).toBe('2025-03-01')
    const bad = await cp.api('/v1/tenants/acme/statement?from=2025-04-01&to=2025-03-15')
    expect(((await oa.check(bad, 'GET', '/v1/tenants/{id}/statement')) as { status: number; problems: string[] }).problems).toEqual(['from: 2025-04-01 is after to: 2025-03-15'])
    // A bad `to` is named alone.
    const badTo = await cp.api('/v1/tenants/acme/statement?to=2025-02-30')
    expect(((await badTo.json()) as { problems: string[] }).problems).toEqual(['to: expected a date YYYY-MM-DD, got "2025-02-30"'])
  })

  it('a compressed body is a 415 naming Content-Encoding, on REST and GraphQL; nothing is written', async () => {
    const version = cp.store.head()!.version
    const gz = await cp.api('/v1/tenants/zipped', { method: 'PUT', body: gzipSync(json({ tier: 'gold' })), headers: { 'content-encoding': 'gzip' } })
    const problem = (await oa.check(gz, 'PUT', '/v1/tenants/{id}')) as { status: number; detail: string }
    expect(problem.status).toBe(415)
    expect(problem.detail).toMatch(/Content-Encoding "gzip"/)
    expect(cp.store.head()!.version).toBe(version)
    expect((await cp.api('/v1/tenants/zipped')).status).toBe(404)

    const identity = await cp.api('/v1/tenants/zipped', { method: 'PUT', body: json({ tier: 'gold' }), headers: { 'content-encoding': 'identity' } })
    expect(identity.status).toBe(201)
    await identity.body?.cancel()

    const gql = await cp.api('/graphql', { method: 'POST', body: gzipSync(json({ query: '{ quotas(tenant: "acme") { kind } }' })), headers: { 'content-encoding': 'gzip' } })
    expect(gql.status).toBe(415)
    const errors = ((await gql.json()) as { errors: { message: string; extensions: { code: string } }[] }).errors
    expect(errors[0]!.extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE')
    expect(errors[0]!.message).toMatch(/Content-Encoding "gzip"/)
    // …as the OpenAPI document says of both.
    const paths = cp.openapi.paths as Record<string, Record<string, { responses: Record<string, { description: string }> }>>
    expect(paths['/v1/tenants/{id}']!.put!.responses['415']!.description).toMatch(/Content-Encoding/)
    expect(paths['/graphql']!.post!.responses['415']!.description).toMatch(/Content-Encoding/)
  })
})
