// HTTP data-path defects found in sweep 17, each through a real igw proxy (worker threads and
// all) with real backends: a raw TCP upstream that misbehaves on cue, node:http echo backends and
// the graphql-yoga demo backend.
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { echoHandler, rawExchange, startDemoBackend, startRawBackend, startRawTcpUpstream } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { Router, type Routable } from '../../proxy/router.ts'

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

async function metrics(proxy: TestProxy): Promise<string> {
  return (await request(`${proxy.adminUrl}/metrics`)).body.text()
}

describe('a response the gateway cuts mid-body is no client abort', () => {
  it('an upstream that dies or times out mid-body counts in igw_proxy_errors_total, not igw_client_aborts_total; a client that leaves still does', async () => {
    const up = await startRawTcpUpstream((sock, _head, path) => {
      if (path === '/short') {
        // Declares 10 bytes, sends 3, closes: the client must see a cut response.
        sock.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc')
        sock.end()
      } else if (path === '/stall' || path === '/leave') {
        sock.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc') // and then nothing
      }
    })
    cleanups.push(up.close)
    const proxy = await startTestProxy({
      mode: 'ingress',
      upstreams: { up: { url: up.url } },
      routes: [
        { name: 'cut', match: { pathPrefix: '/short' }, upstream: 'up', type: 'http' },
        { name: 'slow', match: { pathPrefix: '/stall' }, upstream: 'up', type: 'http', timeouts: { totalMs: 500 } },
        { name: 'left', match: { pathPrefix: '/leave' }, upstream: 'up', type: 'http' },
      ],
    })
    cleanups.push(() => proxy.close())

    const short = await request(`${proxy.url}/short`)
    expect(short.statusCode).toBe(200)
    await expect(short.body.text()).rejects.toThrow() // truncated, visibly

    const stalled = await request(`${proxy.url}/stall`)
    expect(stalled.statusCode).toBe(200)
    await expect(stalled.body.text()).rejects.toThrow() // cut at totalMs

    // The control: a client that really leaves mid-body is a client abort.
    const ac = new AbortController()
    const left = await request(`${proxy.url}/leave`, { signal: ac.signal })
    left.body.on('error', () => undefined)
    ac.abort()

    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_client_aborts_total', 'route="left"'), { timeout: 10_000 }).toBe(1)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_requests_total', 'route="slow"'), { timeout: 10_000 }).toBe(1)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_requests_total', 'route="cut"'), { timeout: 10_000 }).toBe(1)
    const text = await metrics(proxy)
    expect(metricSum(text, 'igw_proxy_errors_total', 'route="cut",code="UPSTREAM_UNAVAILABLE"')).toBe(1)
    expect(metricSum(text, 'igw_proxy_errors_total', 'route="slow",code="UPSTREAM_TIMEOUT"')).toBe(1)
    expect(metricSum(text, 'igw_client_aborts_total', 'route="cut"')).toBe(0)
    expect(metricSum(text, 'igw_client_aborts_total', 'route="slow"')).toBe(0)
    // The access lines still say the response was cut, and why.
    const cut = proxy.logs.lines.find((l) => l.msg === 'access' && l.route === 'cut')
    expect(cut).toMatchObject({ status: 200, code: 'UPSTREAM_UNAVAILABLE', aborted: true })
  })
})

describe('a Host with a trailing dot (an absolute domain name)', () => {
  it('is routed to the routes of that host, not past them to the host-less routes', async () => {
    const admin = await startRawBackend(echoHandler)
    const fallback = await startRawBackend(echoHandler)
    cleanups.push(admin.close, fallback.close)
    const proxy = await startTestProxy({
      mode: 'ingress',
      upstreams: { admin: { url: admin.url }, fallback: { url: fallback.url } },
      routes: [
        { name: 'admin', match: { host: 'admin.example.com' }, upstream: 'admin', type: 'http' },
        { name: 'wild', match: { host: '*.internal.example.com' }, upstream: 'admin', type: 'http' },
        { name: 'rest', match: { pathPrefix: '/' }, upstream: 'fallback', type: 'http' },
      ],
    })
    cleanups.push(() => proxy.close())
    for (const host of ['admin.example.com.', 'ADMIN.Example.COM.:8080', 'svc.internal.example.com.']) {
      const raw = (await rawExchange(proxy.port, `GET /secret HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`, 10_000)).toString('latin1')
      expect(raw.startsWith('HTTP/1.1 200 '), host).toBe(true)
    }
    expect(admin.requests.length).toBe(3)
    expect(fallback.requests.length).toBe(0)
  })

  it('the router itself: a trailing dot names the same host, with or without a port; a lone "." is no host', () => {
    const r = (name: string, host: string | undefined, pathPrefix = '/'): Routable => ({ name, host, pathPrefix })
    const router = new Router([r('any', undefined), r('exact', 'api.example.com'), r('ported', 'local.test:8080'), r('wild', '*.example.org'), r('wildport', '*.example.net:8443')])
    expect(router.match('api.example.com.', '/')?.name).toBe('exact')
    expect(router.match('api.example.com.:443', '/')?.name).toBe('exact')
    expect(router.match('local.test.:8080', '/')?.name).toBe('ported')
    expect(router.match('a.example.org.', '/')?.name).toBe('wild')
    expect(router.match('a.example.net.:8443', '/')?.name).toBe('wildport')
    expect(router.match('api.example.com..', '/')?.name).toBe('any') // not a name
    expect(router.match('.', '/')?.name).toBe('any')
    expect(router.match('[::1]:8080', '/')?.name).toBe('any')
  })
})

