// Tenant / JWT sweep 25c. (1) Nothing counted JWT verifications: igw_jwt_verifications_total
// {route,result} now does, as Envoy's jwt_authn allowed/denied stats. (2) The invalid_token and
// invalid_request challenges lacked the realm the missing-token one sends (RFC 6750 §3). (3) A
// JWKS key whose "alg" its type cannot serve loaded and verified nothing; a private JWK marked
// "enc" (or without "verify" in key_ops) loaded. (4) Concurrent verifications of one token each
// checked its signature. Real proxy (supervisor + worker, merged /metrics), jose tokens, undici.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT, type JWK } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantJwtConfig } from '../../config/filters/tenant.ts'
import { JwtVerifier } from '../../filters/tenant/jwt-verifier.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'sweep25c-shared-secret-of-at-least-32-chars'
const KEY = new TextEncoder().encode(SECRET)
const AUD = 'igw-sweep25c'
const sign = (claims: Record<string, unknown>, opts: { key?: Uint8Array; exp?: string | number; aud?: string } = {}) =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setAudience(opts.aud ?? AUD)
    .setExpirationTime(opts.exp ?? '5m')
    .sign(opts.key ?? KEY)

describe('tenant sweep 25c: JWT verification metrics and challenges', () => {
  let backend: RawBackend
  let p: TestProxy
  const call = async (headers: Record<string, string | string[]>, path = '/graphql') => {
    const res = await request(`${p.url}${path}`, { headers })
    await res.body.dump()
    return { status: res.statusCode, challenge: res.headers['www-authenticate'] }
  }
  const metrics = async () => (await (await request(`${p.adminUrl}/metrics`)).body.text()) as string
  const count = (text: string, result: string) => metricSum(text, 'igw_jwt_verifications_total', `result="${result}"`)

  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    p = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'jwt25c', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'], audience: AUD } }] as never }],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
  })

  it('counts each request by result, cached outcomes included', async () => {
    const good = await sign({ tenant_id: 'acme' })
    const bearer = (t: string) => ({ authorization: `Bearer ${t}` })
    expect((await call(bearer(good))).status).toBe(200)
    expect((await call(bearer(good))).status).toBe(200) // from the cache: counted too
    expect((await call({})).status).toBe(401)
    expect((await call(bearer(await sign({ tenant_id: 'acme' }, { key: new TextEncoder().encode(`${SECRET}-other`) })))).status).toBe(401)
    expect((await call(bearer('not.a.jwt'))).status).toBe(401)
    expect((await call(bearer(await sign({ tenant_id: 'acme' }, { exp: Math.floor(Date.now() / 1000) - 3600 })))).status).toBe(401)
    expect((await call(bearer(await sign({ tenant_id: 'acme' }, { aud: 'someone-else' })))).status).toBe(401)
    expect((await call(bearer(await sign({ sub: 'no-tenant' })))).status).toBe(401)
    expect((await call({ authorization: [`Bearer ${good}`, `Bearer ${good}`] })).status).toBe(400)
    expect((await call(bearer(good), '/graphql?access_token=x')).status).toBe(400)

    const want = { ok: 2, missing: 1, invalid: 2, expired: 1, refused_claim: 2, invalid_request: 2 }
    await expect.poll(async () => {
      const text = await metrics()
      return Object.fromEntries(Object.keys(want).map((r) => [r, count(text, r)]))
    }, { timeout: 10_000 }).toEqual(want)
    expect(await metrics()).toContain('igw_jwt_verifications_total{route="jwt25c",result="ok"} 2')
  })

  it('every Bearer challenge names the realm the missing-token one does', async () => {
    expect((await call({})).challenge).toBe('Bearer realm="igw"')
    const forged = await sign({ tenant_id: 'acme' }, { key: new TextEncoder().encode(`${SECRET}-forged`) })
    expect((await call({ authorization: `Bearer ${forged}` })).challenge).toBe('Bearer realm="igw", error="invalid_token", error_description="token signature does not verify"')
    const good = await sign({ tenant_id: 'acme' })
    expect((await call({ authorization: [`Bearer ${good}`, `Bearer ${good}`] })).challenge).toBe('Bearer realm="igw", error="invalid_request"')
  })
})

