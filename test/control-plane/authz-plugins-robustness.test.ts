// Who can do what on the control plane, attacked through the real HTTP API with real tokens:
// token claims that must not widen a token's reach, a tenant-scoped caller reaching for other
// tenants' data, 401s that say why, and plugin uploads that try to take another publisher's name,
// re-publish a version under build metadata, or make every refusal a megabyte audit entry.
// One control plane on a real SQLite file; every test ends with the service still answering.
import { generateKeyPairSync } from 'node:crypto'
import { SignJWT, UnsecuredJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { metricSample, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage } from '../helpers/plugins.ts'

const acme = makePublisher('acme', 'acme-2026')
const mallory = makePublisher('mallory', 'mallory-1')

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane({ pluginTrust: parsePluginTrust({ keys: [acme.jwk, mallory.jwk] }, 'plugin-trust.json') })
})
afterAll(async () => {
  await cp?.close()
})

const json = (v: unknown) => JSON.stringify(v)
/** An HS256 token with exactly these claims (the test helper's mintToken only takes well-formed ones). */
const rawToken = (claims: Record<string, unknown>) =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(TEST_AUTH_SECRET))
const problem = async (r: Response) => ({ status: r.status, ...((await r.json()) as { detail?: string; reason?: string; problems?: string[] }) })
const gql = (query: string, token: string) => cp.api('/graphql', { method: 'POST', token, body: json({ query }), headers: { accept: 'application/json' } })
const stillServing = async () => expect((await cp.api('/v1/tenants')).status).toBe(200)
const scrape = async () => (await fetch(`${cp.metricsUrl}/metrics`)).text()

