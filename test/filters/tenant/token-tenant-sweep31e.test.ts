// Tenant / JWT sweep 31e. (1) Refusals logged nothing but the access line's code: the reason
// (which kid, which issuer) reached the client alone. (2) Key files were looked at again on the wall
// clock: stepped back, the look stopped until it caught up (new kids refused, removed ones kept).
// (3) An empty tenant claim was called missing.
// Real proxy (supervisor + worker), real node:http backend, jose tokens, undici.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT, type JWK } from 'jose'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { tenantJwtConfig } from '../../../config/filters/tenant.ts'
import { JwtVerifier } from '../../../filters/tenant/jwt-verifier.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const SECRET = 'sweep31e-shared-secret-of-at-least-32-chars'
const KEY = new TextEncoder().encode(SECRET)
const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}, key = KEY) =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256', ...header }).setExpirationTime('5m').sign(key)

type Reply = { status: number; tenant?: string; code?: string; message?: string }

describe('tenant sweep 31e: refusals are logged, an empty claim is named', () => {
  let backend: RawBackend
  let p: TestProxy
  const hs = { secret: SECRET, algorithms: ['HS256'] }

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { tenant: req.headers['x-tenant-id'] } }))
      })
    })
    p = await startTestProxy({
      log: { level: 'debug' },
      tenants: { acme: {}, dflt: {} },
      routes: [
        { name: 'req31e', match: { pathPrefix: '/required' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'dflt', jwt: hs }] as never },
        { name: 'opt31e', match: { pathPrefix: '/optional' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'dflt', jwt: { ...hs, required: false } }] as never },
        { name: 'unl31e', match: { pathPrefix: '/unlisted' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'dflt', allowUnlisted: true, jwt: hs }] as never },
        { name: 'hdr31e', match: { pathPrefix: '/header' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'dflt' }] as never },
      ],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
  })

  async function post(path: string, headers: Record<string, string | string[]>): Promise<Reply> {
    const res = await request(`${p.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"query":"{ hello }"}' })
    const json = (await res.body.json()) as { data?: { tenant?: string }; errors?: { message: string; extensions: { code: string } }[] }
    return { status: res.statusCode, tenant: json.data?.tenant, code: json.errors?.[0]?.extensions.code, message: json.errors?.[0]?.message }
  }
  const bearer = async (claims: Record<string, unknown>) => ({ authorization: `Bearer ${await sign(claims)}` })

  it('an empty tenant claim is said to be empty, not missing', async () => {
    expect(await post('/required/graphql', await bearer({ tenant_id: '' }))).toEqual({ status: 401, code: 'UNAUTHENTICATED', message: 'token claim "tenant_id" is empty' })
  })

  it('logs each refusal at debug with its reason (and the kid, alg and issuer a refused token names), never the token', async () => {
    const forged = await sign({ tenant_id: 'acme', iss: 'https://idp.example/' }, { kid: 'k-2026' }, new TextEncoder().encode(`${SECRET}-forged`))
    expect((await post('/required/graphql', { authorization: `Bearer ${forged}`, 'x-request-id': 'req-31e-forged' })).status).toBe(401)
    const unknown = await sign({ tenant_id: 'acme' }, { alg: 'HS512' })
    expect((await post('/required/graphql', { authorization: `Bearer ${unknown}`, 'x-request-id': 'req-31e-unknown' })).status).toBe(401)
    expect((await post('/required/graphql', { authorization: [`Bearer ${unknown}`, `Bearer ${unknown}`], 'x-request-id': 'req-31e-twice' })).status).toBe(400)
    const line = (id: string) => p.logs.find('tenant: request refused').find((l) => l.reqId === id)
    await expect.poll(() => line('req-31e-twice'), { timeout: 10_000 }).toBeDefined()
    expect(line('req-31e-forged')).toMatchObject({ level: 'debug', route: 'req31e', jwt: { result: 'invalid', reason: 'token signature does not verify', kid: 'k-2026', alg: 'HS256', iss: 'https://idp.example/' } })
    expect(line('req-31e-unknown')).toMatchObject({ route: 'req31e', jwt: { result: expect.any(String), alg: 'HS512' } })
    expect(line('req-31e-twice')).toMatchObject({ jwt: { result: 'invalid_request', reason: 'several authorization headers (send one bearer token)' } })
    expect(p.logs.raw.some((l) => l.includes(forged) || l.includes(unknown))).toBe(false)
  })
})

describe('tenant sweep 31e: key files followed across a wall clock stepped back', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant31e-'))
  const path = join(dir, 'jwks.json')
  const k1 = generateKeyPairSync('ed25519')
  const k2 = generateKeyPairSync('ed25519')
  const jwk = async (k: typeof k1, kid: string): Promise<JWK> => ({ ...(await exportJWK(k.publicKey)), kid, alg: 'EdDSA', use: 'sig' })
  const ed = (k: typeof k1, kid: string) => new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid }).setExpirationTime('5m').sign(k.privateKey)

  afterEach(() => {
    vi.useRealTimers()
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('a new kid verifies within about a second after an NTP step of an hour back', async () => {
    writeFileSync(path, JSON.stringify({ keys: [await jwk(k1, 'k1')] }))
    const v = new JwtVerifier(tenantJwtConfig.parse({ jwksFile: path, algorithms: ['EdDSA'] }))
    expect((await v.verify(await ed(k1, 'k1'))).ok).toBe(true)
    // The wall clock alone steps back (timers and the monotonic clock run on).
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.now() - 3_600_000)
    writeFileSync(path, JSON.stringify({ keys: [await jwk(k2, 'k2')] }))
    const t2 = await ed(k2, 'k2')
    const t1 = await ed(k1, 'k1')
    await new Promise((r) => setTimeout(r, 1_300))
    expect(await v.verify(t2)).toMatchObject({ ok: true })
    expect(await v.verify(t1)).toMatchObject({ ok: false, reason: 'no key matches the token' })
  })
})
