// Tenant filter sweep 15: JWKS documents where more than one key fits a token. Real proxy,
// real graphql-yoga backend, real tokens (jose).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const echoQuery = JSON.stringify({ query: '{ echo { header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { header: string | null } }; errors?: { message: string; extensions: { code: string } }[] }

async function gql(url: string, headers: Record<string, string>): Promise<{ status: number; body: Echo }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: echoQuery })
  return { status: res.statusCode, body: (await res.body.json()) as Echo }
}

describe('tenant filter sweep 15', () => {
  let backend: DemoBackend
  const proxies: TestProxy[] = []
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant15-'))
  const oldKey = generateKeyPairSync('ed25519')
  const newKey = generateKeyPairSync('ed25519')
  const stranger = generateKeyPairSync('ed25519')

  beforeAll(async () => {
    backend = await startDemoBackend()
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await backend?.close()
  })

  const start = async (filter: Record<string, unknown>) => {
    const p = await startTestProxy({ tenants: { acme: { tier: 'gold' } }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', ...filter }] as never }] })
    proxies.push(p)
    return p
  }
  const sign = (k: ReturnType<typeof generateKeyPairSync>, kid?: string) =>
    new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', ...(kid === undefined ? {} : { kid }) }).setExpirationTime('5m').sign(k.privateKey)

  it('a token without kid verifies against any of several JWKS keys that fit it (key rotation); a stranger is refused', async () => {
    // An issuer rotating keys publishes both; its tokens carry no kid (many do not), or the
    // same kid during a botched rotation. jose reports "several keys match" and leaves trying
    // them to the caller: every such token was refused, as "token rejected".
    const path = join(dir, 'rotating.json')
    const jwk = async (k: ReturnType<typeof generateKeyPairSync>, kid?: string) => ({ ...(await exportJWK(k.publicKey)), alg: 'EdDSA', ...(kid === undefined ? {} : { kid }) })
    writeFileSync(path, JSON.stringify({ keys: [await jwk(oldKey), await jwk(newKey), await jwk(oldKey, 'same'), await jwk(newKey, 'same')] }))
    const p = await start({ jwt: { jwksFile: path, algorithms: ['EdDSA'] } })
    for (const t of [await sign(oldKey), await sign(newKey), await sign(newKey, 'same'), await sign(oldKey, 'same')]) {
      const r = await gql(p.url, { authorization: `Bearer ${t}` })
      expect(r.body.errors?.[0]?.message).toBeUndefined()
      expect(r.status).toBe(200)
      expect(r.body.data?.echo.header).toBe('acme')
    }
    for (const t of [await sign(stranger), await sign(stranger, 'same')]) {
      const r = await gql(p.url, { authorization: `Bearer ${t}` })
      expect(r.status).toBe(401)
      expect(r.body.errors?.[0]?.message).toBe('token signature does not verify')
    }
  })
})
