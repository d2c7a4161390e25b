// Tenant filter sweep 22h: JWT key files whose keys were not all used, and a query token with
// an encoded name. A PEM bundle (old key + new key during a rotation) verified with its first key
// only; a JWKS holding a private, broken or short RSA key loaded fine and then refused every
// token of that key as "token rejected" / "no key matches the token"; `?access%5Ftoken=` went
// past the RFC 6750 §2.3 check. Real proxy, real node:http backend, real tokens (jose), undici.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>
type KeyPair = ReturnType<typeof generateKeyPairSync>
const pem = (k: KeyPair) => k.publicKey.export({ type: 'spki', format: 'pem' }) as string

describe('tenant filter sweep 22h: JWT keys', () => {
  let backend: RawBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant22h-'))
  const oldKey = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const newKey = generateKeyPairSync('ed25519')
  const bundle = join(dir, 'bundle.pem')
  const doc = (jwt: Record<string, unknown>): Doc => ({
    tenants: { acme: {}, dflt: {} },
    routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'dflt', jwt: { algorithms: ['RS256', 'EdDSA'], required: false, ...jwt } }] as never }],
  })
  const full = (d: Doc) => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...d })
  const sign = (k: KeyPair, alg: string, kid?: string) =>
    new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg, ...(kid === undefined ? {} : { kid }) }).setExpirationTime('5m').sign(k.privateKey)

  async function post(path: string, token?: string) {
    const res = await request(`${p.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) }, body: '{"query":"{ hello }"}' })
    return { status: res.statusCode, json: (await res.body.json()) as { data?: { tenant?: string }; errors?: { message: string; extensions: { code: string } }[] } }
  }

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { tenant: req.headers['x-tenant-id'] } }))
      })
    })
    // openssl's "EC PARAMETERS" block beside a key is no key, and is passed over.
    writeFileSync(bundle, `${pem(oldKey)}-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n${pem(newKey)}`)
    p = await startTestProxy(doc({ publicKeyFile: bundle }))
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('a PEM file with several keys (a rotation) verifies tokens of each; a stranger is refused', async () => {
    for (const t of [await sign(oldKey, 'RS256'), await sign(newKey, 'EdDSA')]) {
      const r = await post('/graphql', t)
      expect(r.json.errors?.[0]?.message).toBeUndefined()
      expect(r.json.data?.tenant).toBe('acme')
    }
    const r = await post('/graphql', await sign(generateKeyPairSync('ed25519'), 'EdDSA'))
    expect(r.status).toBe(401)
    expect(r.json.errors?.[0]?.message).toBe('token signature does not verify')
  })

  it('a JWKS with a private, broken or short RSA signing key is refused at load, naming the key and never quoting it', async () => {
    const good = { ...(await exportJWK(newKey.publicKey)), kid: 'good' }
    const priv = await exportJWK(oldKey.privateKey)
    const short = generateKeyPairSync('rsa', { modulusLength: 1024 })
    const cases: [string, Record<string, unknown>, string][] = [
      ['private', { ...priv, kid: 'k-priv' }, 'key "k-priv" is a private key (a JWKS to verify tokens with holds public keys only)'],
      ['broken', { kty: 'RSA', e: 'AQAB', kid: 'k-bad', alg: 'RS256' }, 'key "k-bad" is not a valid RSA public key'],
      ['short', { ...(await exportJWK(short.publicKey)), kid: 'k-short' }, 'key "k-short" is an RSA key of 1024 bits (at least 2048)'],
    ]
    for (const [name, jwk, message] of cases) {
      const path = join(dir, `${name}.json`)
      writeFileSync(path, JSON.stringify({ keys: [good, jwk] }))
      const r = await p.applyConfig(full(doc({ jwksFile: path })))
      expect(r.ok, name).toBe(false)
      expect(r.error).toContain(`jwt.jwksFile "${path}": ${message}`)
      expect(r.error).not.toContain(String(priv.d).slice(0, 12))
    }
    // An encryption key is not looked at; the signing keys load and verify.
    const path = join(dir, 'ok.json')
    writeFileSync(path, JSON.stringify({ keys: [good, { ...(await exportJWK(short.publicKey)), kid: 'enc', use: 'enc' }] }))
    expect((await p.applyConfig(full(doc({ jwksFile: path })))).ok).toBe(true)
    expect((await post('/graphql', await sign(newKey, 'EdDSA', 'good'))).json.data?.tenant).toBe('acme')
    // Back to the bundle for the other cases.
    expect((await p.applyConfig(full(doc({ publicKeyFile: bundle })))).ok).toBe(true)
  })

  it('a PEM file with an RSA key too short for RS256 is refused at load', async () => {
    const path = join(dir, 'short.pem')
    writeFileSync(path, pem(generateKeyPairSync('rsa', { modulusLength: 1024 })))
    const r = await p.applyConfig(full(doc({ publicKeyFile: path })))
    expect(r.ok).toBe(false)
    expect(r.error).toContain(`jwt.publicKeyFile "${path}": key #1 is an RSA key of 1024 bits (at least 2048)`)
  })

  it('an access_token query parameter with a percent-encoded name is refused as the plain one is', async () => {
    const t = await sign(newKey, 'EdDSA')
    for (const q of ['access%5Ftoken', 'access_toke%6E', '%61ccess_token']) {
      const before = backend.requests.length
      const r = await post(`/graphql?${q}=${t}`)
      expect(r.status, q).toBe(400)
      expect(r.json.errors?.[0]?.message).toBe('a bearer token in the access_token query parameter is not accepted (send it in the authorization header)')
      expect(backend.requests.length).toBe(before)
    }
    // A query with other encoded parameters is still anonymous (the default tenant).
    expect((await post('/graphql?q=%7B%20hello%20%7D')).json.data?.tenant).toBe('dflt')
  })
})
