// Tenant filter sweep 18b: a JWKS file with symmetric ("kty": "oct") keys, as Envoy's jwt_authn
// verifies HS256/384/512 tokens with (local_jwks). Real proxy, real graphql-yoga backend, real
// tokens (jose).
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { base64url, exportJWK, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const echoQuery = JSON.stringify({ query: '{ echo { header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { header: string | null } }; errors?: { message: string; extensions: { code: string } }[] }

async function gql(url: string, token: string): Promise<{ status: number; body: Echo }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: echoQuery })
  return { status: res.statusCode, body: (await res.body.json()) as Echo }
}

describe('tenant filter sweep 18b: JWKS oct keys', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant18b-'))
  const current = randomBytes(32)
  const previous = randomBytes(48)
  const named = randomBytes(32)
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })

  beforeAll(async () => {
    backend = await startDemoBackend()
    const path = join(dir, 'jwks.json')
    writeFileSync(
      path,
      JSON.stringify({
        keys: [
          { kty: 'oct', k: base64url.encode(named), kid: 'hs-named', alg: 'HS256', use: 'sig' },
          { kty: 'oct', k: base64url.encode(current) },
          { kty: 'oct', k: base64url.encode(previous) },
          { ...(await exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256' },
        ],
      }),
    )
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt: { jwksFile: path, algorithms: ['HS256', 'HS384', 'HS512', 'RS256'] } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const sign = (alg: string, key: Uint8Array | import('node:crypto').KeyObject, kid?: string) =>
    new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg, ...(kid === undefined ? {} : { kid }) }).setExpirationTime('5m').sign(key)

  it('HS* tokens verify with the JWKS oct keys (by kid, or each key when there is none); RS256 still works', async () => {
    // jose's local JWKS takes public keys only: every HS* token was refused as "token rejected".
    for (const t of [await sign('HS256', named, 'hs-named'), await sign('HS256', current), await sign('HS512', previous), await sign('HS384', current), await sign('RS256', rsa.privateKey, 'rsa')]) {
      const r = await gql(proxy.url, t)
      expect(r.body.errors?.[0]?.message).toBeUndefined()
      expect(r.status).toBe(200)
      expect(r.body.data?.echo.header).toBe('acme')
    }
  })

  it('a stranger secret, a kid the key does not have, or an alg the key does not allow → 401', async () => {
    const cases: [string, string][] = [
      [await sign('HS256', randomBytes(32)), 'token signature does not verify'],
      [await sign('HS256', current, 'nope'), 'no key matches the token'],
      [await sign('HS512', named, 'hs-named'), 'no key matches the token'], // the key says HS256
      [await sign('HS256', named, 'rsa'), 'no key matches the token'], // the kid of a public key
    ]
    for (const [t, reason] of cases) {
      const r = await gql(proxy.url, t)
      expect(r.status).toBe(401)
      expect(r.body.errors?.[0]?.message).toBe(reason)
    }
  })

  it('a JWKS whose oct key is too short or has no "k" is refused at start, never quoting the secret', async () => {
    for (const [key, message] of [
      [{ kty: 'oct', kid: 'short', k: base64url.encode(Buffer.from('s3cr3t-short-key')) }, 'key "short": an "oct" key of 16 bytes is too short (at least 32)'],
      [{ kty: 'oct', kid: 'nok' }, 'key "nok": an "oct" key needs "k", the secret in base64url'],
    ] as const) {
      const path = join(dir, `bad-${key.kid}.json`)
      writeFileSync(path, JSON.stringify({ keys: [key] }))
      const err = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt: { jwksFile: path, algorithms: ['HS256'] } }] as never }] }).then(
        async (p) => {
          await p.close()
          return undefined
        },
        (e: unknown) => e as Error,
      )
      expect(err?.message).toContain(message)
      expect(err?.message).not.toContain('s3cr3t')
    }
  })
})
