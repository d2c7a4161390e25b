// Tenant / persisted sweep 18b: header names in the filters' config are checked when the config is
// validated. Accepted, an empty or malformed name (or one the proxy owns) failed the filter on
// every request with a 500, in a config that had loaded (or been pushed by the control plane)
// without a word. Real config validation, then the real proxy with the names that are fine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const base = (filters: unknown[]) => ({
  listen: '127.0.0.1:0',
  tenants: { acme: {} },
  persistedDocuments: { operations: { hello: { document: '{ hello }' } } },
  routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters }],
})

function problem(filters: unknown[]): string | undefined {
  try {
    validateConfig(base(filters))
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

describe('filter header names are validated with the config', () => {
  it.each([
    ['tenant forwardHeader with a space', [{ name: 'tenant', defaultTenant: 'acme', forwardHeader: 'X Tenant' }], 'forwardHeader', 'expected an HTTP header name'],
    ['tenant forwardHeader empty', [{ name: 'tenant', defaultTenant: 'acme', forwardHeader: '' }], 'forwardHeader', 'expected an HTTP header name'],
    ['tenant forwardHeader the proxy owns', [{ name: 'tenant', defaultTenant: 'acme', forwardHeader: 'Content-Length' }], 'forwardHeader', 'the proxy does not set itself'],
    ['tenant forwardHeader hop-by-hop', [{ name: 'tenant', defaultTenant: 'acme', forwardHeader: 'connection' }], 'forwardHeader', 'the proxy does not set itself'],
    ['tenant header with a colon', [{ name: 'tenant', defaultTenant: 'acme', header: 'x-tenant-id:' }], 'header', 'expected an HTTP header name'],
    ['jwt header empty', [{ name: 'tenant', jwt: { header: '', secret: 'x'.repeat(32) } }], 'header', 'expected an HTTP header name'],
    ['persisted hints.header empty', [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', hints: { header: '' } }], 'hints.header', 'expected an HTTP header name'],
    ['persisted hints.header host', [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', hints: { header: 'Host' } }], 'hints.header', 'the proxy does not set itself'],
  ])('%s → refused, naming the field', (_name, filters, field, message) => {
    const msg = problem(filters)
    expect(msg).toContain(field)
    expect(msg).toContain(message)
  })

  it('names that are fine still load (case folded; proxy-authorization may carry the token)', () => {
    expect(problem([{ name: 'tenant', defaultTenant: 'acme', header: 'X-Org', forwardHeader: 'X-Org-Id' }, { name: 'persisted', hints: { header: 'X-Cost' } }])).toBeUndefined()
    expect(problem([{ name: 'tenant', jwt: { header: 'Proxy-Authorization', secret: 'x'.repeat(32) } }, { name: 'persisted', hints: { header: false } }])).toBeUndefined()
  })
})

describe('with valid names the filters set them toward the backend', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { hello: { document: '{ hello }', costUnits: 4 } } },
      routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme', forwardHeader: 'X-Org-Id' }, { name: 'persisted', hints: { header: 'X-Cost' } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('forwards the tenant and the hints under the configured (lower-cased) names', async () => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: 'hello' } } }) })
    expect(r.statusCode).toBe(200)
    const echo = (await r.body.json()) as { headers: Record<string, string> }
    expect(echo.headers['x-org-id']).toBe('acme')
    expect(JSON.parse(Buffer.from(echo.headers['x-cost']!, 'base64url').toString())).toMatchObject({ id: 'hello', cost: 4 })
  })
})