describe('a persisted document too long for a URL, asked for by GET', () => {
  // 700 aliased fields: ~18 KB of document, more once URL-encoded (node:http reads 16 KB of head).
  const BIG = `query Big($who: String) {\n  ${Array.from({ length: 700 }, (_, i) => `f${i}: hello(name: $who)`).join('\n  ')}\n}`
  const SMALL = 'query Small { hello }'
  const ext = encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: 'big' } }))

  it('reaches the backend as a POST of the document (the client asked by a short hash), not as a URL the backend refuses with a bare 431', async () => {
    const yoga = await startDemoBackend()
    cleanups.push(() => yoga.close())
    const proxy = await startTestProxy({
      persistedDocuments: { operations: { big: { document: BIG } } },
      routes: [{ name: 'graphql', upstream: yoga.url, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'persisted' }] as never }],
    })
    cleanups.push(() => proxy.close())
    const vars = encodeURIComponent(JSON.stringify({ who: 'get' }))
    const res = await request(`${proxy.url}/graphql?extensions=${ext}&variables=${vars}`)
    expect(res.statusCode).toBe(200)
    const json = (await res.body.json()) as { data?: Record<string, string> }
    expect(Object.keys(json.data ?? {}).length).toBe(700)
    expect(json.data?.f699).toBe('Hello, get!')
  })

  it('the POST keeps the other query parameters and the variables as the client wrote them; a short one stays a GET', async () => {
    const seen: { method?: string; url?: string; type?: string; body: string }[] = []
    const backend = await startRawBackend((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, type: req.headers['content-type'], body })
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{}}')
      })
    })
    cleanups.push(backend.close)
    const proxy = await startTestProxy({
      persistedDocuments: { operations: { big: { document: BIG }, small: { document: SMALL } } },
      routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'persisted' }] as never }],
    })
    cleanups.push(() => proxy.close())
    // A number beyond 2^53 keeps its digits; a parameter that is not GraphQL's stays in the URL.
    const vars = encodeURIComponent('{"who":"x","n":9007199254740993}')
    const big = await request(`${proxy.url}/graphql?tenant=a%20b&extensions=${ext}&variables=${vars}&x=1`, { headers: { 'content-type': 'text/plain' } })
    expect(big.statusCode).toBe(200)
    await big.body.text()
    expect(seen[0]).toMatchObject({ method: 'POST', url: '/graphql?tenant=a%20b&x=1', type: 'application/json' })
    const sent = JSON.parse(seen[0]!.body) as { query: string; variables: unknown; extensions?: unknown }
    expect(sent.query).toBe(BIG)
    expect(sent.extensions).not.toHaveProperty('persistedQuery') // (the filter's cost hints may ride along)
    expect(seen[0]!.body).toContain('"variables":{"who":"x","n":9007199254740993}')

    const smallExt = encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: 'small' } }))
    const small = await request(`${proxy.url}/graphql?extensions=${smallExt}`)
    expect(small.statusCode).toBe(200)
    await small.body.text()
    expect(seen[1]).toMatchObject({ method: 'GET', body: '' })
    expect(new URL(seen[1]!.url!, 'http://x').searchParams.get('query')).toBe(SMALL)
  })
})

describe('a CORS preflight on a GraphQL route whose filters want credentials', () => {
  it('reaches the backend, which answers it (a preflight carries no credentials: it got 403/401 and the browser never sent the real request)', async () => {
    const seen: string[] = []
    const backend = await startRawBackend((req, res) => {
      seen.push(`${req.method} ${req.headers['x-tenant-id'] ?? '-'}`)
      if (req.method === 'OPTIONS') {
        res.writeHead(204, { 'access-control-allow-origin': 'https://app.example', 'access-control-allow-headers': 'content-type, x-tenant-id', 'access-control-allow-methods': 'GET, POST' })
        res.end()
        return
      }
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{"ok":true}}')
      })
    })
    cleanups.push(backend.close)
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'tenant' }] as never }],
    })
    cleanups.push(() => proxy.close())
    const preflight = await request(`${proxy.url}/graphql`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-tenant-id' },
    })
    expect(preflight.statusCode).toBe(204)
    expect(preflight.headers['access-control-allow-origin']).toBe('https://app.example')
    await preflight.body.text()
    // The request the preflight allowed, with its tenant: served.
    const real = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { origin: 'https://app.example', 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ ok }"}' })
    expect(real.statusCode).toBe(200)
    await real.body.text()
    // Without a tenant, the real request is still refused; so is an OPTIONS that is no preflight
    // (no Access-Control-Request-Method) or that carries a body.
    const anonymous = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ ok }"}' })
    expect(anonymous.statusCode).toBe(403)
    await anonymous.body.text()
    const plain = await request(`${proxy.url}/graphql`, { method: 'OPTIONS', headers: { origin: 'https://app.example' } })
    expect(plain.statusCode).toBe(403)
    await plain.body.text()
    const withBody = await request(`${proxy.url}/graphql`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'content-type': 'application/json' }, body: '{"query":"{ ok }"}' })
    expect(withBody.statusCode).toBe(403)
    await withBody.body.text()
    expect(seen).toEqual(['OPTIONS -', 'POST acme'])
  })
})
