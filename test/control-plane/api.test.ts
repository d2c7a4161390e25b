// The REST and GraphQL admin APIs of a real control plane over a real SQLite file and a real
// PostgreSQL database. Every response is checked against the served OpenAPI document.
import { join } from 'node:path'
import { Validator } from '@seriousme/openapi-schema-validator'
import { ensureKeyringFile, LocalKeyring } from '../../filters/dlp/keyring.ts'
import { Tokenizer } from '../../filters/dlp/tokenizer.ts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
})
afterAll(async () => {
  await pg?.close()
})

const engines = [
  { name: 'sqlite', db: async () => undefined },
  { name: 'postgres', db: async () => pg.createDatabase(`igw_api_${Math.random().toString(36).slice(2, 8)}`) },
]

const json = (v: unknown) => JSON.stringify(v)

describe.each(engines)('control plane API on $name', (engine) => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    const db = await engine.db()
    cp = await startTestControlPlane(db ? { db } : {})
    const doc = (await (await fetch(`${cp.url}/openapi.json`)).json()) as Record<string, unknown>
    oa = new Conformance(doc)
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('serves a valid OpenAPI 3.1 document that lists every endpoint it answers', async () => {
    const doc = (await (await fetch(`${cp.url}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> }
    const result = await new Validator().validate(doc as never)
    expect(result.errors ?? []).toEqual([])
    expect(result.valid).toBe(true)
    expect(doc.openapi).toBe('3.1.0')
    for (const p of ['/v1/tenants/{id}', '/v1/config', '/v1/proxies', '/v1/stream', '/v1/tenants/{id}/statement', '/v1/alerts', '/v1/audit', '/graphql', '/v1/dlp/detokenize']) expect(Object.keys(doc.paths)).toContain(p)
    // An endpoint that is not in the document does not exist.
    const r = await cp.api('/v1/nothing-here')
    expect(r.status).toBe(404)
  })

  it('401 without or with a bad token, 403 with the policy reason', async () => {
    const none = await cp.api('/v1/tenants', { token: '' })
    expect(await oa.check(none, 'GET', '/v1/tenants')).toMatchObject({ status: 401, detail: 'missing bearer token (Authorization: Bearer <jwt>)' })
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /)
    const forged = await cp.api('/v1/tenants', { token: `${await cp.token({ roles: ['admin'] })}x` })
    expect(await oa.check(forged, 'GET', '/v1/tenants')).toMatchObject({ status: 401, detail: 'token signature does not verify' })
    const viewer = await cp.token({ sub: 'vic', roles: ['viewer'] })
    const read = await cp.api('/v1/tenants', { token: viewer })
    expect(read.status).toBe(200)
    await oa.check(read, 'GET', '/v1/tenants')
    const write = await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'gold' }), token: viewer })
    expect(await oa.check(write, 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 403, detail: 'admin.write on tenants/initech denied: subject lacks the "admin.write" attribute' })
    const scoped = await cp.token({ sub: 'acme-ops', roles: ['operator'], tenant: 'acme' })
    const other = await cp.api('/v1/tenants/globex', { method: 'PUT', body: json({ tier: 'gold' }), token: scoped })
    expect(await oa.check(other, 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 403, detail: expect.stringContaining('scoped to tenant "acme"') })
    const own = await cp.api('/v1/tenants/acme', { method: 'PUT', body: json({ tier: 'gold', displayName: 'ACME' }), token: scoped })
    expect(own.status).toBe(200)
    const list = (await oa.check(await cp.api('/v1/tenants', { token: scoped }), 'GET', '/v1/tenants')) as { items: { id: string }[] }
    expect(list.items.map((i) => i.id)).toEqual(['acme'])
  })

  it('CRUD: create, read with ETag, validation errors name the path, delete', async () => {
    const created = await cp.api('/v1/upstreams/search', { method: 'PUT', body: json({ url: 'http://127.0.0.1:10' }) })
    const c = (await oa.check(created, 'PUT', '/v1/upstreams/{id}')) as { etag: string; version: number; config: unknown }
    expect(created.status).toBe(201)
    expect(created.headers.get('etag')).toBe(c.etag)
    const got = await cp.api('/v1/upstreams/search')
    expect(await oa.check(got, 'GET', '/v1/upstreams/{id}')).toMatchObject({ id: 'search', config: { url: 'http://127.0.0.1:10' }, etag: c.etag })

    const badUrl = await cp.api('/v1/upstreams/search', { method: 'PUT', body: json({ url: 'htp:/nope' }) })
    expect(await oa.check(badUrl, 'PUT', '/v1/upstreams/{id}')).toMatchObject({ status: 400, problems: expect.arrayContaining(['upstreams.search.url: expected URL, got "htp:/nope"']) })
    const badKey = await cp.api('/v1/routes/graphql', { method: 'PUT', body: json({ upstream: 'backend', filters: [{ name: 'nope' }] }) })
    expect(await oa.check(badKey, 'PUT', '/v1/routes/{id}')).toMatchObject({ status: 400, problems: [expect.stringMatching(/^routes\[0\]\.filters\[0\]/)] })
    // A route to a second upstream in sidecar mode: the document-level rule names its path.
    const sidecar = await cp.api('/v1/routes/search', { method: 'PUT', body: json({ upstream: 'search', match: { pathPrefix: '/search' } }) })
    expect(await oa.check(sidecar, 'PUT', '/v1/routes/{id}')).toMatchObject({ status: 400, problems: ['mode: sidecar mode fronts one upstream; use mode: ingress for several'] })
    const notJson = await cp.api('/v1/tenants/x', { method: 'PUT', body: '{"tier":', headers: { 'content-type': 'application/json' } })
    expect(await oa.check(notJson, 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 400, detail: expect.stringMatching(/not valid JSON/) })

    const del = await cp.api('/v1/upstreams/search', { method: 'DELETE' })
    expect(await oa.check(del, 'DELETE', '/v1/upstreams/{id}')).toMatchObject({ deleted: 'search' })
    const gone = await cp.api('/v1/upstreams/search')
    expect(await oa.check(gone, 'GET', '/v1/upstreams/{id}')).toMatchObject({ status: 404 })
    // Deleting an upstream a route still uses is a 409 naming the route and its path.
    const inUse = await cp.api('/v1/upstreams/backend', { method: 'DELETE' })
    expect(await oa.check(inUse, 'DELETE', '/v1/upstreams/{id}')).toMatchObject({ status: 409, detail: expect.stringContaining('routes/graphql'), problems: [expect.stringMatching(/^routes\[0\]\.upstream: /)] })
  })

  it('optimistic concurrency: a stale If-Match gets 412 and changes nothing; If-None-Match: * creates only', async () => {
    const first = await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'silver' }), headers: { 'if-none-match': '*' } })
    expect(first.status).toBe(201)
    const etag = first.headers.get('etag')!
    const again = await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'gold' }), headers: { 'if-none-match': '*' } })
    expect(await oa.check(again, 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 412 })
    // Two admins read the same ETag; the first write wins, the second gets 412.
    const a = await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'gold' }), headers: { 'if-match': etag } })
    expect(a.status).toBe(200)
    await oa.check(a, 'PUT', '/v1/tenants/{id}')
    const b = await cp.api('/v1/tenants/initech', { method: 'PUT', body: json({ tier: 'bronze' }), headers: { 'if-match': etag } })
    const problem = (await oa.check(b, 'PUT', '/v1/tenants/{id}')) as { current: string }
    expect(b.status).toBe(412)
    expect(problem.current).toBe(a.headers.get('etag'))
    const now = (await (await cp.api('/v1/tenants/initech')).json()) as { config: unknown }
    expect(now.config).toEqual({ tier: 'gold' })
    // Whole-document writes take If-Match too.
    const head = await cp.api('/v1/config')
    const h = (await oa.check(head, 'GET', '/v1/config')) as { version: number; document: Record<string, unknown> }
    const stale = await cp.api('/v1/config', { method: 'PUT', body: json(h.document), headers: { 'if-match': '"0000"' } })
    expect(await oa.check(stale, 'PUT', '/v1/config')).toMatchObject({ status: 412 })
    const same = await cp.api('/v1/config', { method: 'PUT', body: json(h.document), headers: { 'if-match': head.headers.get('etag')! } })
    expect(await oa.check(same, 'PUT', '/v1/config')).toEqual({ version: h.version, changed: false })
  })

  it('quotas land in the document and in api_quotas; sections and per-route filter settings are resources too', async () => {
    const put = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 1000 }) })
    expect(await oa.check(put, 'PUT', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ tenant: 'acme', kind: 'graphql', limitPerDay: 1000, usedToday: 0 })
    const badKind = await cp.api('/v1/tenants/acme/quotas/bitcoin', { method: 'PUT', body: json({ limitPerDay: 1 }) })
    expect(await oa.check(badKind, 'PUT', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ status: 400 })
    const cfg = (await (await cp.api('/v1/config')).json()) as { document: { quotas: unknown } }
    expect(cfg.document.quotas).toMatchObject({ tenants: { acme: { graphql: { limitPerDay: 1000 } } } })
    const rows = await cp.db.query<{ kind: string; limit_per_day: unknown }>('SELECT kind, limit_per_day FROM api_quotas')
    expect(rows.map((r) => [r.kind, Number(r.limit_per_day)])).toEqual([['graphql', 1000]])

    const budget = await cp.api('/v1/budgets/acme', { method: 'PUT', body: json({ units: 5000, window: '7d', bucket: '1h' }) })
    expect(budget.status).toBe(201)
    await oa.check(budget, 'PUT', '/v1/budgets/{id}')
    const badBudget = await cp.api('/v1/budgets/acme', { method: 'PUT', body: json({ units: 5000, window: '7d', bucket: '5h' }) })
    expect(await oa.check(badBudget, 'PUT', '/v1/budgets/{id}')).toMatchObject({ status: 400, problems: [expect.stringMatching(/^quotas\.tenants\.acme\.budget/)] })
    const qos = await cp.api('/v1/qos', { method: 'PUT', body: json({ maxInFlight: 256 }) })
    expect(await oa.check(qos, 'PUT', '/v1/qos')).toMatchObject({ config: { maxInFlight: 256 } })
    const sink = await cp.api('/v1/alert-sinks', { method: 'PUT', body: json({ webhook: { url: 'https://hooks.example/igw' } }) })
    await oa.check(sink, 'PUT', '/v1/alert-sinks')
    expect(sink.status).toBe(200)
    const pd = await cp.api('/v1/persisted-documents/getHello', { method: 'PUT', body: json({ document: '{ hello }', cacheTtlSeconds: 60 }) })
    expect(pd.status).toBe(201)
    await oa.check(pd, 'PUT', '/v1/persisted-documents/{id}')
    const badPd = await cp.api('/v1/persisted-documents/broken', { method: 'PUT', body: json({ document: '{ hello' }) })
    expect(await oa.check(badPd, 'PUT', '/v1/persisted-documents/{id}')).toMatchObject({ status: 400, problems: [expect.stringMatching(/^persistedDocuments\.operations\.broken\.document: /)] })
    const cache = await cp.api('/v1/routes/graphql/filters/cache', { method: 'PUT', body: json({ ttlSeconds: 15 }) })
    expect(await oa.check(cache, 'PUT', '/v1/routes/{route}/filters/{filter}')).toMatchObject({ route: 'graphql', position: 2, config: { name: 'cache', ttlSeconds: 15 } })
    const getCache = await cp.api('/v1/routes/graphql/filters/cache')
    expect(await oa.check(getCache, 'GET', '/v1/routes/{route}/filters/{filter}')).toMatchObject({ config: { ttlSeconds: 15 } })
    const delCache = await cp.api('/v1/routes/graphql/filters/cache', { method: 'DELETE' })
    await oa.check(delCache, 'DELETE', '/v1/routes/{route}/filters/{filter}')
    expect(delCache.status).toBe(200)
  })

  it('GraphQL admin: quotas and setQuota with admin.write; FORBIDDEN without it; 401 without a token', async () => {
    const gql = (query: string, token?: string) => cp.api('/graphql', { method: 'POST', body: json({ query }), ...(token !== undefined ? { token } : {}) })
    const operator = await cp.token({ sub: 'olga', roles: ['operator'], tenant: 'globex' })
    const set = await gql('mutation { setQuota(kind: "ingest", limitPerDay: 250) { kind limitPerDay usedToday tenant } }', operator)
    expect(set.status).toBe(200)
    expect(await set.json()).toEqual({ data: { setQuota: { kind: 'ingest', limitPerDay: 250, usedToday: 0, tenant: 'globex' } } })
    const viewer = await cp.token({ sub: 'vic', roles: ['viewer'], tenant: 'globex' })
    const read = await gql('{ quotas { kind limitPerDay usedToday } }', viewer)
    expect(await read.json()).toEqual({ data: { quotas: [{ kind: 'ingest', limitPerDay: 250, usedToday: 0 }] } })
    const denied = (await (await gql('mutation { setQuota(kind: "ingest", limitPerDay: 1) { kind } }', viewer)).json()) as { data: unknown; errors: { message: string; extensions: { code: string } }[] }
    expect(denied.data).toBeNull()
    expect(denied.errors[0]!.extensions.code).toBe('FORBIDDEN')
    expect(denied.errors[0]!.message).toBe('Mutation.setQuota needs "admin.write": subject lacks the "admin.write" attribute')
    // The denied mutation changed nothing.
    expect(await (await gql('{ quotas { limitPerDay } }', viewer)).json()).toEqual({ data: { quotas: [{ limitPerDay: 250 }] } })
    const other = (await (await gql('mutation { setQuota(kind: "ingest", limitPerDay: 9, tenant: "acme") { kind } }', operator)).json()) as { errors: { extensions: { code: string } }[] }
    expect(other.errors[0]!.extensions.code).toBe('FORBIDDEN')
    const anon = await gql('{ quotas { kind } }', '')
    expect(anon.status).toBe(401)
    await oa.check(anon, 'POST', '/graphql')
    // setDlpPreset writes the caller's tenant's preset; the schema refuses a preset that does not exist.
    const preset = (await (await gql('mutation { setDlpPreset(preset: "tokenize_strict") }', operator)).json()) as { data: { setDlpPreset: number } }
    expect(preset.data.setDlpPreset).toBe(cp.store.head()!.version)
    expect((cp.store.head()!.document.dlp as { tenants: unknown }).tenants).toEqual({ globex: { preset: 'tokenize_strict' } })
    const unknown = (await (await gql('mutation { setDlpPreset(preset: "shred_everything") }', operator)).json()) as { errors: { extensions: { code: string; problems: string[] } }[] }
    expect(unknown.errors[0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', problems: [expect.stringMatching(/^dlp\.tenants\.globex\.preset: unknown DLP preset "shred_everything"/)] })
    const viewerPreset = (await (await gql('mutation { setDlpPreset(preset: "mask_basic") }', viewer)).json()) as { errors: { extensions: { code: string } }[] }
    expect(viewerPreset.errors[0]!.extensions.code).toBe('FORBIDDEN')
  })

  it('usage reports feed usedToday, statements (per day, signed) and budget alerts; duplicates count once', async () => {
    const proxy = await cp.token({ sub: 'proxy-a', roles: ['proxy'] })
    await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: json({ limitPerDay: 100 }) })
    const report = (seq: number, requests: number, at = new Date().toISOString()) => ({
      proxyId: 'p1',
      bootId: 'boot-1',
      seq,
      at,
      tenants: { acme: { requests, errors: 1, costUnits: requests * 2, rejections: { RATE_LIMITED: 3 }, bytesExported: 1000, dlpActions: { 'email:mask': 4 }, byKind: { graphql: requests } } },
    })
    const post = (body: unknown, token = proxy) => cp.api('/v1/usage', { method: 'POST', body: json(body), token })
    expect(await oa.check(await post(report(1, 50)), 'POST', '/v1/usage')).toEqual({ accepted: true, alerts: 0 })
    expect(await oa.check(await post(report(1, 50)), 'POST', '/v1/usage')).toEqual({ accepted: false, alerts: 0 }) // a retry
    expect(await oa.check(await post(report(2, 35)), 'POST', '/v1/usage')).toEqual({ accepted: true, alerts: 1 }) // 85 ≥ 80%
    expect(await oa.check(await post(report(3, 20)), 'POST', '/v1/usage')).toEqual({ accepted: true, alerts: 1 }) // 105 ≥ 100%
    // a late report (a proxy back after an outage) counts on its own day (within 35 days of now)
    const pastDay = new Date(Date.now() - 20 * 86_400_000).toISOString().slice(0, 10)
    expect(await oa.check(await post(report(4, 1, `${pastDay}T12:00:00Z`)), 'POST', '/v1/usage')).toMatchObject({ accepted: true })
    const bad = await post({ proxyId: 'p1', bootId: 'b', seq: 0, at: 'x', tenants: {} })
    expect(await oa.check(bad, 'POST', '/v1/usage')).toMatchObject({ status: 400, problems: ['seq: expected a positive integer'] })
    const admin403 = await post(report(9, 1), await cp.token({ roles: ['viewer'] }))
    expect(admin403.status).toBe(403)

    const quotas = (await oa.check(await cp.api('/v1/tenants/acme/quotas'), 'GET', '/v1/tenants/{id}/quotas')) as { items: { kind: string; usedToday: number }[] }
    expect(quotas.items.find((q) => q.kind === 'graphql')!.usedToday).toBe(105)

    const st = (await oa.check(await cp.api('/v1/tenants/acme/statement?from=2000-01-01&to=2099-12-31'), 'GET', '/v1/tenants/{id}/statement')) as {
      days: { day: string; requests: number }[]
      totals: { requests: number; errors: number; costUnits: number; rejections: Record<string, number>; bytesExported: number; dlpActions: Record<string, number> }
      signature: string
    }
    expect(st.days.map((d) => d.day)).toEqual([pastDay, new Date().toISOString().slice(0, 10)].sort())
    expect(st.totals).toMatchObject({ requests: 106, errors: 4, costUnits: 212, rejections: { RATE_LIMITED: 12 }, bytesExported: 4000, dlpActions: { 'email:mask': 16 } })
    const badRange = await cp.api('/v1/tenants/acme/statement?from=2026-13-01')
    expect(await oa.check(badRange, 'GET', '/v1/tenants/{id}/statement')).toMatchObject({ status: 400 })
    // a day the month does not have is no date (Date.parse rolled it over to March)
    const noSuchDay = await cp.api('/v1/tenants/acme/statement?from=2026-02-30')
    expect(await oa.check(noSuchDay, 'GET', '/v1/tenants/{id}/statement')).toMatchObject({ status: 400, problems: ['from: expected a date YYYY-MM-DD, got "2026-02-30"'] })
    const noTenant = await cp.api('/v1/tenants/nobody/statement')
    expect(await oa.check(noTenant, 'GET', '/v1/tenants/{id}/statement')).toMatchObject({ status: 404 })

    const alerts = (await oa.check(await cp.api('/v1/alerts?tenant=acme'), 'GET', '/v1/alerts')) as { items: { kind: string; detail: { threshold: number } }[] }
    expect(alerts.items.map((a) => a.kind).sort()).toEqual(['budget.100', 'budget.80'])
    // since: a date-time filters; anything else is a 400 naming it (it was read as "since 1970").
    const past = (await oa.check(await cp.api('/v1/alerts?tenant=acme&since=2020-01-01T00:00:00Z'), 'GET', '/v1/alerts')) as { items: unknown[] }
    expect(past.items).toHaveLength(2)
    const future = (await oa.check(await cp.api(`/v1/alerts?tenant=acme&since=${new Date(Date.now() + 3_600_000).toISOString()}`), 'GET', '/v1/alerts')) as { items: unknown[] }
    expect(future.items).toHaveLength(0)
    for (const since of ['garbage', '2026-01-01', '1700000000000', 'Tue, 01 Dec 2026 00:00:00 GMT', '2026-02-30T00:00:00Z']) {
      const bad = await cp.api(`/v1/alerts?tenant=acme&since=${encodeURIComponent(since)}`)
      expect(await oa.check(bad, 'GET', '/v1/alerts'), since).toMatchObject({ status: 400, problems: [expect.stringMatching(/^since: expected a date-time/)] })
    }
  })

  it('audit, versions, proxies, policies, signing key and health conform; detokenize is authorized and justified', async () => {
    const audit = (await oa.check(await cp.api('/v1/audit?limit=1000'), 'GET', '/v1/audit')) as { items: { actor: string; action: string; diff: unknown[] }[] }
    expect(audit.items.length).toBeGreaterThan(5)
    expect(audit.items.find((e) => e.action === 'tenants.put' && e.actor === 'acme-ops')).toMatchObject({ diff: [{ path: 'displayName', op: 'add', after: 'ACME' }] })
    expect(await oa.check(await cp.api('/v1/audit/verify'), 'GET', '/v1/audit/verify')).toMatchObject({ ok: true, problems: [] })
    const versions = (await oa.check(await cp.api('/v1/config/versions'), 'GET', '/v1/config/versions')) as { items: { version: number }[] }
    const oldest = versions.items.at(-1)!.version
    await oa.check(await cp.api(`/v1/config/versions/${oldest}`), 'GET', '/v1/config/versions/{version}')
    await oa.check(await cp.api('/v1/config/versions/99999'), 'GET', '/v1/config/versions/{version}')
    await oa.check(await cp.api('/v1/proxies'), 'GET', '/v1/proxies')
    const policies = (await oa.check(await cp.api('/v1/policies'), 'GET', '/v1/policies')) as { items: { name: string }[] }
    expect(policies.items.map((p) => p.name)).toContain('admin')
    expect(await oa.check(await cp.api('/v1/policies/admin/decide', { method: 'POST', body: json({ subject: { sub: 'x', roles: ['viewer'] }, action: 'admin.write', resource: { type: 'routes' } }) }), 'POST', '/v1/policies/admin/decide')).toEqual({
      allow: false,
      reason: 'subject lacks the "admin.write" attribute',
    })
    await oa.check(await fetch(`${cp.url}/v1/signing-key`), 'GET', '/v1/signing-key')
    await oa.check(await fetch(`${cp.url}/healthz`), 'GET', '/healthz')
    const operator = await cp.token({ roles: ['operator'] })
    const denied = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: json({ tokens: ['tok_1'] }), token: operator })
    expect(await oa.check(denied, 'POST', '/v1/dlp/detokenize')).toMatchObject({ status: 403 })
    const officer = await cp.token({ sub: 'dora', roles: ['dlp-officer'] })
    const unjustified = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: json({ tokens: ['tok_1'] }), token: officer })
    expect(await oa.check(unjustified, 'POST', '/v1/dlp/detokenize')).toMatchObject({ status: 403, detail: expect.stringContaining('justification') })
    // A real keyring and a token made by the DLP filter's tokenizer.
    const ringFile = join(cp.dir, 'dlp-keyring.json')
    ensureKeyringFile(ringFile)
    const ring = await new LocalKeyring(ringFile, { create: false }).load()
    const token = new Tokenizer(ring).tokenize('email', 'ada@example.com')
    await cp.api('/v1/dlp', { method: 'PUT', body: json({ keyring: { file: ringFile, create: false } }) })
    const justified = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: json({ tokens: [token, 'tok_1', `${token.slice(0, -2)}AA`] }), token: officer, headers: { 'x-justification': 'incident INC-2231' } })
    expect(await oa.check(justified, 'POST', '/v1/dlp/detokenize')).toEqual({
      values: { [token]: 'ada@example.com', tok_1: null, [`${token.slice(0, -2)}AA`]: null },
      errors: { tok_1: 'MALFORMED_TOKEN', [`${token.slice(0, -2)}AA`]: 'INVALID_TOKEN' },
    })
    const entry = ((await (await cp.api('/v1/audit?resource=dlp/tokens')).json()) as { items: { actor: string; after: { justification: string; revealed: number } }[] }).items.at(-1)!
    expect(entry).toMatchObject({ actor: 'dora', after: { justification: 'incident INC-2231', revealed: 1 } })
    expect(JSON.stringify(entry)).not.toContain('ada@example.com')
    const methodNotAllowed = await cp.api('/v1/audit', { method: 'DELETE' })
    expect(methodNotAllowed.status).toBe(405)
  })
})
