// A header name spelled with `_` is the same CGI variable as its `-` spelling (HTTP_X_FORWARDED_FOR
// for both): relayed, a client's `X_Forwarded_For` or `X_Tenant_Id` reached WSGI/Rack/PHP backends
// beside the proxy's X-Forwarded-For and the tenant filter's x-tenant-id and was read in their
// place (CVE-2024-45614 in Puma). Through a real igw and an echo backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    forwarded: { trustIncoming: false },
    tenants: { acme: {} },
    routes: [
      { name: 'tenant', match: { pathPrefix: '/t' }, upstream: backend.url, type: 'http', filters: [{ name: 'request-id' }, { name: 'tenant' }] },
      { name: 'all', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' },
    ],
  } as never)
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function seen(path: string, headers: Record<string, string>): Promise<string[]> {
  const res = await request(`${proxy.url}${path}`, { headers })
  expect(res.statusCode).toBe(200)
  return ((await res.body.json()) as { rawHeaders: string[] }).rawHeaders
}

/** The values the backend got under names that a CGI gateway maps to HTTP_<name>. */
function cgi(raw: string[], name: string): string[] {
  const want = name.toLowerCase().replaceAll('-', '_')
  return raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase().replaceAll('-', '_') === want)
}

describe('underscore spellings of headers the proxy owns', () => {
  it('a client X_Forwarded_For / X_Real_IP / Forwarded-style alias does not reach the backend at the edge', async () => {
    const raw = await seen('/x', { 'X_Forwarded_For': '6.6.6.6', 'x_real_ip': '6.6.6.6', 'X_Forwarded_Proto': 'https', 'Proxy_Authorization': 'Basic eA==' })
    expect(cgi(raw, 'x-forwarded-for')).toEqual(['127.0.0.1'])
    expect(cgi(raw, 'x-forwarded-proto')).toEqual(['http'])
    expect(cgi(raw, 'x-real-ip')).toEqual([])
    expect(cgi(raw, 'proxy-authorization')).toEqual([])
  })

  it('a client X_Tenant_Id does not sit beside the tenant filter x-tenant-id, nor X_Request_Id beside the id', async () => {
    const raw = await seen('/t', { 'x-tenant-id': 'acme', 'X_Tenant_Id': 'victim', 'x-request-id': 'abc-1', 'X_Request_Id': 'forged' })
    expect(cgi(raw, 'x-tenant-id')).toEqual(['acme'])
    expect(cgi(raw, 'x-request-id')).toEqual(['abc-1'])
  })

  it('other underscore names pass unchanged', async () => {
    const raw = await seen('/x', { api_key: 'k1', 'My_Header': 'v' })
    expect(cgi(raw, 'api_key')).toEqual(['k1'])
    expect(cgi(raw, 'my-header')).toEqual(['v'])
  })
})
