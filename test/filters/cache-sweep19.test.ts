// Response cache sweep 19: what the upstream is asked decides what a stored copy may answer
// (the request path, a wildcard route's Host), and conditional requests (If-None-Match,
// If-Modified-Since) neither break coalescing nor keep the cache empty. Real proxy, real
// node:http backend.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Pool, request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

interface Stats {
  calls: number
  conditional: number
  /** Hold answers until release() (to make concurrent misses overlap). */
  gate: Promise<void> | undefined
}

const ETAG = '"v1"'

/**
 * Answers with the path and Host it was asked on (an API version in the path, a site per
 * host, as Shopify's versioned endpoints or a multisite backend), an ETag, and 304 to a
 * matching If-None-Match, as graphql-yoga's / Express's etag handling does.
 */
function handler(stats: Stats) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    req.resume()
    req.on('end', () => {
      stats.calls++
      const answer = (): void => {
        if (req.headers['if-none-match'] === ETAG || req.headers['if-modified-since'] !== undefined) {
          stats.conditional++
          res.writeHead(304, { etag: ETAG })
          res.end()
          return
        }
        const path = (req.url ?? '').split('?')[0]
        const body = JSON.stringify({ data: { path, host: req.headers.host } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), etag: ETAG, 'last-modified': 'Tue, 01 Sep 2026 10:00:00 GMT' })
        res.end(body)
      }
      if (stats.gate === undefined) answer()
      else void stats.gate.then(answer)
    })
  }
}

