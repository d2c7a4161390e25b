// The tenant filter names the resolved tenant to the backend in `forwardHeader`. When that is not
// the header a client names its tenant with (`header`, x-tenant-id by default) — `forwardHeader:
// x-org-id` — the client's own x-tenant-id went to the backend as it was sent, beside the tenant
// the gateway chose: with JWT auth an unverified "x-tenant-id: victim" reached the backend next to
// the token's "x-org-id: acme", and a backend (or its middleware, logs) reading the conventional
// name acted for the victim. Real proxy, real graphql-yoga backend, real tokens (jose), undici.
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const query = JSON.stringify({ query: '{ echo { org: header(name: "x-org-id") tenant: header(name: "x-tenant-id") } }' })
type Echo = { data?: { echo: { org: string | null; tenant: string | null } }; errors?: { message: string }[] }

async function gql(url: string, headers: Record<string, string>): Promise<{ status: number; body: Echo }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: query })
  return { status: res.statusCode, body: (await res.body.json()) as Echo }
}

describe('tenant filter sweep 19: the client\'s tenant header beside forwardHeader', () => {
  let backend: DemoBackend
  const proxies: TestProxy[] = []
  const secret = 'k'.repeat(40)

  beforeAll(async () => {
    backend = await startDemoBackend()
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await backend?.close()
  })

  const start = async (filter: Record<string, unknown>) => {
    const p = await startTestProxy({ tenants: { acme: {}, victim: {} }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', forwardHeader: 'x-org-id', ...filter }] as never }] })
    proxies.push(p)
    return p
  }

  it('JWT mode: the backend gets the token\'s tenant in x-org-id and no client-sent x-tenant-id', async () => {
    const p = await start({ jwt: { secret } })
    const token = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(secret))
    const r = await gql(p.url, { authorization: `Bearer ${token}`, 'x-tenant-id': 'victim' })
    expect(r.status).toBe(200)
    expect(r.body.data?.echo).toEqual({ org: 'acme', tenant: null })
  })

  it('header mode: an unknown tenant that fell back to the default is not passed on under the client\'s header', async () => {
    const p = await start({ defaultTenant: 'acme' })
    const r = await gql(p.url, { 'x-tenant-id': 'someone-else' })
    expect(r.status).toBe(200)
    expect(r.body.data?.echo).toEqual({ org: 'acme', tenant: null })
    // A known tenant is resolved as before; only x-org-id names it.
    const k = await gql(p.url, { 'x-tenant-id': 'victim' })
    expect(k.body.data?.echo).toEqual({ org: 'victim', tenant: null })
  })

  it('(guard) with the same header both ways, the resolved tenant replaces the client\'s', async () => {
    const p = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret } }] as never }] })
    proxies.push(p)
    const token = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(secret))
    const r = await gql(p.url, { authorization: `Bearer ${token}`, 'x-tenant-id': 'victim' })
    expect(r.body.data?.echo).toEqual({ org: null, tenant: 'acme' })
  })
})
