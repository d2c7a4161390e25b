// A raw `\` in a request path is a `/` to the URL standard's parser (browsers, and backends that
// read req.url with `new URL`: graphql-yoga, Hono, Next.js). The path normalizer left it alone, so
// `/public/..\admin/x` took the `/public` route (no filters) and its backend ran `/admin/x`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { normalizeTarget } from '../../proxy/path-normalize.ts'

const DEFAULTS = { normalize: true, mergeSlashes: false, escapedSlashes: 'keep' } as const

describe('normalizeTarget and backslashes', () => {
  it('reads a raw backslash as a slash, as a WHATWG URL parser does', () => {
    for (const target of ['/public/..\\admin/x', '/public\\..\\admin\\x', '/public/x/..\\..\\admin/x?q=a\\b']) {
      const want = new URL(target, 'http://h')
      expect(normalizeTarget(target, DEFAULTS)).toBe(want.pathname + want.search.replaceAll('%5C', '\\'))
    }
    expect(normalizeTarget('/public/..%5Cadmin', { ...DEFAULTS, escapedSlashes: 'unescape' })).toBe('/admin')
    expect(normalizeTarget('/a\\\\b', { ...DEFAULTS, mergeSlashes: true })).toBe('/a/b')
  })

  it('keeps a percent-encoded backslash and anything under normalize: false', () => {
    expect(normalizeTarget('/public/..%5Cadmin', DEFAULTS)).toBe('/public/..%5Cadmin')
    expect(normalizeTarget('/public/..\\admin', { ...DEFAULTS, normalize: false })).toBe('/public/..\\admin')
  })
})

describe('routing a path with a backslash', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      res.end(`backend saw ${req.url}`)
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        { name: 'admin', match: { pathPrefix: '/admin' }, upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }] },
        { name: 'public', match: { pathPrefix: '/public' }, upstream: backend.url, type: 'http' },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('takes the route the backend would run, with its filters', async () => {
    const out = (await rawExchange(proxy.port, 'GET /public/..\\admin/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')).toString('latin1')
    expect(out).not.toContain('backend saw')
    expect(out).toContain('UNKNOWN_TENANT')
    const ok = (await rawExchange(proxy.port, 'GET /public/..\\admin/x HTTP/1.1\r\nHost: a\r\nx-tenant-id: acme\r\nConnection: close\r\n\r\n')).toString('latin1')
    expect(ok).toContain('backend saw /admin/x')
  })
})
