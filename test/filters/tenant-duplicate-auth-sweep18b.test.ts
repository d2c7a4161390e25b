// Tenant filter sweep 18b: a request with two Authorization headers. Node keeps the first for the
// filter, the proxy forwards both: the gateway's tenant came from one token while a backend that
// reads the other authenticated someone else. Real proxy, real node:http backend, real tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { SignJWT } from 'jose'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'sweep18b-secret-of-at-least-32-characters!'
const sign = (tenant: string) => new SignJWT({ tenant_id: tenant }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))

describe('tenant filter sweep 18b: repeated credentials', () => {
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

  async function post(path: string, authorization: string[]) {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: '{"query":"{ hello }"}' })
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as { data?: { tenant?: string }; errors?: { message: string; extensions: { code: string } }[] } }
  }

  it('two Authorization headers → 400 invalid_request, nothing forwarded; one still works', async () => {
    const acme = await sign('acme')
    const globex = await sign('globex')
    for (const path of ['/required/graphql', '/optional/graphql']) {
      for (const pair of [[`Bearer ${acme}`, `Bearer ${globex}`], [`Bearer ${acme}`, `Bearer ${acme}`], ['Basic dXNlcjpwYXNz', `Bearer ${globex}`]]) {
        const before = backend.requests.length
        const r = await post(path, pair)
        expect(r.status).toBe(400)
        expect(r.json.errors?.[0]?.extensions.code).toBe('BAD_REQUEST')
        expect(r.json.errors?.[0]?.message).toBe('several authorization headers (send one bearer token)')
        expect(r.headers['www-authenticate']).toBe('Bearer realm="igw", error="invalid_request"')
        expect(backend.requests.length).toBe(before)
      }
      const ok = await post(path, [`Bearer ${globex}`])
      expect(ok.status).toBe(200)
      expect(ok.json.data?.tenant).toBe('globex')
    }
    // An optional token not sent at all: anonymous, the default tenant, as before.
    const res = await request(`${proxy.url}/optional/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
    expect(res.statusCode).toBe(200)
    expect(((await res.body.json()) as { data: { tenant: string } }).data.tenant).toBe('dflt')
  })
})
