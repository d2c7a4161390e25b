// Tenant claims whose names hold dots. Identity providers namespace custom claims with a URL
// (Auth0 requires it: "https://example.com/tenant_id"; Hasura's "https://hasura.io/jwt/claims"
// is an object). The claim path was only ever split on ".", so such a claim could not be named
// at all: every valid token was a 401 "token has no … claim". Real proxy, real graphql-yoga
// backend, real HS256 tokens (jose), real undici client.
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'an-hmac-secret-of-at-least-32-characters!'
const hmac = new TextEncoder().encode(SECRET)
const echoQuery = JSON.stringify({ query: '{ echo { header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { header: string | null } }; errors?: { message: string; extensions: { code: string } }[] }

async function gql(url: string, token: string): Promise<{ status: number; body: Echo }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: echoQuery })
  return { status: res.statusCode, body: (await res.body.json()) as Echo }
}

const hs = (claims: Record<string, unknown>): Promise<string> => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(hmac)

describe('tenant claims named with dots', () => {
  let backend: DemoBackend
  const proxies: TestProxy[] = []
  beforeAll(async () => {
    backend = await startDemoBackend()
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await backend?.close()
  })
  const start = async (claim: string): Promise<TestProxy> => {
    const p = await startTestProxy({ tenants: { acme: {}, globex: {} }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'], claim } }] as never }] })
    proxies.push(p)
    return p
  }

  it('a namespaced (URL) claim names the tenant', async () => {
    const p = await start('https://igw.example.com/tenant_id')
    const r = await gql(p.url, await hs({ 'https://igw.example.com/tenant_id': 'acme' }))
    expect(r.status).toBe(200)
    expect(r.body.data?.echo.header).toBe('acme')
  })

  it('a field of a namespaced object claim ("https://hasura.io/jwt/claims".x-org)', async () => {
    const p = await start('https://hasura.io/jwt/claims.x-org')
    const r = await gql(p.url, await hs({ 'https://hasura.io/jwt/claims': { 'x-org': 'globex' } }))
    expect(r.status).toBe(200)
    expect(r.body.data?.echo.header).toBe('globex')
  })

  it('plain dotted paths still reach into nested objects; inherited names are no claims', async () => {
    const p = await start('org.id')
    const r = await gql(p.url, await hs({ org: { id: 'acme' } }))
    expect(r.status).toBe(200)
    expect(r.body.data?.echo.header).toBe('acme')
    const missing = await gql(p.url, await hs({ org: { name: 'acme' } }))
    expect(missing.status).toBe(401)
    expect(missing.body.errors?.[0]?.message).toBe('token has no "org.id" claim')

    const proto = await start('constructor.name')
    const inherited = await gql(proto.url, await hs({ sub: 'u' }))
    expect(inherited.status).toBe(401)
    expect(inherited.body.errors?.[0]?.message).toBe('token has no "constructor.name" claim')
  })
})
