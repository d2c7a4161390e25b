// config/examples/ingress.yaml, loaded as shipped (its ${…} interpolation and all) and run: the
// tenant comes from a verified JWT on both routes, and "verified" means the same on both. The
// `api` route checked the token's issuer and audience, the `exports` route (the bulk data) did not:
// a token the same identity provider minted for another service (another audience), or another
// issuer signing with a key in the same JWKS, was taken there as the tenant's (RFC 8725 §3.9).
// The example's JWKS holds a public key only, so the test signs with a key pair of its own and
// points the example's jwksFile at it; nothing else of the document changes.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../config/load.ts'
import { startProxy, type ProxyHandle } from '../../proxy/supervisor.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, ROOT } from '../helpers/proxy.ts'

const ACME = '7c1f0d2e-0a4b-4d8e-9f3a-1b2c3d4e5f60'
const EXAMPLE_JWKS = 'config/examples/keys/jwks.example.json'

describe('config/examples/ingress.yaml: JWT checks on every route', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-ingress-example-sweep17-'))
  let backend: RawBackend
  let proxy: ProxyHandle
  let sign: (claims: { iss?: string; aud?: string }) => Promise<string>

  beforeAll(async () => {
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
    const jwk = { ...(await exportJWK(publicKey)), kid: 'example-2026', alg: 'EdDSA', use: 'sig' }
    const jwksPath = join(dir, 'jwks.json')
    writeFileSync(jwksPath, JSON.stringify({ keys: [jwk] }))
    sign = async ({ iss, aud }) => {
      let jwt = new SignJWT({ tenant_id: ACME }).setProtectedHeader({ alg: 'EdDSA', kid: 'example-2026' }).setIssuedAt().setExpirationTime('5m')
      if (iss !== undefined) jwt = jwt.setIssuer(iss)
      if (aud !== undefined) jwt = jwt.setAudience(aud)
      return jwt.sign(privateKey)
    }
    const text = readFileSync(join(ROOT, 'config/examples/ingress.yaml'), 'utf8')
    expect(text).toContain(EXAMPLE_JWKS)
    const copy = join(dir, 'ingress.yaml')
    writeFileSync(copy, text.replaceAll(EXAMPLE_JWKS, jwksPath))
    backend = await startRawBackend(echoHandler)
    const { config } = loadConfigFile(copy, { ...process.env, GRAPH_URL: backend.url, EXPORTS_URL: backend.url })
    proxy = await startProxy({ config: { ...config, listen: '127.0.0.1:0', admin: { ...config.admin, listen: '127.0.0.1:0' }, workers: 1 }, logDestination: new LogCapture() as never })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const call = async (route: 'api' | 'exports', token: string) => {
    const url = `http://127.0.0.1:${proxy.port}${route === 'api' ? '/graphql' : '/export/entities.ndjson'}`
    const host = route === 'api' ? 'api.example.com' : 'files.example.com'
    const res =
      route === 'api'
        ? await request(url, { method: 'POST', headers: { host, authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
        : await request(url, { headers: { host, authorization: `Bearer ${token}` } })
    const body = await res.body.text()
    return { status: res.statusCode, body }
  }

  it.each(['api', 'exports'] as const)('%s: a token of the example issuer for audience "igw" passes', async (route) => {
    const r = await call(route, await sign({ iss: 'https://auth.example.com/', aud: 'igw' }))
    expect(r.status, r.body).toBe(200)
  })

  it.each(['api', 'exports'] as const)('%s: a token minted for another audience, or by another issuer, is refused with 401', async (route) => {
    for (const claims of [{ iss: 'https://auth.example.com/', aud: 'billing' }, { iss: 'https://evil.example.net/', aud: 'igw' }, {}]) {
      const r = await call(route, await sign(claims))
      expect(r.status, `${JSON.stringify(claims)}: ${r.body}`).toBe(401)
      expect(JSON.parse(r.body).errors[0].extensions.code).toBe('UNAUTHENTICATED')
    }
  })
})
