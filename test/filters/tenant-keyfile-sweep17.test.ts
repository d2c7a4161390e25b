// JWT key files that cannot be loaded. At a config (re)load the refusal named no file and no
// field ("routes[0].filters[0] (tenant): error:1E08010C:DECODER routines::unsupported"), and a
// JWKS that is not JSON was answered with V8's snippet of its text — a symmetric key's "k" went
// into the log and the reload answer. At run time a rotated key file that does not load kept the
// old keys without a word: tokens of the new key were refused and nothing said why.
// Real proxy (supervisor + worker thread), real graphql-yoga backend, real tokens (jose).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>
const KEY_TEXT = 'c3VwZXJzZWNyZXRrZXl2YWx1ZTEyMzQ1Njc4OTA'

async function status(url: string, token: string): Promise<number> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
  await res.body.text()
  return res.statusCode
}

describe('tenant JWT key files that do not load', () => {
  let backend: DemoBackend
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-keyfile-'))
  const jwksPath = join(dir, 'jwks.json')
  const k1 = generateKeyPairSync('ed25519')
  const k2 = generateKeyPairSync('ed25519')
  const jwk = async (k: ReturnType<typeof generateKeyPairSync>, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: 'EdDSA' })
  const replace = (path: string, text: string) => {
    writeFileSync(`${path}.tmp`, text)
    renameSync(`${path}.tmp`, path)
  }
  const doc = (jwt: Record<string, unknown>): Doc => ({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt: { algorithms: ['EdDSA'], ...jwt } }] as never }] })
  const full = (d: Doc) => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...d })
  let p: TestProxy

  beforeAll(async () => {
    backend = await startDemoBackend()
    replace(jwksPath, JSON.stringify({ keys: [await jwk(k1, 'k1')] }))
    p = await startTestProxy(doc({ jwksFile: jwksPath }))
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
  })

  it('a JWKS that is not JSON is refused naming the field and file, without quoting the file', async () => {
    const bad = join(dir, 'bad-jwks.json')
    writeFileSync(bad, `{"keys":[{"kty":"oct","k":${KEY_TEXT}}]}`)
    const r = await p.applyConfig(full(doc({ jwksFile: bad, algorithms: ['HS256'] })))
    expect(r.ok).toBe(false)
    expect(r.error).toContain(`routes[0].filters[0] (tenant): jwt.jwksFile "${bad}": not valid JSON`)
    expect(r.error).not.toContain(KEY_TEXT.slice(0, 6))
  })

  it('a public key file that is no PEM key is refused naming the field and file', async () => {
    const bad = join(dir, 'bad.pem')
    writeFileSync(bad, 'not a key\n')
    const r = await p.applyConfig(full(doc({ publicKeyFile: bad })))
    expect(r.ok).toBe(false)
    expect(r.error).toContain(`routes[0].filters[0] (tenant): jwt.publicKeyFile "${bad}": not a PEM public key`)
    const missing = join(dir, 'missing.pem')
    const r2 = await p.applyConfig(full(doc({ publicKeyFile: missing })))
    expect(r2.error).toContain(`jwt.publicKeyFile "${missing}": cannot read it (ENOENT)`)
  })

  it('a rotated JWKS that does not load is logged once; the previous keys stay in use', async () => {
    const t1 = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).setExpirationTime('5m').sign(k1.privateKey)
    const t2 = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k2' }).setExpirationTime('5m').sign(k2.privateKey)
    expect(await status(p.url, t1)).toBe(200)
    // The new key's entry is broken (a stray comma): the file never loads.
    replace(jwksPath, `${JSON.stringify({ keys: [await jwk(k1, 'k1'), await jwk(k2, 'k2')] }).slice(0, -2)},]}`)
    const warned = () => p.logs.find('tenant: a changed JWT key file cannot be loaded; the previous keys stay in use')
    await expect
      .poll(
        async () => {
          await status(p.url, t2) // requests drive the key-file checks
          return warned().length
        },
        { timeout: 15_000, interval: 300 },
      )
      .toBe(1)
    expect(warned()[0]).toMatchObject({ file: jwksPath, err: { message: expect.stringContaining('not valid JSON') } })
    expect(await status(p.url, t1)).toBe(200)
    expect(await status(p.url, t2)).toBe(401)
    // Once, not every second.
    for (let i = 0; i < 5; i++) {
      await sleep(300)
      await status(p.url, t2)
    }
    expect(warned().length).toBe(1)
    // Fixed: the new key verifies.
    replace(jwksPath, JSON.stringify({ keys: [await jwk(k1, 'k1'), await jwk(k2, 'k2')] }))
    await expect.poll(() => status(p.url, t2), { timeout: 15_000, interval: 300 }).toBe(200)
  })
})
