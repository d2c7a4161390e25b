// Tenant filter sweep 19: JWKS key selection by "kid" as Envoy's jwt_authn does it, and the 401's
// reason when several kinds of key are configured. Real proxy, real graphql-yoga backend, real
// tokens (jose), undici.
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const echoQuery = JSON.stringify({ query: '{ echo { header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { header: string | null } }; errors?: { message: string; extensions: { code: string } }[] }

async function gql(url: string, token: string): Promise<{ status: number; challenge: unknown; body: Echo }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: echoQuery })
  return { status: res.statusCode, challenge: res.headers['www-authenticate'], body: (await res.body.json()) as Echo }
}

describe('tenant filter sweep 19: JWT keys', () => {
  let backend: DemoBackend
  const proxies: TestProxy[] = []
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant19-'))
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ed = generateKeyPairSync('ed25519')
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const hmac = randomBytes(32)

  beforeAll(async () => {
    backend = await startDemoBackend()
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await backend?.close()
  })

  const start = async (jwt: Record<string, unknown>) => {
    const p = await startTestProxy({ tenants: { acme: { tier: 'gold' } }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt }] as never }] })
    proxies.push(p)
    return p
  }
  const rs256 = (key: ReturnType<typeof generateKeyPairSync>['privateKey'], kid?: string) =>
    new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'RS256', ...(kid === undefined ? {} : { kid }) }).setExpirationTime('5m').sign(key)

  it('a JWKS key without "kid" verifies tokens that name a kid (as Envoy tries kid-less keys); a kid of another key never does', async () => {
    // A JWKS made from a PEM, or written for Envoy's local_jwks, often has no "kid"; issuers
    // (Keycloak, Auth0, Azure AD, most libraries) stamp one on every token. Envoy tries every key
    // whose kid is unset; jose matches kids only to keys that carry the same: every such token
    // was refused "no key matches the token", although the same key as publicKeyFile verified it.
    const path = join(dir, 'kidless.json')
    // Two kid-less RSA keys (a rotation): both fit, each is tried.
    const previous = generateKeyPairSync('rsa', { modulusLength: 2048 })
    writeFileSync(path, JSON.stringify({ keys: [{ ...(await exportJWK(previous.publicKey)), alg: 'RS256' }, { ...(await exportJWK(rsa.publicKey)), alg: 'RS256', use: 'sig' }, { ...(await exportJWK(ed.publicKey)), kid: 'ed-1' }] }))
    const p = await start({ jwksFile: path, algorithms: ['RS256', 'EdDSA'] })
    for (const t of [await rs256(rsa.privateKey, 'rotated-2026'), await rs256(rsa.privateKey), await rs256(previous.privateKey, 'rotated-2025')]) {
      const r = await gql(p.url, t)
      expect(r.body.errors?.[0]?.message).toBeUndefined()
      expect(r.status).toBe(200)
      expect(r.body.data?.echo.header).toBe('acme')
    }
    // A key with a kid still serves only its own: an Ed25519 token naming another kid is refused.
    const edOther = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'ed-2' }).setExpirationTime('5m').sign(ed.privateKey)
    const refused = await gql(p.url, edOther)
    expect(refused.status).toBe(401)
    expect(refused.body.errors?.[0]?.message).toBe('no key matches the token')
    const edOwn = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'ed-1' }).setExpirationTime('5m').sign(ed.privateKey)
    expect((await gql(p.url, edOwn)).status).toBe(200)
    // A stranger's token naming some kid is tried against the kid-less key and refused.
    const s = await gql(p.url, await rs256(stranger.privateKey, 'rotated-2026'))
    expect(s.status).toBe(401)
    expect(s.body.errors?.[0]?.message).toBe('token signature does not verify')
  })

  it('with a secret configured too, an RS256 token is refused for what is wrong with it, not as "token rejected"', async () => {
    // The keys are tried in turn (JWKS, public key, secret). The secret cannot verify an RS256
    // token at all (a key-type mismatch): that last try replaced the real reason — a stranger's
    // signature, or a kid the JWKS lacks (the rotation not yet on disk) — with "token rejected".
    const pem = join(dir, 'pub.pem')
    writeFileSync(pem, rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string)
    const jwks = join(dir, 'with-kid.json')
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(rsa.publicKey)), alg: 'RS256', kid: 'k1' }] }))
    const secret = 's'.repeat(40)
    const withPem = await start({ publicKeyFile: pem, secret, algorithms: ['RS256', 'HS256'] })
    const a = await gql(withPem.url, await rs256(stranger.privateKey))
    expect(a.status).toBe(401)
    expect(a.body.errors?.[0]?.message).toBe('token signature does not verify')
    expect(a.challenge).toBe('Bearer realm="igw", error="invalid_token", error_description="token signature does not verify"')
    expect((await gql(withPem.url, await rs256(rsa.privateKey))).status).toBe(200)

    const withJwks = await start({ jwksFile: jwks, secret, algorithms: ['RS256', 'HS256'] })
    const b = await gql(withJwks.url, await rs256(rsa.privateKey, 'k2'))
    expect(b.status).toBe(401)
    expect(b.body.errors?.[0]?.message).toBe('no key matches the token')
    expect((await gql(withJwks.url, await rs256(rsa.privateKey, 'k1'))).status).toBe(200)
    // An HS256 token still verifies with the secret after the JWKS found no key for it.
    const hs = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(secret))
    expect((await gql(withJwks.url, hs)).status).toBe(200)
  })

  it('an HS256 token where only public keys are configured (algorithm confusion) is refused naming the algorithm', async () => {
    // An attacker signs HS256 with the PEM text of the public key as the HMAC secret. Refused
    // (jose never uses a public key as an HMAC secret) — said as "token rejected", which tells
    // the operator nothing; it is a token of an algorithm no configured key can verify.
    const pemText = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string
    const pem = join(dir, 'pub-only.pem')
    writeFileSync(pem, pemText)
    const p = await start({ publicKeyFile: pem, algorithms: ['RS256', 'HS256'] })
    const forged = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(pemText))
    const r = await gql(p.url, forged)
    expect(r.status).toBe(401)
    expect(r.body.errors?.[0]?.message).toBe('no key matches the token')
  })
})
