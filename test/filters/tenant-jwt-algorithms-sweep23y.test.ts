// Tenant sweep 23y: `jwt.algorithms` that fit none of the configured keys. An EC P-256 key (Google
// IAP's, AWS ALB's) under the default algorithms (RS256, EdDSA, HS256), or a secret beside
// algorithms without HS*, loaded cleanly and then every token was refused as "token algorithm
// not allowed". Refused at load now; a config with one fitting key still loads. Real proxy,
// real reloads, real key files and jose-signed tokens.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { validateConfig } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>
const SECRET = 'sweep23y-secret-of-at-least-32-characters!'

describe('jwt.algorithms against the configured keys (sweep 23y)', () => {
  let backend: RawBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-alg23y-'))
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const ecPem = join(dir, 'ec.pem')
  const ecJwks = join(dir, 'ec.jwks.json')
  const emptyJwks = join(dir, 'empty.jwks.json')
  const doc = (jwt: Record<string, unknown>): Doc => ({
    tenants: { acme: {} },
    routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt }] as never }],
  })
  const full = (d: Doc) => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...d })

  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    writeFileSync(ecPem, ec.publicKey.export({ type: 'spki', format: 'pem' }) as string)
    writeFileSync(ecJwks, JSON.stringify({ keys: [{ ...(await exportJWK(ec.publicKey)), kid: 'ec' }] }))
    writeFileSync(emptyJwks, JSON.stringify({ keys: [] }))
    p = await startTestProxy(doc({ secret: SECRET, algorithms: ['HS256'] }))
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('refuses keys that none of the algorithms can use, naming what they verify', async () => {
    for (const [jwt, verifies] of [
      [{ publicKeyFile: ecPem }, 'ES256'],
      [{ jwksFile: ecJwks }, 'ES256'],
      [{ secret: SECRET, algorithms: ['RS256', 'ES256'] }, 'HS256, HS384, HS512'],
      [{ publicKeyFile: ecPem, algorithms: ['ES384'] }, 'ES256'],
    ] as const) {
      const r = await p.applyConfig(full(doc(jwt)))
      expect(r.ok).toBe(false)
      expect(r.error).toContain(`verify none of the configured keys, which verify ${verifies}: every token would be refused`)
    }
  })

  it('loads when one key fits, and its tokens verify', async () => {
    expect((await p.applyConfig(full(doc({ publicKeyFile: ecPem, algorithms: ['ES256'] }))))).toMatchObject({ ok: true })
    const t = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('5m').sign(ec.privateKey)
    const res = await request(`${p.url}/graphql`, { headers: { authorization: `Bearer ${t}` } })
    expect(res.statusCode).toBe(200)
    expect(((await res.body.json()) as { headers: Record<string, string> }).headers['x-tenant-id']).toBe('acme')
    // A secret beside an unusable key: the secret's tokens still verify.
    expect(await p.applyConfig(full(doc({ publicKeyFile: ecPem, secret: SECRET })))).toMatchObject({ ok: true })
    // A JWKS with no signing keys yet (they may be added to the file later) still loads.
    expect(await p.applyConfig(full(doc({ jwksFile: emptyJwks })))).toMatchObject({ ok: true })
  })
})
