// Tenant filter sweep: the tenant header is no credential once tokens are configured, numeric
// tenant claims, and key files that rotate on disk (a JWKS gains and loses kids) followed
// without a restart. Real proxy, real graphql-yoga backend, real tokens (jose).
import { createHmac, generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'an-hmac-secret-of-at-least-32-characters!'
const hmac = new TextEncoder().encode(SECRET)
const echoQuery = JSON.stringify({ query: '{ echo { header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { header: string | null } }; errors?: { message: string; extensions: { code: string } }[] }

async function gql(url: string, headers: Record<string, string>): Promise<{ status: number; body: Echo }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: echoQuery })
  return { status: res.statusCode, body: (await res.body.json()) as Echo }
}

function hs(claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(hmac)
}

describe('tenant filter sweep 14', () => {
  let backend: DemoBackend
  const proxies: TestProxy[] = []
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant14-'))
  const jwksPath = join(dir, 'jwks.json')
  const k1 = generateKeyPairSync('ed25519')
  const k2 = generateKeyPairSync('ed25519')
  const jwk = async (k: ReturnType<typeof generateKeyPairSync>, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: 'EdDSA' })
  /** Replace the file the way a secret/ConfigMap sync does: write aside, rename over. */
  const writeJwks = async (keys: unknown[]) => {
    const tmp = `${jwksPath}.tmp`
    writeFileSync(tmp, JSON.stringify({ keys }))
    renameSync(tmp, jwksPath)
  }

  beforeAll(async () => {
    backend = await startDemoBackend()
    await writeJwks([await jwk(k1, 'k1')])
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await backend?.close()
  })

  const start = async (filter: Record<string, unknown>) => {
    const p = await startTestProxy({ tenants: { acme: { tier: 'gold' }, globex: {}, '42': {} }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', ...filter }] as never }] })
    proxies.push(p)
    return p
  }

  it('with an optional token, a request without one cannot name its tenant by header', async () => {
    const withDefault = await start({ defaultTenant: 'globex', jwt: { secret: SECRET, algorithms: ['HS256'], required: false } })
    const spoof = await gql(withDefault.url, { 'x-tenant-id': 'acme' })
    expect(spoof.status).toBe(200)
    expect(spoof.body.data?.echo.header).toBe('globex') // the default, not the tenant it claimed
    const token = await gql(withDefault.url, { authorization: `Bearer ${await hs({ tenant_id: 'acme' })}`, 'x-tenant-id': 'globex' })
    expect(token.body.data?.echo.header).toBe('acme')

    const noDefault = await start({ jwt: { secret: SECRET, algorithms: ['HS256'], required: false } })
    const refused = await gql(noDefault.url, { 'x-tenant-id': 'acme' })
    expect(refused.status).toBe(403)
    expect(refused.body.errors?.[0]?.extensions.code).toBe('UNKNOWN_TENANT')
    expect(refused.body.errors?.[0]?.message).toContain('bearer token')
  })

  it('an integer tenant claim names that tenant; other types are refused with a reason', async () => {
    const p = await start({ jwt: { secret: SECRET, algorithms: ['HS256'] } })
    const numeric = await gql(p.url, { authorization: `Bearer ${await hs({ tenant_id: 42 })}` })
    expect(numeric.status).toBe(200)
    expect(numeric.body.data?.echo.header).toBe('42')
    for (const bad of [['acme'], { id: 'acme' }, true, 4.5]) {
      const r = await gql(p.url, { authorization: `Bearer ${await hs({ tenant_id: bad })}` })
      expect(r.status).toBe(401)
      expect(r.body.errors?.[0]?.message).toBe('token claim "tenant_id" is not a string or an integer')
    }
    // Beyond 2^53 JSON.parse rounds it (…993 reads as …992): it cannot name a tenant exactly.
    const b64 = (text: string) => Buffer.from(text).toString('base64url')
    const signing = `${b64('{"alg":"HS256"}')}.${b64(`{"tenant_id":9007199254740993,"exp":${Math.floor(Date.now() / 1000) + 300}}`)}`
    const big = `${signing}.${createHmac('sha256', SECRET).update(signing).digest('base64url')}`
    expect((await gql(p.url, { authorization: `Bearer ${big}` })).status).toBe(401)
    const missing = await gql(p.url, { authorization: `Bearer ${await hs({ sub: 'u' })}` })
    expect(missing.status).toBe(401)
    expect(missing.body.errors?.[0]?.message).toBe('token has no "tenant_id" claim')
  })

  it('(guard) alg none and HS256 signed with the RSA public key are refused', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const pem = join(dir, 'rsa.pem')
    const pemText = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string
    writeFileSync(pem, pemText)
    const p = await start({ jwt: { publicKeyFile: pem, algorithms: ['RS256', 'HS256'] } })
    const b64 = (text: string) => Buffer.from(text).toString('base64url')
    const claims = b64(`{"tenant_id":"acme","exp":${Math.floor(Date.now() / 1000) + 300}}`)
    const none = `${b64('{"alg":"none"}')}.${claims}.`
    const confusedInput = `${b64('{"alg":"HS256"}')}.${claims}`
    const confused = `${confusedInput}.${createHmac('sha256', pemText).update(confusedInput).digest('base64url')}`
    for (const t of [none, confused]) expect((await gql(p.url, { authorization: `Bearer ${t}` })).status).toBe(401)
    const good = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('5m').sign(rsa.privateKey)
    expect((await gql(p.url, { authorization: `Bearer ${good}` })).status).toBe(200)
  })

  it('follows a JWKS file that rotates on disk: a new kid verifies, a removed one stops verifying', async () => {
    const p = await start({ jwt: { jwksFile: jwksPath, algorithms: ['EdDSA'] } })
    const sign = (k: ReturnType<typeof generateKeyPairSync>, kid: string) => new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid }).setExpirationTime('5m').sign(k.privateKey)
    const t1 = await sign(k1, 'k1')
    const t2 = await sign(k2, 'k2')
    expect((await gql(p.url, { authorization: `Bearer ${t1}` })).status).toBe(200)
    // The issuer signs with k2 before the file has it: refused (and that refusal is cached) …
    const early = await gql(p.url, { authorization: `Bearer ${t2}` })
    expect(early.status).toBe(401)
    expect(early.body.errors?.[0]?.message).toBe('no key matches the token')
    // … until the file gains it: no restart, no config change.
    await writeJwks([await jwk(k1, 'k1'), await jwk(k2, 'k2')])
    await expect.poll(async () => (await gql(p.url, { authorization: `Bearer ${t2}` })).status, { timeout: 15_000, interval: 250 }).toBe(200)
    // k1 retired (compromised): its token, verified and cached a moment ago, is refused.
    await writeJwks([await jwk(k2, 'k2')])
    await expect.poll(async () => (await gql(p.url, { authorization: `Bearer ${t1}` })).status, { timeout: 15_000, interval: 250 }).toBe(401)
    expect((await gql(p.url, { authorization: `Bearer ${t2}` })).status).toBe(200)
    // A half-written file keeps the keys that were working.
    writeFileSync(jwksPath, '{"keys": [')
    await new Promise((r) => setTimeout(r, 1_500))
    expect((await gql(p.url, { authorization: `Bearer ${t2}` })).status).toBe(200)
  })
})
