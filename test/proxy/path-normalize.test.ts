// Path normalization before routing: a route guarded by filters (here: a tenant filter that
// refuses requests without a known tenant) must not be reachable through another route's prefix
// by spelling its path so that the backend, which resolves dot segments and escapes itself,
// serves it anyway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client } from 'undici'
import { normalizeTarget, removeDotSegments, type PathOptions } from '../../proxy/path-normalize.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const DEFAULTS: PathOptions = { normalize: true, mergeSlashes: false, escapedSlashes: 'keep' }

describe('normalizeTarget', () => {
  it('resolves dot segments (RFC 3986 §5.2.4), leaves the query alone, returns the same string when nothing changes', () => {
    const cases: [string, string][] = [
      ['/public/../admin/x', '/admin/x'],
      ['/a/./b/../c?x=/../y', '/a/c?x=/../y'],
      ['/a/b/..', '/a/'],
      ['/..', '/'],
      ['/../../etc/passwd', '/etc/passwd'],
      ['/a/.../b', '/a/.../b'],
      ['/a/.b/c', '/a/.b/c'],
      ['/a//b', '/a//b'],
    ]
    for (const [input, want] of cases) expect(normalizeTarget(input, DEFAULTS), input).toBe(want)
    const plain = '/graphql?query=%7B%20a%20%7D'
    expect(normalizeTarget(plain, DEFAULTS)).toBe(plain)
    expect(removeDotSegments('/x/y')).toBe('/x/y')
  })

  it('decodes escapes of unreserved characters (then resolves dots), upper-cases the others, keeps bad escapes', () => {
    expect(normalizeTarget('/public/%2e%2e/%61dmin/x', DEFAULTS)).toBe('/admin/x')
    expect(normalizeTarget('/a%7e/%c3%a9/%20', DEFAULTS)).toBe('/a~/%C3%A9/%20')
    expect(normalizeTarget('/a/%zz/%4', DEFAULTS)).toBe('/a/%zz/%4')
  })

  it('escaped slashes: kept (hex upper-cased), refused, or decoded (and then resolved); merge slashes when asked', () => {
    expect(normalizeTarget('/public/..%2fadmin', DEFAULTS)).toBe('/public/..%2Fadmin')
    expect(normalizeTarget('/public/..%2fadmin', { ...DEFAULTS, escapedSlashes: 'reject' })).toBeNull()
    expect(normalizeTarget('/public/..%5cadmin', { ...DEFAULTS, escapedSlashes: 'reject' })).toBeNull()
    expect(normalizeTarget('/public/x%2f..%2f..%2fadmin', { ...DEFAULTS, escapedSlashes: 'unescape' })).toBe('/admin')
    expect(normalizeTarget('//admin//x', { ...DEFAULTS, mergeSlashes: true })).toBe('/admin/x')
    expect(normalizeTarget('/public/../admin', { normalize: false, mergeSlashes: false, escapedSlashes: 'keep' })).toBe('/public/../admin')
  })
})

describe('through the proxy', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let raw: TestProxy
  const seen: string[] = []

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      seen.push(req.url!)
      // A backend that resolves the path itself, as most frameworks do.
      const path = new URL(req.url!, 'http://x').pathname
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(path.startsWith('/admin') ? 'ADMIN DATA' : 'public')
    })
    const doc = (listener: Record<string, unknown>) => ({
      listener,
      tenants: { acme: {} },
      routes: [
        { name: 'admin', match: { pathPrefix: '/admin' }, upstream: backend.url, type: 'http' as const, filters: [{ name: 'tenant' }] as never },
        { name: 'public', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' as const },
      ],
    })
    proxy = await startTestProxy(doc({}))
    raw = await startTestProxy(doc({ normalizePath: false }))
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    await backend?.close()
  })

  // A Client sends the path as given (a URL would resolve the dots on the client side).
  const get = async (p: TestProxy, path: string, headers: Record<string, string> = {}) => {
    const client = new Client(p.url)
    try {
      const res = await client.request({ path, method: 'GET', headers })
      return { status: res.statusCode, text: await res.body.text() }
    } finally {
      await client.close()
    }
  }

  it('a dot-segment or escaped spelling of /admin is routed to /admin and its filters, and the backend gets the normalized path', async () => {
    for (const path of ['/public/../admin/users', '/%61dmin/users', '/x/%2e%2e/admin/users', '/./admin/users']) {
      const r = await get(proxy, path)
      expect([path, r.status]).toEqual([path, 403]) // no tenant: the admin route's filter refused it
      expect(r.text).toContain('UNKNOWN_TENANT')
    }
    const before = seen.length
    const ok = await get(proxy, '/public/../admin/users?x=/../y', { 'x-tenant-id': 'acme' })
    expect([ok.status, ok.text]).toEqual([200, 'ADMIN DATA'])
    expect(seen.slice(before)).toEqual(['/admin/users?x=/../y'])
    expect(metricSum(await proxy.metricsText(), 'igw_requests_total', 'route="public"')).toBe(0)
  })

  it('with normalizePath: false the raw path routes (the old behaviour, for backends that need it verbatim)', async () => {
    const r = await get(raw, '/public/../admin/users')
    expect([r.status, r.text]).toEqual([200, 'ADMIN DATA']) // the bypass this setting re-opens
    expect(seen.at(-1)).toBe('/public/../admin/users')
  })
})
