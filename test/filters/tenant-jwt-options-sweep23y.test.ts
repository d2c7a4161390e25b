// Tenant sweep 23y: JWT options. `jwt.issuer` took one issuer only, so a gateway could not accept
// the tokens of two IdPs (a migration, a staging IdP beside production) as Apollo Router and
// Envoy's jwt_authn can; '' (an unset ${ENV}) loaded and then refused every token. A tenant claim
// holding an integer beyond 2^53 was refused as "not a string or an integer". Real config
// validation, a real proxy and backend, tokens signed with jose.
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'sweep23y-secret-of-at-least-32-characters!'
const key = new TextEncoder().encode(SECRET)
const sign = (claims: Record<string, unknown>, iss?: string) => {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m')
  return (iss === undefined ? jwt : jwt.setIssuer(iss)).sign(key)
}

describe('tenant JWT options (sweep 23y)', () => {
  let backend: RawBackend
  let p: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    const route = (name: string, jwt: Record<string, unknown>) => ({
      name,
      match: { pathPrefix: `/${name}` },
      upstream: backend.url,
      filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'], ...jwt } }] as never,
    })
    p = await startTestProxy({
      tenants: { acme: {}, '42': {} },
      routes: [route('many', { issuer: ['https://old-idp.test/', 'https://new-idp.test/'] }), route('one', { issuer: 'https://new-idp.test/' }), route('org', { claim: 'org_id' }), route('aud', { audience: ['api', 'admin'] })],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
  })

  async function call(path: string, token: string) {
    const res = await request(`${p.url}/${path}`, { headers: { authorization: `Bearer ${token}` } })
    const body = (await res.body.json()) as { headers?: Record<string, string>; errors?: { message: string }[] }
    return { status: res.statusCode, tenant: body.headers?.['x-tenant-id'], message: body.errors?.[0]?.message, challenge: res.headers['www-authenticate'] }
  }

  it('accepts a token of any issuer in a list, and only those', async () => {
    expect(await call('many', await sign({ tenant_id: 'acme' }, 'https://old-idp.test/'))).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('many', await sign({ tenant_id: 'acme' }, 'https://new-idp.test/'))).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('many', await sign({ tenant_id: 'acme' }, 'https://evil.test/'))).toMatchObject({ status: 401, message: 'token claim "iss" rejected: unexpected "iss" claim value' })
    expect(await call('many', await sign({ tenant_id: 'acme' }))).toMatchObject({ status: 401, message: 'token claim "iss" rejected: missing required "iss" claim' })
    // A single issuer is checked as before.
    expect(await call('one', await sign({ tenant_id: 'acme' }, 'https://new-idp.test/'))).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('one', await sign({ tenant_id: 'acme' }, 'https://old-idp.test/'))).toMatchObject({ status: 401 })
  })

  it('says which check a refused claim failed, not jose\'s code for it ("check_failed")', async () => {
    expect(await call('aud', await sign({ tenant_id: 'acme', aud: 'admin' }))).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('aud', await sign({ tenant_id: 'acme', aud: 'billing' }))).toMatchObject({ status: 401, message: 'token claim "aud" rejected: unexpected "aud" claim value' })
    expect(await call('aud', await sign({ tenant_id: 'acme' }))).toMatchObject({ status: 401, message: 'token claim "aud" rejected: missing required "aud" claim' })
    const early = await sign({ tenant_id: 'acme', nbf: Math.floor(Date.now() / 1000) + 3600 })
    expect(await call('org', early)).toMatchObject({ status: 401, message: 'token claim "nbf" rejected: "nbf" claim timestamp check failed' })
  })

  it('refuses an empty issuer or audience (or list, or member) at load, naming the path', () => {
    const problem = (jwt: Record<string, unknown>) => {
      try {
        validateConfig({ listen: '127.0.0.1:0', tenants: { acme: {} }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant', jwt: { secret: SECRET, ...jwt } }] }] })
        return undefined
      } catch (err) {
        return (err as Error).message
      }
    }
    expect(problem({ issuer: 'https://a/' })).toBeUndefined()
    expect(problem({ issuer: ['https://a/', 'https://b/'], audience: ['api', 'admin'] })).toBeUndefined()
    const at = 'routes\\[0\\]\\.filters\\[0\\]\\.jwt\\.'
    expect(problem({ issuer: '' })).toMatch(new RegExp(`${at}issuer: expected a non-empty issuer`))
    expect(problem({ issuer: [] })).toMatch(new RegExp(`${at}issuer: expected at least one issuer`))
    expect(problem({ issuer: ['https://a/', ''] })).toMatch(new RegExp(`${at}issuer\\[1\\]: expected a non-empty issuer`))
    expect(problem({ audience: '' })).toMatch(new RegExp(`${at}audience: expected a non-empty audience`))
    expect(problem({ audience: ['api', ''] })).toMatch(new RegExp(`${at}audience\\[1\\]: expected a non-empty audience`))
  })

  it('says an integer claim beyond 2^53 is one that cannot be read exactly', async () => {
    expect(await call('org', await sign({ org_id: 42 }))).toMatchObject({ status: 200, tenant: '42' })
    for (const big of [2 ** 60, -(2 ** 60)]) {
      const r = await call('org', await sign({ org_id: big }))
      expect(r).toMatchObject({ status: 401, message: 'token claim "org_id" is an integer beyond 2^53, which cannot be read exactly (send it as a string)' })
      expect(r.challenge).toBe('Bearer realm="igw", error="invalid_token", error_description="token claim \'org_id\' is an integer beyond 2^53, which cannot be read exactly (send it as a string)"')
    }
    expect(await call('org', await sign({ org_id: 4.5 }))).toMatchObject({ status: 401, message: 'token claim "org_id" is not a string or an integer' })
  })
})
