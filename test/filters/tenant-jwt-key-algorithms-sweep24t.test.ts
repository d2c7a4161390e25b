// Tenant / JWT sweep 24t: keys that no configured algorithm can use, caught at load (and at a key
// file's reload) instead of refusing every token. (1) A PEM key jose verifies nothing with (Ed448,
// secp256k1, X25519) loaded — Ed448 even counted as EdDSA. (2) A JWKS key naming its "alg"
// (PS256) was counted for every RSA algorithm, so it passed the check against the default
// RS256; and a key whose key_ops leave out "verify" was checked as a signing key. (3) One issuer's
// usable keys let another issuer's unusable ones load. (4) A key file rewritten with keys none of
// jwt.algorithms verify replaced the working keys, silently. Real proxy, reloads, key files,
// jose-signed tokens, undici.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { validateConfig } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>
type KeyPair = ReturnType<typeof generateKeyPairSync>
const pem = (k: KeyPair) => k.publicKey.export({ type: 'spki', format: 'pem' }) as string
const A = 'https://idp-a.example.com/'
const B = 'https://idp-b.example.com/'

function replace(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text)
  renameSync(`${path}.tmp`, path)
}

describe('tenant sweep 24t: JWT keys against jwt.algorithms', () => {
  let backend: RawBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant24t-'))
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const rsaPem = join(dir, 'rsa.pem')
  const live = join(dir, 'live.pem')
  const doc = (jwt: Record<string, unknown>): Doc => ({
    tenants: { acme: {} },
    routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt }] as never }],
  })
  const full = (d: Doc) => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...d })
  const apply = (jwt: Record<string, unknown>) => p.applyConfig(full(doc(jwt)))
  const call = async (token: string) => {
    const res = await request(`${p.url}/graphql`, { headers: { authorization: `Bearer ${token}` } })
    const body = (await res.body.json()) as { headers?: Record<string, string>; errors?: { message: string }[] }
    return { status: res.statusCode, tenant: body.headers?.['x-tenant-id'], message: body.errors?.[0]?.message }
  }
  const rs256 = () => new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('5m').sign(rsa.privateKey)

  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    writeFileSync(rsaPem, pem(rsa))
    writeFileSync(live, pem(rsa))
    p = await startTestProxy(doc({ publicKeyFile: live, algorithms: ['RS256'] }))
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('a PEM key no JWS algorithm verifies (Ed448, secp256k1, X25519) is refused at load, naming it', async () => {
    for (const [name, key, kind] of [
      ['ed448', generateKeyPairSync('ed448'), 'of type ed448'],
      ['k1', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }), 'of type ec on secp256k1'],
      ['x25519', generateKeyPairSync('x25519'), 'of type x25519'],
    ] as const) {
      const path = join(dir, `${name}.pem`)
      // Beside a good key too: the file is the operator's mistake either way.
      writeFileSync(path, `${pem(rsa)}${pem(key)}`)
      const r = await apply({ publicKeyFile: path, algorithms: ['RS256', 'EdDSA'] })
      expect(r.ok, name).toBe(false)
      expect(r.error).toContain(`jwt.publicKeyFile "${path}": key #2 is ${kind}, which no JWS algorithm of this gateway verifies`)
    }
  })

  it('a JWKS key that names its "alg" counts for that algorithm only', async () => {
    const jwk = await exportJWK(rsa.publicKey)
    const ps = join(dir, 'ps.json')
    writeFileSync(ps, JSON.stringify({ keys: [{ ...jwk, kid: 'k1', alg: 'PS256', use: 'sig' }] }))
    // Under the default algorithms (RS256, EdDSA, HS256) every PS256 token would be refused.
    const r = await apply({ jwksFile: ps })
    expect(r.ok).toBe(false)
    expect(r.error).toContain('jwt.algorithms (RS256, EdDSA, HS256) verify none of the configured keys, which verify PS256: every token would be refused')
    expect(await apply({ jwksFile: ps, algorithms: ['PS256'] })).toMatchObject({ ok: true })
    const t = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'PS256', kid: 'k1' }).setExpirationTime('5m').sign(rsa.privateKey)
    expect(await call(t)).toMatchObject({ status: 200, tenant: 'acme' })
  })

  it('a JWKS key whose key_ops leave out "verify" (a short RSA key to wrap keys with) is not refused as a signing key', async () => {
    const jwk = await exportJWK(rsa.publicKey)
    const short = await exportJWK(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey)
    const ops = join(dir, 'ops.json')
    writeFileSync(ops, JSON.stringify({ keys: [{ ...jwk, kid: 'k1' }, { ...short, kid: 'wrap', key_ops: ['encrypt', 'wrapKey'] }] }))
    expect(await apply({ jwksFile: ops, algorithms: ['RS256'] })).toMatchObject({ ok: true })
  })

  it("each issuer's keys must fit jwt.algorithms on their own", async () => {
    const ecPem = join(dir, 'ec.pem')
    writeFileSync(ecPem, pem(ec))
    const r = await apply({ algorithms: ['RS256'], keys: [{ issuer: A, publicKeyFile: ecPem }, { issuer: B, publicKeyFile: rsaPem }] })
    expect(r.ok).toBe(false)
    expect(r.error).toContain(`jwt.algorithms (RS256) verify none of the keys of jwt.keys[0], which verify ES256: every token of issuer "${A}" would be refused`)
    expect(await apply({ algorithms: ['RS256', 'ES256'], keys: [{ issuer: A, publicKeyFile: ecPem }, { issuer: B, publicKeyFile: rsaPem }] })).toMatchObject({ ok: true })
  })

  it('a key file rewritten with keys none of jwt.algorithms verify keeps the previous keys and is reported stale', async () => {
    expect(await apply({ publicKeyFile: live, algorithms: ['RS256'] })).toMatchObject({ ok: true })
    const stale = async () => {
      await call(await rs256()) // requests drive the key-file checks
      return metricSum(await (await request(`${p.adminUrl}/metrics`)).body.text(), 'igw_jwt_key_files_stale', 'route="r"')
    }
    expect(await call(await rs256())).toMatchObject({ status: 200, tenant: 'acme' })
    replace(live, pem(ec))
    await expect.poll(stale, { timeout: 10_000, interval: 200 }).toBe(1)
    // The RS256 key stays in use, and the log says why the file did not load.
    expect(await call(await rs256())).toMatchObject({ status: 200, tenant: 'acme' })
    const warned = () => p.logs.find('tenant: a changed JWT key file cannot be loaded; the previous keys stay in use').map((l) => (l.err as { message: string }).message)
    await expect.poll(warned, { timeout: 10_000 }).toContain(`jwt.publicKeyFile "${live}": its keys verify ES256, none of jwt.algorithms (RS256): every token would be refused`)
    replace(live, `${pem(ec)}${pem(rsa)}`)
    await expect.poll(stale, { timeout: 10_000, interval: 200 }).toBe(0)
    expect(await call(await rs256())).toMatchObject({ status: 200, tenant: 'acme' })
  })
})
