// A rotated JWT key file that does not load keeps the previous keys and was only logged, once:
// nothing an alert could watch said the keys in use lag the file (Envoy counts jwks_fetch_failed).
// igw_jwt_key_files_stale{route} is 1 while that lasts and 0 once the file loads. Real proxy
// (supervisor + worker thread, merged /metrics), real graphql-yoga backend, real tokens (jose).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

async function status(url: string, token: string): Promise<number> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
  await res.body.text()
  return res.statusCode
}

async function metrics(p: TestProxy): Promise<string> {
  const res = await request(`${p.adminUrl}/metrics`)
  return res.body.text()
}

const STALE = 'igw_jwt_key_files_stale'

describe('tenant JWT key file that does not load: a metric (sweep 19)', () => {
  let backend: DemoBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-keymetric19-'))
  const jwksPath = join(dir, 'jwks.json')
  const k1 = generateKeyPairSync('ed25519')
  const k2 = generateKeyPairSync('ed25519')
  const jwk = async (k: ReturnType<typeof generateKeyPairSync>, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: 'EdDSA' })
  const replace = (path: string, text: string) => {
    writeFileSync(`${path}.tmp`, text)
    renameSync(`${path}.tmp`, path)
  }

  beforeAll(async () => {
    backend = await startDemoBackend()
    replace(jwksPath, JSON.stringify({ keys: [await jwk(k1, 'k1')] }))
    p = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        { name: 'keyed', upstream: backend.url, filters: [{ name: 'tenant', jwt: { jwksFile: jwksPath, algorithms: ['EdDSA'] } }] as never },
        { name: 'secret', match: { pathPrefix: '/s/' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: 'q'.repeat(40) } }] as never },
      ],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
  })

  it('is 0 while the keys are current, 1 while a changed JWKS does not load, 0 again once it does', async () => {
    const t1 = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).setExpirationTime('5m').sign(k1.privateKey)
    const t2 = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k2' }).setExpirationTime('5m').sign(k2.privateKey)
    expect(await status(p.url, t1)).toBe(200)
    const m0 = await metrics(p)
    expect(m0).toContain(`${STALE}{route="keyed"} 0`)
    expect(m0).not.toContain(`${STALE}{route="secret"}`) // no key file, no series

    // The rotation writes a broken file (a stray comma): the old keys stay, and the gauge says so.
    replace(jwksPath, `${JSON.stringify({ keys: [await jwk(k1, 'k1'), await jwk(k2, 'k2')] }).slice(0, -2)},]}`)
    await expect
      .poll(
        async () => {
          await status(p.url, t2) // requests drive the key-file checks
          return metricSum(await metrics(p), STALE, 'route="keyed"')
        },
        { timeout: 15_000, interval: 300 },
      )
      .toBe(1)
    await expect.poll(() => p.logs.find('tenant: a changed JWT key file cannot be loaded; the previous keys stay in use').length, { timeout: 10_000 }).toBe(1)
    expect(await status(p.url, t1)).toBe(200)
    expect(await status(p.url, t2)).toBe(401)

    // Fixed: the new key verifies and the gauge is back to 0.
    replace(jwksPath, JSON.stringify({ keys: [await jwk(k1, 'k1'), await jwk(k2, 'k2')] }))
    await expect.poll(() => status(p.url, t2), { timeout: 15_000, interval: 300 }).toBe(200)
    expect(metricSum(await metrics(p), STALE, 'route="keyed"')).toBe(0)
  })
})