describe('tokens', () => {
  it.each<[string, unknown, string]>([
    ['an empty string', '', 'an empty string'],
    ['a number', 42, 'a number'],
    ['an array', ['acme'], 'an array'],
    ['null', null, 'null'],
  ])('a tenant claim that is %s is refused (401), not read as "no tenant" (which is every tenant)', async (_what, tenant, got) => {
    const token = await rawToken({ sub: 'eve', roles: ['admin'], tenant })
    const detail = `token "tenant" claim must be a non-empty string (got ${got}); a token without the claim is not tenant-scoped`
    // Before: 200 with the whole document, and writes to any tenant.
    expect(await problem(await cp.api('/v1/config', { token }))).toMatchObject({ status: 401, detail })
    expect(await problem(await cp.api('/v1/tenants/globex', { method: 'PUT', token, body: json({ tier: 'bronze' }) }))).toMatchObject({ status: 401, detail })
    const g = await gql('{ quotas(tenant: "globex") { kind } }', token)
    expect(g.status).toBe(401)
    expect(((await g.json()) as { errors: { message: string }[] }).errors[0]!.message).toBe(detail)
    expect((cp.store.head()!.document.tenants as Record<string, { tier: string }>).globex!.tier).toBe('silver')
    await stillServing()
  })

  it('a token in an algorithm no configured key verifies is a 401 naming the algorithm', async () => {
    const none = new UnsecuredJWT({ sub: 'eve', roles: ['admin'] }).setExpirationTime('1h').encode()
    expect(await problem(await cp.api('/v1/config', { token: none }))).toMatchObject({ status: 401, detail: 'token algorithm "none" is not accepted by the configured verification keys' })
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const rs256 = await new SignJWT({ sub: 'eve', roles: ['admin'] }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('1h').sign(privateKey)
    expect(await problem(await cp.api('/v1/config', { token: rs256 }))).toMatchObject({ status: 401, detail: 'token algorithm "RS256" is not accepted by the configured verification keys' })
    await stillServing()
  })

  it('the GraphQL endpoint\'s WWW-Authenticate stays a valid quoted string when the reason quotes a claim', async () => {
    const noSub = await new SignJWT({ roles: ['admin'] }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(TEST_AUTH_SECRET))
    const rest = await cp.api('/v1/config', { token: noSub })
    const g = await gql('{ __typename }', noSub)
    expect(g.status).toBe(401)
    // RFC 6750 §3: error_description excludes '"'; REST already said it this way.
    expect(g.headers.get('www-authenticate')).toBe(`Bearer error="invalid_token", error_description="token has no 'sub' claim"`)
    expect(g.headers.get('www-authenticate')).toBe(rest.headers.get('www-authenticate'))
  })
})

describe('tenant scope', () => {
  it('GET /v1/alerts?tenant= (empty) lists only the caller\'s tenant for a tenant-scoped token', async () => {
    const proxy = await cp.token({ sub: 'proxy-a', roles: ['proxy'] })
    for (const tenant of ['acme', 'globex']) {
      expect((await cp.api(`/v1/tenants/${tenant}/quotas/graphql`, { method: 'PUT', body: json({ limitPerDay: 100 }) })).status).toBe(201)
    }
    const report = { proxyId: 'p-alerts', bootId: 'b1', seq: 1, at: new Date().toISOString(), tenants: { acme: { requests: 85, byKind: { graphql: 85 } }, globex: { requests: 90, byKind: { graphql: 90 } } } }
    expect(await (await cp.api('/v1/usage', { method: 'POST', token: proxy, body: json(report) })).json()).toMatchObject({ accepted: true, alerts: 2 })

    const acmeViewer = await cp.token({ sub: 'acme-viewer', roles: ['viewer'], tenant: 'acme' })
    const list = async (query: string, token?: string) => ((await (await cp.api(`/v1/alerts${query}`, token === undefined ? {} : { token })).json()) as { items: { tenant: string }[] }).items.map((a) => a.tenant)
    expect(await list('', acmeViewer)).toEqual(['acme'])
    // Before: the policy saw tenant "acme" (the empty value fell back to the claim), the query saw "" and listed everyone's.
    expect(await list('?tenant=', acmeViewer)).toEqual(['acme'])
    expect((await cp.api('/v1/alerts?tenant=globex', { token: acmeViewer })).status).toBe(403)
    // An unscoped caller's empty filter is no filter.
    expect((await list('?tenant=')).sort()).toEqual(['acme', 'globex'])
    await stillServing()
  })
})

describe('plugin uploads', () => {
  const upload = (body: unknown, token?: string) => cp.api('/v1/plugins', { method: 'POST', body: typeof body === 'string' ? body : json(body), ...(token === undefined ? {} : { token }) })
  const auditOf = async (resource: string) => ((await (await cp.api(`/v1/audit?resource=${encodeURIComponent(resource)}&limit=1000`)).json()) as { items: { action: string; after: Record<string, unknown> }[] }).items

  it('a name belongs to its first publisher: another trusted publisher cannot add versions of it (409)', async () => {
    const publisherToken = await cp.token({ sub: 'ci', roles: ['plugin-publisher'] })
    expect((await upload(signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact: Buffer.from('acme geo 1.0.0') }), publisherToken)).status).toBe(201)
    // mallory's key is trusted for mallory, and the signature is valid — but the name is acme's.
    for (const version of ['2.0.0', '1.0.1']) {
      const r = await upload(signedPackage(mallory, { name: 'geo-enrich', version, artifact: Buffer.from('mallory geo') }), publisherToken)
      expect(await problem(r)).toMatchObject({
        status: 409,
        detail: `plugin geo-enrich is published by "acme"; "mallory" cannot publish versions of it (a plugin name belongs to the publisher who first published it: choose another name)`,
      })
    }
    // acme keeps its name (before: mallory's 1.0.1 would have taken acme's next version for good).
    expect((await upload(signedPackage(acme, { name: 'geo-enrich', version: '1.0.1', artifact: Buffer.from('acme geo 1.0.1') }), publisherToken)).status).toBe(201)
    const listed = ((await (await cp.api('/v1/plugins?name=geo-enrich')).json()) as { items: { version: string; publisher: string }[] }).items
    expect(listed.map((p) => `${p.publisher}/${p.version}`)).toEqual(['acme/1.0.0', 'acme/1.0.1'])
    expect((await upload(signedPackage(mallory, { name: 'mallory-geo', version: '2.0.0', artifact: Buffer.from('mallory geo') }), publisherToken)).status).toBe(201)
    await stillServing()
  })

  it('a version differing only in build metadata is the same version: 409, the stored artifact stays', async () => {
    expect((await upload(signedPackage(acme, { name: 'rates', version: '3.1.0', artifact: Buffer.from('rates 3.1.0') }))).status).toBe(201)
    const r = await upload(signedPackage(acme, { name: 'rates', version: '3.1.0+rebuilt', artifact: Buffer.from('rates 3.1.0, another artifact') }))
    const p = await problem(r)
    expect(p).toMatchObject({ status: 409 })
    expect(p.detail).toMatch(/^plugin rates@3\.1\.0\+rebuilt is version 3\.1\.0, which exists as rates@3\.1\.0 \(sha256:[0-9a-f]{64}\); build metadata does not make a new version/)
    const listed = ((await (await cp.api('/v1/plugins?name=rates')).json()) as { items: { version: string }[] }).items
    expect(listed.map((i) => i.version)).toEqual(['3.1.0'])
    // A pre-release is another version.
    expect((await upload(signedPackage(acme, { name: 'rates', version: '3.1.1-rc.1', artifact: Buffer.from('rates rc') }))).status).toBe(201)
  })

  it('a package with thousands of long unknown keys is refused in a bounded answer, log and audit entry', async () => {
    const pkg: Record<string, unknown> = signedPackage(acme, { name: 'keys-bomb', version: '1.0.0', artifact: Buffer.from('x') })
    for (let i = 0; i < 2000; i++) pkg[`${'k'.repeat(1000)}${i}`] = 1
    const before = metricSample(await scrape(), 'igw_plugin_upload_rejections_total', { reason: 'malformed' }) ?? 0
    const r = await upload(pkg)
    const text = await r.text()
    expect(r.status).toBe(400)
    // Before: a 2 MB answer, and a 2 MB entry kept for good in the signed audit log.
    expect(text.length).toBeLessThan(2_000)
    const p = JSON.parse(text) as { detail: string; reason: string }
    expect(p.reason).toBe('malformed')
    expect(p.detail).toMatch(/^malformed plugin package: \(root\): unknown keys "k{63}…", "k{63}…", "k{63}…", "k{63}…", "k{63}…" and 1995 more$/)
    const [entry] = await auditOf('plugins/keys-bomb@1.0.0')
    expect(entry!.action).toBe('plugins.reject')
    expect(JSON.stringify(entry!.after).length).toBeLessThan(2_000)
    expect(metricSample(await scrape(), 'igw_plugin_upload_rejections_total', { reason: 'malformed' })).toBe(before + 1)
    await stillServing()
  })

  it('a NUL in the description is a malformed package (400 naming it, audited, counted), not a bare database refusal', async () => {
    const before = metricSample(await scrape(), 'igw_plugin_upload_rejections_total', { reason: 'malformed' }) ?? 0
    const r = await upload({ ...signedPackage(acme, { name: 'nul-desc', version: '1.0.0', artifact: Buffer.from('x') }), description: 'geo\u0000enrich' })
    expect(await problem(r)).toMatchObject({ status: 400, reason: 'malformed', detail: expect.stringMatching(/^malformed plugin package: description: must not contain a NUL character \(U\+0000\), got "geo\\u0000enrich"$/) })
    expect((await auditOf('plugins/nul-desc@1.0.0')).map((e) => [e.action, e.after.reason])).toEqual([['plugins.reject', 'malformed']])
    expect(metricSample(await scrape(), 'igw_plugin_upload_rejections_total', { reason: 'malformed' })).toBe(before + 1)
    expect(((await (await cp.api('/v1/plugins?name=nul-desc')).json()) as { items: unknown[] }).items).toEqual([])
  })
})

