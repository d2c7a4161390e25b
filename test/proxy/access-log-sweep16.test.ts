// The access log names the filter that answered a request itself, keeps client-chosen operation
// names bounded, and a GraphQL route reads JSON by its media type alone. Real proxy, real
// graphql-yoga backend (the demo), undici client.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('access log and JSON media types', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    demo = await startDemoBackend()
    proxy = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'api', upstream: demo.url, filters: [{ name: 'request-id' }, { name: 'tenant' }] }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
  })

  const post = (body: string, headers: Record<string, string> = {}) =>
    request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body })

  it('a refusal by a filter names it in the access line; a forwarded request names none', async () => {
    const refused = await post('{"query":"{ hello }"}', { 'x-tenant-id': 'nobody' })
    expect(refused.statusCode).toBe(403)
    const refusedId = refused.headers['x-request-id']
    await refused.body.text()
    const ok = await post('{"query":"{ hello }"}')
    expect(ok.statusCode).toBe(200)
    const okId = ok.headers['x-request-id']
    await ok.body.text()
    await expect.poll(() => proxy.logs.find('access').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2)
    const line = (id: unknown) => proxy.logs.find('access').find((l) => l.reqId === id)
    expect(line(refusedId)).toMatchObject({ status: 403, code: 'UNKNOWN_TENANT', filter: 'tenant' })
    expect(line(okId)?.filter).toBeUndefined()
  })

  it('an operation name of any length is logged as at most 128 characters', async () => {
    const name = `Op${'x'.repeat(5000)}`
    const r = await post(JSON.stringify({ query: `query ${name} { hello }`, operationName: name }))
    const id = r.headers['x-request-id']
    await r.body.text()
    await expect.poll(() => proxy.logs.find('access').some((l) => l.reqId === id), { timeout: 10_000 }).toBe(true)
    const op = String(proxy.logs.find('access').find((l) => l.reqId === id)!.op)
    expect(op.length).toBeLessThanOrEqual(129)
    expect(op.startsWith('Opxxx')).toBe(true)
  })

  it('JSON is read by its media type: any case passes; "+json" in a parameter or application/jsonp is not JSON (415)', async () => {
    for (const type of ['Application/JSON', 'application/json;charset=utf-8', 'APPLICATION/GRAPHQL-RESPONSE+JSON', 'application/vnd.api+json ; charset=utf-8']) {
      const r = await post('{"query":"{ hello }"}', { 'content-type': type })
      // The gateway reads and forwards it (what the backend makes of the spelling is its own).
      const text = await r.body.text()
      expect(text, type).not.toMatch(/UNSUPPORTED_MEDIA_TYPE/)
    }
    // A "simple" content type a browser sends cross-site without a CORS preflight.
    for (const type of ['text/plain; x=+json', 'application/jsonp', 'text/plain;charset=+json']) {
      const r = await post('{"query":"{ hello }"}', { 'content-type': type })
      const body = (await r.body.json()) as { errors: { extensions: { code: string } }[] }
      expect(r.statusCode, type).toBe(415)
      expect(body.errors[0]!.extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE')
    }
  })
})
