// Tenant filter sweep 21f: a JWT key file that can no longer be read (deleted, moved away, its
// Secret unmounted) is a change that does not load. It was skipped without a word: the keys
// loaded before — a key the operator removed by removing the file included — went on verifying,
// igw_jwt_key_files_stale stayed 0 and nothing was logged, while a restart would refuse the config.
// Now it is logged, the gauge is 1 until the file is back, and the previous keys stay in use (as
// for a file that does not parse). Real proxy (supervisor + worker thread, merged /metrics), real
// graphql-yoga backend, real tokens (jose).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const STALE = 'igw_jwt_key_files_stale'
const LOGGED = 'tenant: a changed JWT key file cannot be loaded; the previous keys stay in use'

async function status(url: string, token: string): Promise<number> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
  await res.body.text()
  return res.statusCode
}

describe('tenant JWT key file that goes missing (sweep 21f)', () => {
  let backend: DemoBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-keymissing21f-'))
  const jwksPath = join(dir, 'jwks.json')
  const k1 = generateKeyPairSync('ed25519')
  const k2 = generateKeyPairSync('ed25519')
  const jwk = async (k: ReturnType<typeof generateKeyPairSync>, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: 'EdDSA' })
  const stale = async (token: string) => {
    await status(p.url, token) // requests drive the key-file checks
    const res = await request(`${p.adminUrl}/metrics`)
    return metricSum(await res.body.text(), STALE, 'route="keyed"')
  }

  beforeAll(async () => {
    backend = await startDemoBackend()
    writeFileSync(jwksPath, JSON.stringify({ keys: [await jwk(k1, 'k1')] }))
    p = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'keyed', upstream: backend.url, filters: [{ name: 'tenant', jwt: { jwksFile: jwksPath, algorithms: ['EdDSA'] } }] as never }],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('is logged and counted while the file is missing; back as it was, the gauge is 0 again', async () => {
    const t1 = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).setExpirationTime('5m').sign(k1.privateKey)
    const t2 = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k2' }).setExpirationTime('5m').sign(k2.privateKey)
    expect(await status(p.url, t1)).toBe(200)
    expect(await stale(t1)).toBe(0)

    // Moved away: the keys in use stay (tokens keep verifying), but the gauge and the log say so.
    renameSync(jwksPath, `${jwksPath}.away`)
    await expect.poll(() => stale(t1), { timeout: 15_000, interval: 300 }).toBe(1)
    await expect.poll(() => p.logs.find(LOGGED).length, { timeout: 10_000 }).toBe(1)
    expect(JSON.stringify(p.logs.find(LOGGED)[0])).toContain('ENOENT')
    expect(await status(p.url, t1)).toBe(200)

    // Back as it was (same file): current again.
    renameSync(`${jwksPath}.away`, jwksPath)
    await expect.poll(() => stale(t1), { timeout: 15_000, interval: 300 }).toBe(0)

    // Then a rotation: the new file loads, the new key verifies and the removed one does not.
    writeFileSync(jwksPath, JSON.stringify({ keys: [await jwk(k2, 'k2')] }))
    await expect.poll(() => status(p.url, t2), { timeout: 15_000, interval: 300 }).toBe(200)
    expect(await stale(t2)).toBe(0)
    expect(await status(p.url, t1)).toBe(401) // k1 was removed by the rotation
  })
})
