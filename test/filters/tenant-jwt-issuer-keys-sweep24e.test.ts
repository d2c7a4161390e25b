// Tenant / JWT sweep 24e. (1) Keys bound to an issuer (`jwt.keys[].issuer`): with several issuers
// under one list of keys, a token claiming issuer A was accepted when signed by issuer B's key —
// whoever held one IdP's key minted tokens "of" the other. (2) `forwardHeader` equal to
// `jwt.header` replaced the token toward the backend with the tenant. (3) A `defaultTenant` no
// config lists loaded, and anonymous traffic went on as that unlisted tenant. Real config
// validation, the real proxy, a real node:http backend, real tokens (jose), undici.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { TenantFilterConfig } from '../../config/filters/index.ts'
import { validateConfig } from '../../config/load.ts'
import { JwtVerifier } from '../../filters/tenant/jwt-verifier.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const A = 'https://idp-a.example.com/'
const B = 'https://idp-b.example.com/'
const C = 'https://idp-c.example.com/'
const SECRET_B = 'b'.repeat(40)
const SECRET_C = 'c'.repeat(40)

function replace(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text)
  renameSync(`${path}.tmp`, path)
}

function problem(doc: Record<string, unknown>): string | undefined {
  try {
    validateConfig({ listen: '127.0.0.1:0', ...doc })
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

describe('tenant sweep 24e: JWT keys bound to their issuer', () => {
  let backend: RawBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant24e-'))
  const keyA = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pemA = join(dir, 'a.pem')
  writeFileSync(pemA, keyA.publicKey.export({ type: 'spki', format: 'pem' }) as string)

  const rs = (iss: string) => new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'RS256' }).setIssuer(iss).setExpirationTime('5m').sign(keyA.privateKey)
  const hs = (iss: string, secret: string) => new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(iss).setExpirationTime('5m').sign(new TextEncoder().encode(secret))

  async function post(path: string, token: string) {
    const res = await request(`${p.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
    return { status: res.statusCode, json: (await res.body.json()) as { data?: { tenant?: string }; errors?: { message: string }[] } }
  }

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { tenant: req.headers['x-tenant-id'] } }))
      })
    })
    const jwt = { algorithms: ['RS256', 'HS256'] }
    p = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        // Each issuer with its own keys.
        { name: 'bound', match: { pathPrefix: '/bound' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { ...jwt, issuer: [A, B], keys: [{ issuer: A, publicKeyFile: pemA }, { issuer: B, secret: SECRET_B }] } }] as never },
        // Unbound keys beside a bound issuer: they serve the other issuers, never A.
        { name: 'mixed', match: { pathPrefix: '/mixed' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { ...jwt, secret: SECRET_C, keys: [{ issuer: A, publicKeyFile: pemA }] } }] as never },
        // No binding: as before, any configured key verifies a token of any listed issuer.
        { name: 'unbound', match: { pathPrefix: '/unbound' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { ...jwt, issuer: [A, B], publicKeyFile: pemA, secret: SECRET_B } }] as never },
      ],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it("a token is verified only with its issuer's keys", async () => {
    for (const t of [await rs(A), await hs(B, SECRET_B)]) {
      const r = await post('/bound', t)
      expect(r.json.errors?.[0]?.message).toBeUndefined()
      expect(r.json.data?.tenant).toBe('acme')
    }
    // Issuer B's key signing a token that claims A, and A's key one that claims B.
    for (const t of [await hs(A, SECRET_B), await rs(B)]) {
      const r = await post('/bound', t)
      expect(r.status).toBe(401)
      expect(r.json.data).toBeUndefined()
    }
    // An issuer no keys are bound to, with none unbound.
    const r = await post('/bound', await hs(C, SECRET_B))
    expect(r.status).toBe(401)
    expect(r.json.errors?.[0]?.message).toBe('token claim "iss" rejected: no keys are configured for this issuer')
  })

  it('unbound keys serve the issuers keys are not bound to, and never a bound one', async () => {
    expect((await post('/mixed', await rs(A))).json.data?.tenant).toBe('acme')
    expect((await post('/mixed', await hs(C, SECRET_C))).json.data?.tenant).toBe('acme')
    const forged = await post('/mixed', await hs(A, SECRET_C))
    expect(forged.status).toBe(401)
    expect(forged.json.data).toBeUndefined()
  })

  it('without keys[] every configured key still serves every listed issuer', async () => {
    for (const t of [await rs(A), await rs(B), await hs(A, SECRET_B), await hs(B, SECRET_B)]) {
      expect((await post('/unbound', t)).json.data?.tenant).toBe('acme')
    }
  })

  it('a bound key file that changes and does not load keeps its keys and sets igw_jwt_key_files_stale', async () => {
    const stale = async () => {
      await post('/bound', await rs(A)) // requests drive the key-file checks
      const text = await (await request(`${p.adminUrl}/metrics`)).body.text()
      return metricSum(text, 'igw_jwt_key_files_stale', 'route="bound"')
    }
    expect(await (await request(`${p.adminUrl}/metrics`)).body.text()).toContain('igw_jwt_key_files_stale{route="bound"} 0')
    const good = readFileSync(pemA, 'utf8')
    replace(pemA, 'not a key')
    await expect.poll(stale, { timeout: 10_000, interval: 200 }).toBe(1)
    expect((await post('/bound', await rs(A))).json.data?.tenant).toBe('acme')
    replace(pemA, good)
    await expect.poll(stale, { timeout: 10_000, interval: 200 }).toBe(0)
  })

  it('a bound issuer that jwt.issuer does not accept is refused at load, naming the path', () => {
    const msg = problem({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant', jwt: { issuer: A, keys: [{ issuer: B, secret: SECRET_B }] } }] }] })
    expect(msg).toContain('routes[0].filters[0].jwt.keys[0].issuer')
    expect(msg).toContain('not among jwt.issuer')
  })

  it('a bound key file that does not load names its place under jwt.keys', () => {
    const bad = join(dir, 'bad.pem')
    writeFileSync(bad, 'not a key')
    const cfg = validateConfig({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant', jwt: { keys: [{ issuer: B, secret: SECRET_B }, { issuer: A, publicKeyFile: bad }] } }] }] })
    const filter = cfg.routes[0]!.filters[0] as TenantFilterConfig
    expect(() => new JwtVerifier(filter.jwt!)).toThrow(`jwt.keys[1].publicKeyFile "${bad}": not a PEM public key`)
  })
})

describe('tenant sweep 24e: config checks of the tenant filter', () => {
  const route = (filter: Record<string, unknown>) => ({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant', ...filter }] }] })

  it('forwardHeader equal to jwt.header is refused, naming forwardHeader', () => {
    const msg = problem(route({ forwardHeader: 'Authorization', jwt: { secret: SECRET_B } }))
    expect(msg).toContain('routes[0].filters[0].forwardHeader')
    expect(msg).toContain('expected another header than jwt.header')
    expect(problem(route({ forwardHeader: 'x-org', jwt: { header: 'x-org', prefix: '', secret: SECRET_B } }))).toContain('routes[0].filters[0].forwardHeader')
    // Without jwt the tenant header and forwardHeader are the same by default.
    expect(problem(route({ header: 'authorization', forwardHeader: 'authorization' }))).toBeUndefined()
    expect(problem(route({ jwt: { secret: SECRET_B } }))).toBeUndefined()
  })

  it('a defaultTenant no config lists is refused, naming defaultTenant; allowUnlisted admits it', () => {
    const msg = problem(route({ defaultTenant: 'acmee' }))
    expect(msg).toContain('routes[0].filters[0].defaultTenant')
    expect(msg).toContain('expected a tenant listed under tenants (acme)')
    expect(problem(route({ defaultTenant: 'acme' }))).toBeUndefined()
    expect(problem(route({ defaultTenant: 'guest', allowUnlisted: true }))).toBeUndefined()
  })

})