describe('secrets in the document are for those who may change them', () => {
  const JWT_SECRET = 'tenant-jwt-secret-0123456789abcdefghijkl'
  const HOOK_TOKEN = 'hook-bearer-token-s3cr3t'
  const HOOK_PASSWORD = 'hook-url-password-xyz'

  it('a viewer reads the document, sections, filters and audit with every secret redacted; a writer reads them whole', async () => {
    const put1 = await cp.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: json({ jwt: { secret: JWT_SECRET, claim: 'tenant' } }) })
    expect(put1.status).toBe(200)
    const put2 = await cp.api('/v1/alert-sinks', { method: 'PUT', body: json({ webhook: { url: `https://ops:${HOOK_PASSWORD}@hooks.example/igw`, headers: { authorization: `Bearer ${HOOK_TOKEN}` } } }) })
    expect(put2.status).toBe(200)
    const viewer = await cp.token({ sub: 'vic', roles: ['viewer'] })
    const reads = ['/v1/config', '/v1/routes/graphql/filters/tenant', '/v1/alert-sinks', `/v1/config/versions/${cp.store.head()!.version}`, '/v1/audit?limit=1000', '/v1/routes', '/v1/routes/graphql']
    for (const path of reads) {
      const r = await cp.api(path, { token: viewer })
      expect(r.status, path).toBe(200)
      const text = await r.text()
      for (const secret of [JWT_SECRET, HOOK_TOKEN, HOOK_PASSWORD]) expect(text, `${path} shows a secret to a viewer`).not.toContain(secret)
      expect(text, path).toContain('[redacted]')
    }
    // the audit entries a viewer got say they were redacted (their hashes no longer match)
    const audit = (await (await cp.api('/v1/audit?limit=1000', { token: viewer })).json()) as { items: { action: string; redacted?: boolean }[] }
    expect(audit.items.filter((e) => e.redacted).length).toBeGreaterThanOrEqual(2)
    expect(audit.items.filter((e) => !e.redacted).length).toBeGreaterThan(0) // entries without secrets are left as they are
    // a writer (operator) reads what it may change, whole: a read-modify-write keeps the secret
    const operator = await cp.token({ sub: 'olga', roles: ['operator'] })
    const whole = (await (await cp.api('/v1/routes/graphql/filters/tenant', { token: operator })).json()) as { config: { jwt: { secret: string } } }
    expect(whole.config.jwt.secret).toBe(JWT_SECRET)
    expect(await (await cp.api('/v1/config', { token: operator })).text()).toContain(HOOK_TOKEN)
    await stillServing()
  })
})
