// jwt.requireExpiration through the real proxy: a token without "exp" never expires, so an
// operator can refuse such tokens (Envoy's require_expiration); off, they are accepted as before.
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'require-expiration-test-secret-0123456789'
const key = new TextEncoder().encode(SECRET)

async function ask(url: string, token: string): Promise<{ status: number; body: { data?: unknown; errors?: { message: string; extensions: { code: string } }[] } }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ query: '{ hello }' }) })
  return { status: res.statusCode, body: (await res.body.json()) as never }
}

let backend: DemoBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startDemoBackend()
  proxy = await startTestProxy({
    mode: 'ingress',
    tenants: { acme: {} },
    routes: [
      { name: 'strict', match: { pathPrefix: '/strict' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'], requireExpiration: true } }] as never },
      { name: 'lenient', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }] as never },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('jwt.requireExpiration', () => {
  it('on: a token without exp is a 401 naming the claim; the same tenant with exp passes', async () => {
    const forever = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().sign(key)
    const r = await ask(`${proxy.url}/strict`, forever)
    expect(r.status).toBe(401)
    expect(r.body.errors![0]!.extensions.code).toBe('UNAUTHENTICATED')
    expect(r.body.errors![0]!.message).toMatch(/"exp"/)
    // Refused from the cache the second time too (the verdict is cached, not re-decided differently).
    expect((await ask(`${proxy.url}/strict`, forever)).status).toBe(401)
    const expiring = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(key)
    expect((await ask(`${proxy.url}/strict`, expiring)).status).toBe(200)
  })

  it('off (the default): a token without exp is accepted', async () => {
    const forever = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).sign(key)
    const r = await ask(proxy.url, forever)
    expect(r.status).toBe(200)
    expect(r.body.data).toBeTruthy()
  })
})
