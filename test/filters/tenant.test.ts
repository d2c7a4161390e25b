import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'an-hmac-secret-of-at-least-32-characters!'
const dir = mkdtempSync(join(tmpdir(), 'igw-jwt-'))
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const ed = generateKeyPairSync('ed25519')
const rsaPem = join(dir, 'rsa.pem')
const jwksPath = join(dir, 'jwks.json')

const echoQuery = JSON.stringify({ query: '{ echo { header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { header: string | null } }; errors?: { message: string; extensions: { code: string } }[] }

async function gql(url: string, headers: Record<string, string>): Promise<{ status: number; body: Echo; headers: Record<string, unknown> }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: echoQuery })
  return { status: res.statusCode, body: (await res.body.json()) as Echo, headers: res.headers }
}

function token(alg: string, key: Parameters<SignJWT['sign']>[0], claims: Record<string, unknown>, opts: { exp?: string; kid?: string; iss?: string } = {}): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg, ...(opts.kid ? { kid: opts.kid } : {}) }).setIssuedAt().setExpirationTime(opts.exp ?? '5m')
  if (opts.iss) jwt.setIssuer(opts.iss)
  return jwt.sign(key)
}

describe('tenant filter', () => {
  let backend: DemoBackend
  let byHeader: TestProxy
  let byJwt: TestProxy

  beforeAll(async () => {
    writeFileSync(rsaPem, rsa.publicKey.export({ type: 'spki', format: 'pem' }))
    writeFileSync(jwksPath, JSON.stringify({ keys: [{ ...(await exportJWK(ed.publicKey)), kid: 'ed-1', alg: 'EdDSA' }] }))
    backend = await startDemoBackend()
    const tenants = { acme: { tier: 'gold' as const }, globex: { tier: 'bronze' as const }, anon: {} }
    byHeader = await startTestProxy({
      mode: 'ingress',
      tenants,
      routes: [
        { name: 'strict', match: { pathPrefix: '/strict' }, upstream: backend.url, filters: [{ name: 'tenant' }] },
        { name: 'lenient', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'anon' }] },
      ],
    })
    byJwt = await startTestProxy({
      tenants,
      routes: [
        {
          name: 'jwt',
          upstream: backend.url,
          filters: [{ name: 'tenant', jwt: { secret: SECRET, publicKeyFile: rsaPem, jwksFile: jwksPath, algorithms: ['HS256', 'RS256', 'EdDSA'], claim: 'org.tenant', issuer: 'https://auth.test/' } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await byHeader?.close()
    await byJwt?.close()
    await backend?.close()
  })

  it('takes the tenant from x-tenant-id and forwards it', async () => {
    const r = await gql(byHeader.url, { 'x-tenant-id': 'acme' })
    expect(r.status).toBe(200)
    expect(r.body.data?.echo.header).toBe('acme')
    expect(await byHeader.metricsText()).toMatch(/igw_requests_total\{route="lenient",status="200",tier="gold"\} [1-9]/)
  })

  it('unknown or missing tenant → 403 UNKNOWN_TENANT when there is no default', async () => {
    const res = await request(`${byHeader.url}/strict/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'evil' }, body: echoQuery })
    expect(res.statusCode).toBe(403)
    const body = (await res.body.json()) as Echo
    expect(body.errors?.[0]?.extensions.code).toBe('UNKNOWN_TENANT')
    expect(body.errors?.[0]?.message).toContain('evil')
    const none = await request(`${byHeader.url}/strict/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: echoQuery })
    expect(none.statusCode).toBe(403)
    await none.body.dump()
  })

  it('falls back to the default tenant, and the backend sees the resolved one, not the claimed one', async () => {
    const r = await gql(byHeader.url, { 'x-tenant-id': 'not-a-tenant' })
    expect(r.status).toBe(200)
    expect(r.body.data?.echo.header).toBe('anon')
  })

  it.each([
    ['HS256', () => new TextEncoder().encode(SECRET), undefined],
    ['RS256', () => rsa.privateKey, undefined],
    ['EdDSA', () => ed.privateKey, 'ed-1'],
  ] as const)('verifies %s tokens and takes the tenant from the claim', async (alg, key, kid) => {
    const jwt = await token(alg, key(), { org: { tenant: 'globex' } }, { kid, iss: 'https://auth.test/' })
    const r = await gql(byJwt.url, { authorization: `Bearer ${jwt}`, 'x-tenant-id': 'acme' })
    expect(r.status).toBe(200)
    expect(r.body.data?.echo.header).toBe('globex') // the header cannot override a verified claim
  })

  it.each([
    ['expired', async () => token('HS256', new TextEncoder().encode(SECRET), { org: { tenant: 'acme' } }, { exp: '-2m', iss: 'https://auth.test/' }), /expired/],
    ['wrong key', async () => token('HS256', new TextEncoder().encode('x'.repeat(40)), { org: { tenant: 'acme' } }, { iss: 'https://auth.test/' }), /signature/],
    ['wrong issuer', async () => token('HS256', new TextEncoder().encode(SECRET), { org: { tenant: 'acme' } }, { iss: 'https://evil/' }), /iss/],
    ['no tenant claim', async () => token('HS256', new TextEncoder().encode(SECRET), { sub: 'u' }, { iss: 'https://auth.test/' }), /org\.tenant/],
    ['garbage', async () => 'not.a.jwt', /malformed|rejected/],
  ])('%s token → 401 UNAUTHENTICATED with the reason', async (_name, make, reason) => {
    const r = await gql(byJwt.url, { authorization: `Bearer ${await make()}` })
    expect(r.status).toBe(401)
    expect(r.body.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED')
    expect(r.body.errors?.[0]?.message).toMatch(reason)
    expect(String(r.headers['www-authenticate'])).toMatch(/^Bearer realm="igw", error="invalid_token"/)
  })

  it('a required token that is missing → 401', async () => {
    const r = await gql(byJwt.url, { 'x-tenant-id': 'acme' })
    expect(r.status).toBe(401)
    expect(r.body.errors?.[0]?.message).toBe('missing bearer token')
  })

  it('logs the tenant but never the token', async () => {
    const jwt = await token('HS256', new TextEncoder().encode(SECRET), { org: { tenant: 'acme' } }, { iss: 'https://auth.test/' })
    await gql(byJwt.url, { authorization: `Bearer ${jwt}` })
    await new Promise((r) => setTimeout(r, 100))
    expect(byJwt.logs.find('access').some((l) => l.tenant === 'acme')).toBe(true)
    expect(byJwt.logs.raw.some((l) => l.includes(jwt))).toBe(false)
  })
})
