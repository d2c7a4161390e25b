// Tenant sweep 23f: igw_jwt_key_files_stale{route} across config reloads. Each filter instance
// set the series on its own, so a 1 outlived the filter that set it: after a reload removed the
// route, or moved its keys to `secret`, the series stayed 1 (alerting) until a restart. And a
// reload refused after the route's new filter was built set it to 0 while the running filter
// still kept the old keys. Real proxy (supervisor + worker thread, merged /metrics), real
// graphql-yoga backend, real tokens (jose), real reloads.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const STALE = 'igw_jwt_key_files_stale'
const SECRET = 'r'.repeat(40)

describe('igw_jwt_key_files_stale across reloads (sweep 23f)', () => {
  let backend: DemoBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-gauge23f-'))
  const keyed = join(dir, 'keyed.json')
  const gone = join(dir, 'gone.json')
  const good = join(dir, 'good.json')
  const k1 = generateKeyPairSync('ed25519')
  let jwks = ''
  const replace = (path: string, text: string) => {
    writeFileSync(`${path}.tmp`, text)
    renameSync(`${path}.tmp`, path)
  }
  const route = (name: string, jwt: Record<string, unknown>) => ({ name, match: { pathPrefix: `/${name}/` }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { algorithms: ['EdDSA'], ...jwt } }] })
  const doc = (routes: unknown[]) => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, tenants: { acme: {} }, routes } as GatewayConfigInput)
  const series = async () => {
    const text = await (await request(`${p.adminUrl}/metrics`)).body.text()
    return Object.fromEntries([...text.matchAll(new RegExp(`^${STALE}\\{route="([^"]+)"\\} (\\S+)$`, 'gm'))].map((m) => [m[1], Number(m[2])]))
  }
  const hit = async (name: string, token: string) => (await request(`${p.url}/${name}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })).body.text()

  beforeAll(async () => {
    backend = await startDemoBackend()
    jwks = JSON.stringify({ keys: [{ ...(await exportJWK(k1.publicKey)), kid: 'k1', alg: 'EdDSA' }] })
    for (const f of [keyed, gone, good]) replace(f, jwks)
    p = await startTestProxy({ tenants: { acme: {} }, routes: [route('keyed', { jwksFile: keyed }), route('gone', { jwksFile: gone })] as never })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('follows the live filters: kept while one lags, gone with the last of them', async () => {
    const token = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).setExpirationTime('5m').sign(k1.privateKey)
    expect(await series()).toEqual({ keyed: 0, gone: 0 })
    replace(keyed, `${jwks.slice(0, -2)},]}`)
    replace(gone, `${jwks.slice(0, -2)},]}`)
    await expect
      .poll(
        async () => {
          await Promise.all([hit('keyed', token), hit('gone', token)]) // requests drive the key-file checks
          return series()
        },
        { timeout: 10_000, interval: 250 },
      )
      .toEqual({ keyed: 1, gone: 1 })

    // Refused after the new "keyed" filter was built on a good file (the next route's key file
    // does not load): the running filter still lags its own.
    const refused = await p.applyConfig(doc([route('keyed', { jwksFile: good }), route('bad', { jwksFile: gone })]))
    expect(refused).toMatchObject({ ok: false, error: expect.stringContaining('routes[1].filters[0] (tenant)') })
    expect(await series()).toEqual({ keyed: 1, gone: 1 })

    // "gone" removed, "keyed" moved to a secret, a new route on a good file.
    const applied = await p.applyConfig(doc([route('keyed', { secret: SECRET, algorithms: ['HS256'] }), route('fresh', { jwksFile: good })]))
    expect(applied.ok).toBe(true)
    await expect.poll(series, { timeout: 5_000, interval: 100 }).toEqual({ fresh: 0 })
  })
})