describe('cache sweep 19', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const stats: Stats = { calls: 0, conditional: 0, gate: undefined }

  beforeAll(async () => {
    backend = await startRawBackend(handler(stats))
    proxy = await startTestProxy({
      workers: 1,
      routes: [
        { name: 'api', match: { pathPrefix: '/api' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never },
        { name: 'sites', match: { host: '*.shop.test', pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never },
        { name: 'cond', match: { pathPrefix: '/cond' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(path: string, query: string, headers: Record<string, string> = {}) {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query }) })
    const text = await res.body.text()
    const json = text === '' ? undefined : (JSON.parse(text) as { data?: { path: string; host: string } })
    return { status: res.statusCode, cache: res.headers['x-cache'], etag: res.headers.etag, data: json?.data, length: res.headers['content-length'] }
  }

  it('a stored answer from one upstream path never answers a request for another path of the route', async () => {
    const q = '{ path versioned }'
    expect(await post('/api/2024-01/graphql.json', q)).toMatchObject({ cache: 'MISS', data: { path: '/api/2024-01/graphql.json' } })
    expect(await post('/api/2024-01/graphql.json', q)).toMatchObject({ cache: 'HIT', data: { path: '/api/2024-01/graphql.json' } })
    // Another API version under the same route: its own answer, not 2024-01's.
    expect(await post('/api/2024-10/graphql.json', q)).toMatchObject({ cache: 'MISS', data: { path: '/api/2024-10/graphql.json' } })
    expect(await post('/api/2024-10/graphql.json', q)).toMatchObject({ cache: 'HIT', data: { path: '/api/2024-10/graphql.json' } })
  })

  it('a GET is keyed by its path and its non-GraphQL parameters, not by how the GraphQL ones are written', async () => {
    const get = async (url: string) => {
      const res = await request(`${proxy.url}${url}`, { headers: { accept: 'application/json' } })
      return { cache: res.headers['x-cache'], data: ((await res.body.json()) as { data: { path: string } }).data }
    }
    const q = encodeURIComponent('{ path viaGet }')
    expect(await get(`/api/v1/graphql?query=${q}`)).toMatchObject({ cache: 'MISS', data: { path: '/api/v1/graphql' } })
    expect(await get(`/api/v1/graphql?query=${q}&operationName=`)).toMatchObject({ cache: 'HIT', data: { path: '/api/v1/graphql' } })
    expect(await get(`/api/v2/graphql?query=${q}`)).toMatchObject({ cache: 'MISS', data: { path: '/api/v2/graphql' } })
    expect(await get(`/api/v2/graphql?locale=de&query=${q}`)).toMatchObject({ cache: 'MISS' })
    expect(await get(`/api/v2/graphql?query=${q}&locale=de`)).toMatchObject({ cache: 'HIT' })
  })

  it("a wildcard-host route that forwards the client's Host keeps one site's answers from another", async () => {
    const q = '{ host site }'
    expect(await post('/graphql', q, { host: 'a.shop.test' })).toMatchObject({ cache: 'MISS', data: { host: 'a.shop.test' } })
    expect(await post('/graphql', q, { host: 'A.shop.test' })).toMatchObject({ cache: 'HIT', data: { host: 'a.shop.test' } })
    expect(await post('/graphql', q, { host: 'b.shop.test' })).toMatchObject({ cache: 'MISS', data: { host: 'b.shop.test' } })
  })

  it('a conditional miss fetches the full response: it is stored, and a GET whose validator matches is then answered 304 from the cache', async () => {
    const q = encodeURIComponent('{ path conditional }')
    const get = async (headers: Record<string, string>) => {
      const res = await request(`${proxy.url}/cond/graphql?query=${q}`, { headers: { accept: 'application/json', ...headers } })
      const text = await res.body.text()
      return { status: res.statusCode, cache: res.headers['x-cache'], etag: res.headers.etag, type: res.headers['content-type'], data: text === '' ? undefined : (JSON.parse(text) as { data: unknown }).data }
    }
    const before = stats.calls
    const first = await get({ 'if-none-match': ETAG })
    // The client's validator does not reach the upstream: the cache needs the whole response.
    expect(first).toMatchObject({ status: 200, cache: 'MISS', data: { path: '/cond/graphql' } })
    expect(stats.conditional).toBe(0)
    expect(await get({})).toMatchObject({ status: 200, cache: 'HIT', etag: ETAG, data: { path: '/cond/graphql' } })
    expect(await get({ 'if-none-match': `"other", W/${ETAG}` })).toMatchObject({ status: 304, cache: 'HIT', etag: ETAG, type: undefined, data: undefined })
    expect(await get({ 'if-none-match': '"other"' })).toMatchObject({ status: 200, cache: 'HIT', data: { path: '/cond/graphql' } })
    expect(await get({ 'if-none-match': '*' })).toMatchObject({ status: 304, cache: 'HIT' })
    // If-Modified-Since counts only without If-None-Match (RFC 9110 13.1.3).
    expect(await get({ 'if-modified-since': 'Tue, 01 Sep 2026 10:00:00 GMT' })).toMatchObject({ status: 304, cache: 'HIT' })
    expect(await get({ 'if-modified-since': 'Mon, 31 Aug 2026 10:00:00 GMT' })).toMatchObject({ status: 200, cache: 'HIT' })
    expect(await get({ 'if-none-match': '"other"', 'if-modified-since': 'Tue, 01 Sep 2026 10:00:00 GMT' })).toMatchObject({ status: 200, cache: 'HIT' })
    // A POST is never answered 304 (RFC 9110 13.1.2 is for GET and HEAD).
    expect(await post('/cond/graphql', '{ path conditional }', { 'if-none-match': ETAG })).toMatchObject({ status: 200, data: { path: '/cond/graphql' } })
    expect(stats.calls - before).toBe(2) // the GET's miss and the POST's (its own key)
    expect(stats.conditional).toBe(0)
  })

  it('concurrent misses led by a conditional request make one upstream request', async () => {
    const q = '{ path stampede }'
    let release!: () => void
    stats.gate = new Promise<void>((r) => (release = r))
    const before = stats.calls
    try {
      const leader = post('/cond/graphql', q, { 'if-none-match': ETAG })
      await expect.poll(() => stats.calls - before, { timeout: 10_000 }).toBe(1)
      const followers = Array.from({ length: 5 }, () => post('/cond/graphql', q))
      // Give the followers time to arrive and wait for the leader's fill.
      await new Promise((r) => setTimeout(r, 300))
      release()
      const all = await Promise.all([leader, ...followers])
      expect(stats.calls - before).toBe(1)
      for (const r of all) expect(r.status).toBe(200)
      for (const r of all.slice(1)) expect(r.data).toEqual({ path: '/cond/graphql', host: expect.any(String) })
      expect(stats.calls - before).toBe(1)
    } finally {
      release()
      stats.gate = undefined
    }
  })

  it('a leader whose client goes away hands the fill to one waiting request, not to all of them at once', async () => {
    const q = '{ path abandoned }'
    let release!: () => void
    stats.gate = new Promise<void>((r) => (release = r))
    const before = stats.calls
    try {
      const ac = new AbortController()
      const leader = request(`${proxy.url}/cond/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: q }), signal: ac.signal }).catch(() => undefined)
      await expect.poll(() => stats.calls - before, { timeout: 10_000 }).toBe(1)
      const followers = Array.from({ length: 5 }, () => post('/cond/graphql', q))
      await new Promise((r) => setTimeout(r, 300)) // they wait for the leader's fill
      expect(stats.calls - before).toBe(1)
      ac.abort()
      await leader
      // One of them takes over the fill; the others keep waiting for it.
      await expect.poll(() => stats.calls - before, { timeout: 10_000 }).toBe(2)
      await new Promise((r) => setTimeout(r, 300))
      release()
      const all = await Promise.all(followers)
      expect(stats.calls - before).toBe(2)
      for (const r of all) expect(r).toMatchObject({ status: 200, data: { path: '/cond/graphql' } })
      expect(all.filter((r) => r.cache === 'MISS')).toHaveLength(1)
    } finally {
      release()
      stats.gate = undefined
    }
  })
})

describe('cache sweep 19, two workers', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const stats: Stats = { calls: 0, conditional: 0, gate: undefined }

  beforeAll(async () => {
    backend = await startRawBackend(handler(stats))
    proxy = await startTestProxy({ workers: 2, routes: [{ name: 'cond', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it("the waiting requests of both workers elect one new leader when the leader's client goes away", async () => {
    const q = JSON.stringify({ query: '{ path abandonedAcrossWorkers }' })
    let release!: () => void
    stats.gate = new Promise<void>((r) => (release = r))
    const pool = new Pool(proxy.url, { connections: 20 })
    try {
      const ac = new AbortController()
      const leader = request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: q, signal: ac.signal }).catch(() => undefined)
      await expect.poll(() => stats.calls, { timeout: 10_000 }).toBe(1)
      const followers = Array.from({ length: 20 }, async () => {
        const res = await pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json' }, body: q })
        return { status: res.statusCode, text: await res.body.text() }
      })
      await new Promise((r) => setTimeout(r, 500))
      expect(stats.calls).toBe(1)
      ac.abort()
      await leader
      await expect.poll(() => stats.calls, { timeout: 10_000 }).toBe(2)
      await new Promise((r) => setTimeout(r, 300))
      release()
      const all = await Promise.all(followers)
      for (const r of all) expect(r.status).toBe(200)
      expect(stats.calls).toBe(2)
      const m = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
      // the kernel spread the connections over both workers
      expect(m).toMatch(/igw_worker_requests_total\{[^}]*worker="0"[^}]*\} [1-9]/)
      expect(m).toMatch(/igw_worker_requests_total\{[^}]*worker="1"[^}]*\} [1-9]/)
    } finally {
      release()
      stats.gate = undefined
      await pool.close()
    }
  })
})
