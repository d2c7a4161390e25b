// JWT algorithms: the README promises RS*, PS*, ES*, EdDSA for the tenant filter's keys, but its
// `jwt.algorithms` enum lacked PS384, PS512 and ES512: a config naming them was refused at load
// ("routes[0].filters[0].jwt.algorithms[0]: Invalid option"), so an issuer signing with P-521 or
// RSA-PSS/SHA-384+ could not be used at all. The control plane's admin auth (no allow-list: the
// key decides) accepts the same full set. Real proxy + graphql-yoga backend, real keys (jose
// generateKeyPair), tokens verified against a PEM key file and a JWKS file.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Authenticator } from '../../control-plane/auth.ts'
import { validateConfig } from '../../config/load.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const

async function status(url: string, host: string, token: string): Promise<number> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { host, 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
  await res.body.text()
  return res.statusCode
}

describe('JWT algorithms: the full RS*/PS*/ES*/EdDSA set jose verifies', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-jwt-algs-'))
  type Keyed = { alg: string; pem: string; jwks: string; token: string }
  const keyed: Keyed[] = []
  let backend: DemoBackend

  beforeAll(async () => {
    backend = await startDemoBackend()
    for (const alg of ASYMMETRIC) {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
      const pem = join(dir, `${alg}.pem`)
      const jwks = join(dir, `${alg}.json`)
      writeFileSync(pem, await exportSPKI(publicKey))
      writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: alg, alg }] }))
      const token = await new SignJWT({ tenant_id: 'acme', tenant: 'acme', roles: ['admin'] }).setProtectedHeader({ alg, kid: alg }).setSubject('ops').setExpirationTime('10m').sign(privateKey)
      keyed.push({ alg, pem, jwks, token })
    }
  }, 60_000)
  afterAll(async () => {
    await backend?.close()
  })

  it('the tenant filter config accepts PS384, PS512 and ES512 (and the schema.json enum lists them)', async () => {
    const cfg = validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant', jwt: { algorithms: ['PS384', 'PS512', 'ES512'], publicKeyFile: keyed[0]!.pem } }] }] } as never)
    expect(cfg.routes[0]!.filters[0]).toMatchObject({ jwt: { algorithms: ['PS384', 'PS512', 'ES512'] } })
    const { readFileSync } = await import('node:fs')
    const schema = readFileSync(new URL('../../config/schema.json', import.meta.url), 'utf8')
    for (const alg of ['PS384', 'PS512', 'ES512']) expect(schema).toContain(`"${alg}"`)
  })

  for (const source of ['publicKeyFile', 'jwksFile'] as const) {
    it(`the tenant filter verifies tokens of every asymmetric algorithm (${source})`, async () => {
      const routes = keyed.map((k, i) => ({ name: `r${i}`, match: { host: `${k.alg.toLowerCase()}.test` }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { algorithms: [k.alg], [source]: source === 'publicKeyFile' ? k.pem : k.jwks } }] }))
      let p: TestProxy | undefined
      try {
        p = await startTestProxy({ tenants: { acme: {} }, routes } as never)
        for (const k of keyed) expect([k.alg, await status(p.url, `${k.alg.toLowerCase()}.test`, k.token)]).toEqual([k.alg, 200])
        // Still an allow-list: an ES512 token on the PS512 route (whose key cannot verify it) is refused.
        const es512 = keyed.find((k) => k.alg === 'ES512')!
        expect(await status(p.url, 'ps512.test', es512.token)).toBe(401)
      } finally {
        await p?.close()
      }
    }, 60_000)
  }

  it('the control plane admin auth verifies every asymmetric algorithm (PEM and JWKS)', async () => {
    for (const k of keyed) {
      for (const opts of [{ publicKeyFile: k.pem }, { jwksFile: k.jwks }]) {
        const s = await new Authenticator(opts).authenticate(`Bearer ${k.token}`).catch((e: Error) => e.message)
        expect([k.alg, s]).toEqual([k.alg, expect.objectContaining({ sub: 'ops', tenant: 'acme' })])
      }
    }
  })
})
