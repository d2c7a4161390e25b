// Tenant filter sweep 20g: a bearer token in the URL (RFC 6750 §2.3 `access_token`), which the
// gateway does not read but many backends (passport, Spring, express-jwt setups) do. Beside the
// header's token, the tenant came from one token while the backend authenticated the other; with
// an optional token, the request ran as anonymous (the default tenant: its cache, its quota)
// while the backend served the URL token's user. Real proxy, real node:http backend, real tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { SignJWT } from 'jose'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const SECRET = 'sweep20g-secret-of-at-least-32-characters!'
const sign = (tenant: string) => new SignJWT({ tenant_id: tenant }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))

describe('tenant filter sweep 20g: a token in the query string', () => {
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
      tenants: { acme: {}, globex: {}, dflt: {} },
      routes: [
        { name: 'req', match: { pathPrefix: '/required' }, upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }] as never },
        { name: 'opt', match: { pathPrefix: '/optional' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'dflt', jwt: { secret: SECRET, algorithms: ['HS256'], required: false } }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(path: string, headers: Record<string, string>) {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"query":"{ hello }"}' })
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as { data?: { tenant?: string }; errors?: { message: string; extensions: { code: string } }[] } }
  }

  it('header and access_token together → 400 invalid_request, nothing forwarded', async () => {
    const acme = await sign('acme')
    const globex = await sign('globex')
    for (const path of ['/required', '/optional']) {
      const before = backend.requests.length
      const r = await post(`${path}/graphql?access_token=${globex}`, { authorization: `Bearer ${acme}` })
      expect(r.status).toBe(400)
      expect(r.json.errors?.[0]?.extensions.code).toBe('BAD_REQUEST')
      expect(r.json.errors?.[0]?.message).toBe('a bearer token in both the authorization header and the access_token query parameter (send one)')
      expect(r.headers['www-authenticate']).toBe('Bearer realm="igw", error="invalid_request"')
      expect(backend.requests.length).toBe(before)
      // The header alone still works.
      const ok = await post(`${path}/graphql`, { authorization: `Bearer ${acme}` })
      expect(ok.status).toBe(200)
      expect(ok.json.data?.tenant).toBe('acme')
    }
  })

  it('an optional token sent only in the URL is refused, not run as the default tenant', async () => {
    const globex = await sign('globex')
    const before = backend.requests.length
    const r = await post(`/optional/graphql?x=1&access_token=${globex}`, {})
    expect(r.status).toBe(400)
    expect(r.json.errors?.[0]?.message).toBe('a bearer token in the access_token query parameter is not accepted (send it in the authorization header)')
    expect(backend.requests.length).toBe(before)
    // Without any token the request is anonymous, as before; a parameter merely named alike is no token.
    const anon = await post('/optional/graphql?no_access_token=1', {})
    expect(anon.status).toBe(200)
    expect(anon.json.data?.tenant).toBe('dflt')
  })
})
