// Tenant sweep 23f: `jwt.prefix` — what precedes the token in `jwt.header` (Envoy's jwt_authn
// from_headers value_prefix). Only "Bearer <jwt>" was read, so the headers of identity-aware
// proxies that carry the bare JWT (Cloudflare Access's cf-access-jwt-assertion, Google IAP's
// x-goog-iap-jwt-assertion, AWS ALB's x-amzn-oidc-data) had every request refused as a missing
// token. Real config validation, real proxy, a real backend, tokens signed with jose.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const es = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const sign = (tenant: string) => new SignJWT({ tenant_id: tenant }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('5m').sign(es.privateKey)

describe('jwt.prefix (sweep 23f)', () => {
  let backend: RawBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-prefix23f-'))

  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    const pem = join(dir, 'es.pem')
    writeFileSync(pem, es.publicKey.export({ type: 'spki', format: 'pem' }) as string)
    const route = (name: string, jwt: Record<string, unknown>) => ({
      name,
      match: { pathPrefix: `/${name}` },
      upstream: backend.url,
      filters: [{ name: 'tenant', jwt: { publicKeyFile: pem, algorithms: ['ES256'], ...jwt } }] as never,
    })
    p = await startTestProxy({
      tenants: { acme: {}, globex: {} },
      routes: [route('cf', { header: 'Cf-Access-Jwt-Assertion', prefix: '' }), route('tok', { prefix: 'Token ' }), route('custom', { header: 'x-auth-token' }), route('plain', {})],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  async function call(path: string, headers: Record<string, string>) {
    const res = await request(`${p.url}/${path}`, { headers })
    const body = (await res.body.json()) as { headers?: Record<string, string>; errors?: { message: string }[] }
    return { status: res.statusCode, tenant: body.headers?.['x-tenant-id'], message: body.errors?.[0]?.message }
  }

  it('reads a bare JWT from a header with prefix ""', async () => {
    expect(await call('cf', { 'cf-access-jwt-assertion': await sign('acme') })).toEqual({ status: 200, tenant: 'acme', message: undefined })
    expect(await call('cf', { 'cf-access-jwt-assertion': ` ${await sign('globex')} ` })).toMatchObject({ status: 200, tenant: 'globex' })
    // Bearer is no part of such a header: the value is the token, and "Bearer x.y.z" is malformed.
    expect(await call('cf', { 'cf-access-jwt-assertion': `Bearer ${await sign('acme')}` })).toMatchObject({ status: 401, message: 'token is malformed' })
    expect(await call('cf', {})).toMatchObject({ status: 401, message: 'missing bearer token' })
    // Authorization is not where this route looks.
    expect(await call('cf', { authorization: `Bearer ${await sign('acme')}` })).toMatchObject({ status: 401, message: 'missing bearer token' })
  })

  it('reads the token after another prefix, whatever its case', async () => {
    const t = await sign('acme')
    expect(await call('tok', { authorization: `Token ${t}` })).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('tok', { authorization: `token ${t}` })).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('tok', { authorization: `Bearer ${t}` })).toMatchObject({ status: 401, message: 'missing bearer token' })
  })

  it('keeps "Bearer " by default, in authorization and in another header', async () => {
    const t = await sign('acme')
    expect(await call('plain', { authorization: `Bearer ${t}` })).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('custom', { 'x-auth-token': `bearer ${t}` })).toMatchObject({ status: 200, tenant: 'acme' })
    expect(await call('custom', { 'x-auth-token': t })).toMatchObject({ status: 401, message: 'missing bearer token' })
  })

  it('refuses a prefix no header value can start with, naming the path', () => {
    const problem = (prefix: unknown) => {
      try {
        validateConfig({ listen: '127.0.0.1:0', tenants: { acme: {} }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant', jwt: { secret: 'x'.repeat(32), prefix } }] }] })
        return undefined
      } catch (err) {
        return (err as Error).message
      }
    }
    expect(problem('')).toBeUndefined()
    expect(problem('JWT ')).toBeUndefined()
    for (const bad of [' Bearer', 'Bé ', 'a\tb']) expect(problem(bad)).toMatch(/routes\[0\]\.filters\[0\]\.jwt\.prefix: expected printable ASCII/)
  })
})
