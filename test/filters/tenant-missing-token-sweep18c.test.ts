// Tenant filter sweep 18c: a required bearer token that was not sent. RFC 6750 §3.1: "If the
// request lacks any authentication information, the resource server SHOULD NOT include an error
// code" — the 401 said `error="invalid_token"`, which tells a client's auth library that the
// token it sent was refused (it sent none). Envoy's jwt_authn answers `Bearer realm="…"`.
// Real proxy, real node:http backend, real tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { SignJWT } from 'jose'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'sweep18c-secret-of-at-least-32-characters!'

describe('tenant filter sweep 18c: missing token challenge', () => {
  let backend: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { tenant: req.headers['x-tenant-id'] } }))
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'req', match: { pathPrefix: '/required' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(headers: Record<string, string>) {
    const res = await request(`${proxy.url}/required/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"query":"{ hello }"}' })
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as { data?: { tenant?: string }; errors?: { message: string; extensions: { code: string } }[] } }
  }

  it('no token → 401 with a bare Bearer challenge (no error code); a bad token still says invalid_token', async () => {
    const before = backend.requests.length
    for (const headers of [{}, { authorization: 'Basic dXNlcjpwYXNz' }, { 'x-tenant-id': 'acme' }] as Record<string, string>[]) {
      const r = await post(headers)
      expect(r.status).toBe(401)
      expect(r.json.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED')
      expect(r.json.errors?.[0]?.message).toBe('missing bearer token')
      const challenge = String(r.headers['www-authenticate'])
      expect(challenge).toMatch(/^Bearer( |$)/)
      expect(challenge).not.toMatch(/error=/)
    }
    expect(backend.requests.length).toBe(before)

    const bad = await post({ authorization: 'Bearer not.a.jwt' })
    expect(bad.status).toBe(401)
    expect(String(bad.headers['www-authenticate'])).toMatch(/^Bearer realm="igw", error="invalid_token", error_description="/)

    const good = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))
    const ok = await post({ authorization: `Bearer ${good}` })
    expect(ok.status).toBe(200)
    expect(ok.json.data?.tenant).toBe('acme')
  })
})