describe('tenant sweep 25c: JWKS keys refused at load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant25c-'))
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  let n = 0
  const load = (keys: JWK[]) => {
    const path = join(dir, `jwks-${n++}.json`)
    writeFileSync(path, JSON.stringify({ keys }))
    return { path, build: () => new JwtVerifier(tenantJwtConfig.parse({ jwksFile: path, algorithms: ['RS256', 'ES256'] })) }
  }
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('a key whose "alg" its type cannot serve is refused, naming the file and the key', async () => {
    const rsaJwk = await exportJWK(rsa.publicKey)
    const ecJwk = await exportJWK(ec.publicKey)
    const mixed = load([{ ...ecJwk, kid: 'ec' }, { ...rsaJwk, kid: 'rsa-es', alg: 'ES256', use: 'sig' }])
    expect(mixed.build).toThrow(`jwt.jwksFile "${mixed.path}": key "rsa-es" has "alg" "ES256", which a key of type rsa cannot verify (it serves RS256, RS384, RS512, PS256, PS384, PS512)`)
    const curve = load([{ ...ecJwk, kid: 'p256', alg: 'ES384' }])
    expect(curve.build).toThrow(`key "p256" has "alg" "ES384", which a key of type ec on prime256v1 cannot verify (it serves ES256)`)
    const hmac = load([{ ...rsaJwk, alg: 'HS256' }])
    expect(hmac.build).toThrow('key #0 has "alg" "HS256", which a key of type rsa cannot verify')
    // Agreeing "alg" values, and ones that name no JWS (an encryption key without "use"), load.
    expect(load([{ ...rsaJwk, kid: 'a', alg: 'RS256' }, { ...rsaJwk, kid: 'b', alg: 'RSA-OAEP' }, { ...ecJwk, kid: 'c', alg: 'ES256' }]).build()).toBeInstanceOf(JwtVerifier)
  })

  it('a private key is refused whatever its use or key_ops', async () => {
    const priv = await exportJWK(rsa.privateKey)
    const pub = await exportJWK(ec.publicKey)
    const cases: [string, JWK][] = [
      ['enc', { use: 'enc' }],
      ['sign-only', { key_ops: ['sign'] }],
      ['decrypt', { use: 'enc', key_ops: ['decrypt'] }],
    ]
    for (const [kid, extra] of cases) {
      const f = load([{ ...pub, kid: 'ok' }, { ...priv, kid, ...extra }])
      expect(f.build, kid).toThrow(`jwt.jwksFile "${f.path}": key "${kid}" is a private key (a JWKS to verify tokens with holds public keys only)`)
    }
    // A public encryption key beside the signing ones still loads (it is skipped).
    expect(load([{ ...pub, kid: 'ok' }, { ...(await exportJWK(rsa.publicKey)), kid: 'enc', use: 'enc' }]).build()).toBeInstanceOf(JwtVerifier)
  })
})

describe('tenant sweep 25c: one verification per token in flight', () => {
  it('concurrent verifications of a token share one outcome; other tokens are their own', async () => {
    const v = new JwtVerifier(tenantJwtConfig.parse({ secret: SECRET, algorithms: ['HS256'] }))
    const a = await sign({ tenant_id: 'acme' })
    const b = await sign({ tenant_id: 'other' })
    const bad = await sign({ tenant_id: 'acme' }, { key: new TextEncoder().encode(`${SECRET}-bad`) })
    const [a1, a2, a3, b1, x1, x2] = await Promise.all([v.verify(a), v.verify(a), v.verify(a), v.verify(b), v.verify(bad), v.verify(bad)])
    expect(a1).toMatchObject({ ok: true, claims: { tenant_id: 'acme' } })
    // One jwtVerify answered all three: the very same outcome object.
    expect(a2).toBe(a1)
    expect(a3).toBe(a1)
    expect(b1).not.toBe(a1)
    expect(b1).toMatchObject({ ok: true, claims: { tenant_id: 'other' } })
    expect(x1).toMatchObject({ ok: false, kind: 'invalid', reason: 'token signature does not verify' })
    expect(x2).toBe(x1)
    // Settled: later calls are answered by the cache, and the same token verifies again fine.
    expect(v.cached(a)).toBe(a1)
    expect(await v.verify(a)).toBe(a1)
  })
})
