// The cache filter through the real proxy (worker threads) against the real graphql-yoga demo
// backend (and, where a test must dictate response headers or failures, a plain node:http
// backend), with undici clients: hits and misses, tenant isolation under attack, vary and
// private requests, TTL and Cache-Control, errors never stored, single-flight across two
// workers, SWR, stale-if-error, and write-through invalidation across workers.
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Pool, request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

const SECRET = 'an-hmac-secret-of-at-least-32-characters!'
type Json = { data?: Record<string, unknown> | null; errors?: { message: string; extensions?: { code?: string } }[] }
type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>

function doc(upstream: string, cache: Record<string, unknown> = {}, extra: Partial<GatewayConfigInput> = {}, tenant: Record<string, unknown> = {}): Doc {
  return {
    tenants: { acme: {}, globex: {} },
    routes: [{ name: 'graphql', upstream, filters: [{ name: 'request-id' }, { name: 'tenant', ...tenant }, { name: 'persisted' }, { name: 'cache', ...cache }] as never }],
    // A short drain (its idle keep-alive grace is a quarter of it, 100 ms): every request has been
    // answered before close(), and the default waits 1 s for the client's idle connections.
    shutdown: { drainTimeoutMs: 400 },
    ...extra,
  }
}

async function gql(url: string, body: unknown, headers: Record<string, string> = {}, via?: Pool) {
  const opts = { method: 'POST' as const, headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: JSON.stringify(body) }
  const res = via ? await via.request({ path: '/graphql', ...opts }) : await request(`${url}/graphql`, opts)
  const text = await res.body.text()
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, age: res.headers.age as string | undefined, headers: res.headers, text, json: JSON.parse(text) as Json }
}


async function metrics(p: TestProxy): Promise<string> {
  return (await request(`${p.adminUrl}/metrics`)).body.text()
}

describe('read-through cache (1 worker)', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy(
      doc(backend.url, { vary: { headers: ['accept-language'] }, invalidation: { mutationTags: { updateEntity: ['Query.entities'] } } }, {
        persistedDocuments: { operations: { hot: { document: 'query Hot { entities(first: 3) { id name } }', cacheTtlSeconds: 120 }, never: { document: 'query Never { hello }', cacheTtlSeconds: 0 } } },
      }),
    )
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('MISS then HIT with the same bytes, and an Age header; the backend runs once', async () => {
    const q = { query: 'query H($n: String) { hello(name: $n) }', variables: { n: 'cache' } }
    const before = backend.stats.byField.get('hello') ?? 0
    const a = await gql(proxy.url, q)
    const b = await gql(proxy.url, { ...q, variables: { n: 'cache' } })
    expect([a.cache, b.cache]).toEqual(['MISS', 'HIT'])
    expect(b.text).toBe(a.text)
    expect(b.age).toBe('0')
    expect(b.headers['content-type']).toBe(a.headers['content-type'])
    expect(backend.stats.byField.get('hello')! - before).toBe(1)
  })

  it('keys canonicalize variables (key order) and the document (formatting), not their spelling', async () => {
    const first = await gql(proxy.url, { query: '{ entity(id: "1") { id name } }', variables: { a: 1, b: { y: 2, x: 1 } } })
    const reordered = await gql(proxy.url, { query: '{\n  entity(id: "1") {\n    id\n    name\n  }\n}', variables: { b: { x: 1, y: 2 }, a: 1 } })
    expect([first.cache, reordered.cache]).toEqual(['MISS', 'HIT'])
    const other = await gql(proxy.url, { query: '{ entity(id: "1") { id name } }', variables: { a: 2, b: { y: 2, x: 1 } } })
    expect(other.cache).toBe('MISS')
  })

  it('never serves an entry to another tenant', async () => {
    const q = { query: '{ echo { header(name: "x-tenant-id") } }' }
    const acme = await gql(proxy.url, q, { 'x-tenant-id': 'acme' })
    const acme2 = await gql(proxy.url, q, { 'x-tenant-id': 'acme' })
    const globex = await gql(proxy.url, q, { 'x-tenant-id': 'globex' })
    const globex2 = await gql(proxy.url, q, { 'x-tenant-id': 'globex' })
    expect([acme.cache, acme2.cache, globex.cache, globex2.cache]).toEqual(['MISS', 'HIT', 'MISS', 'HIT'])
    expect(acme2.json.data).toEqual({ echo: { header: 'acme' } })
    expect(globex.json.data).toEqual({ echo: { header: 'globex' } })
    expect(globex2.json.data).toEqual({ echo: { header: 'globex' } })
    // an unknown tenant is refused before the cache is consulted
    const unknown = await gql(proxy.url, q, { 'x-tenant-id': 'initech' })
    expect(unknown.status).toBe(403)
    expect(unknown.cache).toBeUndefined()
  })

  it('vary headers split entries; private requests (Authorization, Cookie) bypass', async () => {
    const q = { query: '{ echo { header(name: "accept-language") } }' }
    const en = await gql(proxy.url, q, { 'accept-language': 'en' })
    const de = await gql(proxy.url, q, { 'accept-language': 'de' })
    const en2 = await gql(proxy.url, q, { 'accept-language': 'en' })
    expect([en.cache, de.cache, en2.cache]).toEqual(['MISS', 'MISS', 'HIT'])
    expect(de.json.data).toEqual({ echo: { header: 'de' } })
    expect(en2.json.data).toEqual({ echo: { header: 'en' } })
    const auth = await gql(proxy.url, q, { 'accept-language': 'en', authorization: 'Bearer abc' })
    const cookie = await gql(proxy.url, q, { 'accept-language': 'en', cookie: 'session=1' })
    expect([auth.cache, cookie.cache]).toEqual(['BYPASS', 'BYPASS'])
  })

  it('mutations and subscriptions are never cached; x-cache is on every response', async () => {
    const m = { query: 'mutation { updateEntity(id: "30", name: "m") { id name } }' }
    expect((await gql(proxy.url, m)).cache).toBe('BYPASS')
    expect((await gql(proxy.url, m)).cache).toBe('BYPASS')
    const never = await gql(proxy.url, { extensions: { persistedQuery: { version: 1, sha256Hash: 'never' } } })
    expect(never.cache).toBe('BYPASS')
    const bad = await gql(proxy.url, { query: '{ nope' }, { accept: 'application/graphql-response+json' })
    expect(bad.status).toBe(400)
  })

  it('responses with errors are never stored', async () => {
    const before = backend.stats.byField.get('boom') ?? 0
    const a = await gql(proxy.url, { query: '{ boom }' })
    const b = await gql(proxy.url, { query: '{ boom }' })
    expect(a.json.errors?.length).toBe(1)
    expect([a.cache, b.cache]).toEqual(['MISS', 'MISS'])
    expect(backend.stats.byField.get('boom')! - before).toBe(2)
    expect(metricSum(await metrics(proxy), 'igw_cache_not_stored_total', 'reason="errors"')).toBeGreaterThanOrEqual(2)
  })

  it('a mutation invalidates the entries holding the entities it returns (read-your-writes), and mapped tags', async () => {
    const read = { query: 'query E { entity(id: "7") { id name } }' }
    const list = { extensions: { persistedQuery: { version: 1, sha256Hash: 'hot' } } }
    expect((await gql(proxy.url, read)).cache).toBe('MISS')
    expect((await gql(proxy.url, list)).cache).toBe('MISS')
    const cached = await gql(proxy.url, read)
    expect(cached.cache).toBe('HIT')
    // __typename was added upstream so the entity can be tagged (as Apollo Client does)
    expect(cached.json.data).toEqual({ entity: { id: '7', name: 'Entity 7', __typename: 'Entity' } })
    expect((await gql(proxy.url, list)).cache).toBe('HIT')
    const m = await gql(proxy.url, { query: 'mutation { updateEntity(id: "7", name: "Seven") { id name } }' })
    expect(m.json.data).toEqual({ updateEntity: { id: '7', name: 'Seven', __typename: 'Entity' } })
    const after = await gql(proxy.url, read)
    expect(after.cache).toBe('MISS')
    expect(after.json.data).toEqual({ entity: { id: '7', name: 'Seven', __typename: 'Entity' } })
    // the list does not hold entity 7 … but updateEntity is mapped to Query.entities
    expect((await gql(proxy.url, list)).cache).toBe('MISS')
    // an entity no entry holds invalidates nothing else
    expect((await gql(proxy.url, { query: '{ entity(id: "1") { id name } }', variables: { a: 1, b: { y: 2, x: 1 } } })).cache).toBe('HIT')
  })

  it('counts lookups by result and exports the hit ratio per persisted id', async () => {
    const list = { extensions: { persistedQuery: { version: 1, sha256Hash: 'hot' } } }
    await gql(proxy.url, list)
    await gql(proxy.url, list)
    const text = await metrics(proxy)
    expect(metricSum(text, 'igw_cache_requests_total', 'result="hit"')).toBeGreaterThanOrEqual(5)
    expect(metricSum(text, 'igw_cache_requests_total', 'result="miss"')).toBeGreaterThanOrEqual(5)
    expect(metricSum(text, 'igw_cache_requests_total', 'result="bypass"')).toBeGreaterThanOrEqual(3)
    const ratio = metricSum(text, 'igw_cache_hit_ratio', 'persisted_id="hot"')
    const hits = metricSum(text, 'igw_cache_persisted_requests_total', 'persisted_id="hot",result="hit"')
    const misses = metricSum(text, 'igw_cache_persisted_requests_total', 'persisted_id="hot",result="miss"')
    expect(hits).toBeGreaterThanOrEqual(2)
    expect(ratio).toBeCloseTo(hits / (hits + misses), 5)
  })
})

describe('TTL and Cache-Control', () => {
  let raw: RawBackend
  let proxy: TestProxy
  let calls = 0
  beforeAll(async () => {
    // A backend whose headers the test dictates through request headers.
    raw = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        calls++
        const h: Record<string, string> = { 'content-type': 'application/json' }
        const cc = req.headers['x-test-cache-control']
        if (typeof cc === 'string') h['cache-control'] = cc
        if (req.headers['x-test-cookie']) h['set-cookie'] = 'a=b'
        const big = Number(req.headers['x-test-big'] ?? 0)
        const status = Number(req.headers['x-test-status'] ?? 200)
        res.writeHead(status, h)
        res.end(JSON.stringify({ data: { n: calls, pad: 'x'.repeat(big) } }))
      })
    })
    proxy = await startTestProxy(doc(raw.url, { ttlSeconds: 1, maxEntryBytes: 4096 }))
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })
  const q = (name: string) => ({ query: `query ${name} { n }` })

  // Side by side: distinct keys, and the first waits out the TTL.
  it.concurrent('entries expire after the TTL', async () => {
    const a = await gql(proxy.url, q('Ttl'))
    const b = await gql(proxy.url, q('Ttl'))
    expect([a.cache, b.cache]).toEqual(['MISS', 'HIT'])
    await sleep(1100)
    const c = await gql(proxy.url, q('Ttl'))
    expect(c.cache).toBe('MISS')
    expect(c.json.data!.n).not.toBe(a.json.data!.n)
  })

  it.concurrent('no-store, private, no-cache, max-age=0 and Set-Cookie responses are not stored; max-age caps the TTL', async () => {
    for (const [name, headers] of [
      ['NoStore', { 'x-test-cache-control': 'no-store' }],
      ['Private', { 'x-test-cache-control': 'private, max-age=60' }],
      ['NoCache', { 'x-test-cache-control': 'no-cache' }],
      ['Zero', { 'x-test-cache-control': 'max-age=0' }],
      ['Cookie', { 'x-test-cookie': '1' }],
      ['Status', { 'x-test-status': '203' }],
    ] as const) {
      const a = await gql(proxy.url, q(name), headers)
      const b = await gql(proxy.url, q(name), headers)
      expect([name, a.cache, b.cache]).toEqual([name, 'MISS', 'MISS'])
    }
    // with ttlSeconds 1 a longer max-age changes nothing; s-maxage beats max-age for a shared cache
    const long = { 'x-test-cache-control': 'public, max-age=0, s-maxage=60' }
    expect((await gql(proxy.url, q('Shared'), long)).cache).toBe('MISS')
    expect((await gql(proxy.url, q('Shared'), long)).cache).toBe('HIT')
  })

  it.concurrent('a response larger than maxEntryBytes streams through whole and is not stored', async () => {
    const a = await gql(proxy.url, q('Big'), { 'x-test-big': '20000' })
    const b = await gql(proxy.url, q('Big'), { 'x-test-big': '20000' })
    expect([a.cache, b.cache]).toEqual(['MISS', 'MISS'])
    expect((a.json.data!.pad as string).length).toBe(20000)
    expect(metricSum(await metrics(proxy), 'igw_cache_not_stored_total', 'reason="too_large"')).toBe(2)
  })
})

describe('stale-while-revalidate and stale-if-error', () => {
  let backend: DemoBackend
  let raw: RawBackend
  let failing = false
  let rawCalls = 0
  let proxy: TestProxy
  let sie: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    raw = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        rawCalls++
        if (failing) {
          res.writeHead(503, { 'content-type': 'text/plain' })
          res.end('down')
          return
        }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { v: rawCalls } }))
      })
    })
    // Two independent proxies (own backends, ports and caches): started side by side.
    ;[proxy, sie] = await Promise.all([
      startTestProxy(doc(backend.url, { ttlSeconds: 1, staleWhileRevalidateSeconds: 30 })),
      startTestProxy(doc(raw.url, { ttlSeconds: 1, staleIfErrorSeconds: 30 })),
    ])
  })
  afterAll(async () => {
    await proxy?.close()
    await sie?.close()
    await backend?.close()
    await raw?.close()
  })

  // The two tests use their own proxy and backend: they wait out their TTLs side by side.
  it.concurrent('after the TTL the stale entry is served at once while one background request refreshes it', async () => {
    const q = { query: '{ entity(id: "12") { id name } }' }
    expect((await gql(proxy.url, q)).cache).toBe('MISS')
    // change the data behind the gateway's back (no invalidation)
    await request(`${backend.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'mutation { updateEntity(id: "12", name: "Twelve") { id } }' }) }).then((r) => r.body.dump())
    await sleep(1100)
    const before = backend.stats.byField.get('entity') ?? 0
    const stale = await Promise.all([gql(proxy.url, q), gql(proxy.url, q), gql(proxy.url, q)])
    // the first is answered stale at once; the others too, unless the refresh already landed
    // (a loaded machine): then they are hits with the new data, never a wait or a second refresh
    expect(stale[0]!.cache).toBe('STALE')
    for (const r of stale) {
      const name = r.cache === 'STALE' ? 'Entity 12' : 'Twelve'
      expect([r.cache, r.json.data]).toEqual([r.cache === 'STALE' ? 'STALE' : 'HIT', { entity: { id: '12', name, __typename: 'Entity' } }])
    }
    await sleep(150)
    expect(backend.stats.byField.get('entity')! - before).toBe(1)
    const fresh = await gql(proxy.url, q)
    expect(fresh.cache).toBe('HIT')
    expect(fresh.json.data).toEqual({ entity: { id: '12', name: 'Twelve', __typename: 'Entity' } })
  })

  it.concurrent('after the TTL, an upstream failure is answered with the stale entry (200, STALE)', async () => {
    const q = { query: '{ v }' }
    const first = await gql(sie.url, q)
    expect(first.cache).toBe('MISS')
    await sleep(1100)
    failing = true
    try {
      const stale = await gql(sie.url, q)
      expect(stale.status).toBe(200)
      expect(stale.cache).toBe('STALE')
      expect(stale.json).toEqual(first.json)
      expect(stale.headers['x-request-id']).toBeDefined()
      // an unreachable upstream too
      await raw.close()
      const gone = await gql(sie.url, q)
      expect([gone.status, gone.cache]).toEqual([200, 'STALE'])
      // nothing cached to fall back on: the error goes through
      const other = await gql(sie.url, { query: '{ w }' })
      expect(other.status).toBe(502)
    } finally {
      failing = false
    }
  })
})

describe('refresh-ahead', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy(doc(backend.url, { ttlSeconds: 2, refreshAheadSeconds: 1 }))
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  // Side by side (each waits out most of a TTL): the second asks for another field than
  // `entity`, whose upstream calls the first counts, and never hits in a last second.
  it.concurrent('a hit in the last second of the TTL renews the entry in the background; a hit before it does not; nothing stale is served', async () => {
    const q = { query: '{ entity(id: "21") { id name } }' }
    const calls = () => backend.stats.byField.get('entity') ?? 0
    const refreshes = async () => metricSum(await metrics(proxy), 'igw_cache_refreshes_total', 'trigger="ahead"')
    const t0 = Date.now()
    expect((await gql(proxy.url, q)).cache).toBe('MISS')
    const afterMiss = calls()
    // early in the TTL: a plain hit
    expect((await gql(proxy.url, q)).cache).toBe('HIT')
    await sleep(100)
    expect([calls() - afterMiss, await refreshes()]).toEqual([0, 0])
    // change the data behind the gateway's back (no invalidation), then hit in the last second
    await request(`${backend.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'mutation { updateEntity(id: "21", name: "Twenty-one") { id } }' }) }).then((r) => r.body.dump())
    await sleep(Math.max(0, 1250 - (Date.now() - t0)))
    const late = await gql(proxy.url, q)
    // still within the TTL: the entry as stored, as a HIT (never STALE)
    expect([late.cache, late.json.data]).toEqual(['HIT', { entity: { id: '21', name: 'Entity 21', __typename: 'Entity' } }])
    await sleep(300)
    expect(calls() - afterMiss).toBe(1)
    expect(await refreshes()).toBe(1)
    // the renewed entry: new data, young, and it outlives the first entry's TTL without a miss
    await sleep(Math.max(0, 2300 - (Date.now() - t0)))
    const renewed = await gql(proxy.url, q)
    expect([renewed.cache, renewed.json.data]).toEqual(['HIT', { entity: { id: '21', name: 'Twenty-one', __typename: 'Entity' } }])
    expect(Number(renewed.age)).toBeLessThanOrEqual(1)
    expect(calls() - afterMiss).toBe(1)
  })

  it.concurrent('an entry nobody asks for in its last second expires into an ordinary miss', async () => {
    const q = { query: '{ hello(name: "refresh-ahead") }' }
    expect((await gql(proxy.url, q)).cache).toBe('MISS')
    await sleep(2100)
    expect((await gql(proxy.url, q)).cache).toBe('MISS')
  })
})

describe('two workers', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({ ...doc(backend.url), workers: 2 })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('single-flight: 100 concurrent misses on one key make 1 upstream request, across both workers', async () => {
    const pool = new Pool(proxy.url, { connections: 100 })
    try {
      const before = backend.stats.byField.get('slow') ?? 0
      const q = { query: 'query Slow { slow(ms: 600) }' }
      const all = await Promise.all(Array.from({ length: 100 }, () => gql(proxy.url, q, {}, pool)))
      expect(all.every((r) => r.status === 200 && r.json.data?.slow === 'waited 600 ms')).toBe(true)
      expect(backend.stats.byField.get('slow')! - before).toBe(1)
      expect(all.filter((r) => r.cache === 'MISS')).toHaveLength(1)
      expect(all.filter((r) => r.cache === 'HIT')).toHaveLength(99)
      const text = await metrics(proxy)
      // the kernel spread the connections over both workers
      expect(metricSum(text, 'igw_worker_requests_total', 'worker="0"')).toBeGreaterThan(0)
      expect(metricSum(text, 'igw_worker_requests_total', 'worker="1"')).toBeGreaterThan(0)
      expect(metricSum(text, 'igw_cache_requests_total', 'result="coalesced"')).toBe(99)
    } finally {
      await pool.close()
    }
  })

  it('a mutation through one worker invalidates the entry in every worker before its response ends', async () => {
    const pool = new Pool(proxy.url, { connections: 16 })
    try {
      const read = { query: '{ entity(id: "21") { id name } }' }
      // fill, then make sure both workers hold it (fills are replicated to every worker)
      await gql(proxy.url, read, {}, pool)
      await sleep(50)
      const warm = await Promise.all(Array.from({ length: 16 }, () => gql(proxy.url, read, {}, pool)))
      expect(warm.every((r) => r.cache === 'HIT')).toBe(true)
      for (let round = 0; round < 3; round++) {
        const name = `v${round}`
        const m = await gql(proxy.url, { query: `mutation { updateEntity(id: "21", name: "${name}") { id } }` }, {}, pool)
        expect(m.status).toBe(200)
        // immediately, from every connection (both workers): never the old name
        const after = await Promise.all(Array.from({ length: 16 }, () => gql(proxy.url, read, {}, pool)))
        for (const r of after) expect((r.json.data!.entity as { name: string }).name).toBe(name)
      }
    } finally {
      await pool.close()
    }
  })
})

describe('tenants from verified tokens', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  const key = new TextEncoder().encode(SECRET)
  const token = (tenant: string, scope: string) => new SignJWT({ tenant_id: tenant, scope }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(key)
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy(doc(backend.url, { authorization: { scopes: ['read', 'read:entities'] } }, {}, { jwt: { secret: SECRET, algorithms: ['HS256'] } }))
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('a spoofed tenant header cannot read another tenant\'s entry; scopes outside the list bypass', async () => {
    const q = { query: '{ echo { header(name: "x-tenant-id") } }' }
    const acme = await token('acme', 'read')
    const globex = await token('globex', 'read')
    const a = await gql(proxy.url, q, { authorization: `Bearer ${acme}`, 'x-tenant-id': 'acme' })
    expect([a.cache, a.json.data]).toEqual(['MISS', { echo: { header: 'acme' } }])
    // globex's token with an acme header: the verified claim decides the key
    const spoof = await gql(proxy.url, q, { authorization: `Bearer ${globex}`, 'x-tenant-id': 'acme' })
    expect([spoof.cache, spoof.json.data]).toEqual(['MISS', { echo: { header: 'globex' } }])
    const again = await gql(proxy.url, q, { authorization: `Bearer ${globex}`, 'x-tenant-id': 'acme' })
    expect([again.cache, again.json.data]).toEqual(['HIT', { echo: { header: 'globex' } }])
    const acmeAgain = await gql(proxy.url, q, { authorization: `Bearer ${acme}`, 'x-tenant-id': 'globex' })
    expect([acmeAgain.cache, acmeAgain.json.data]).toEqual(['HIT', { echo: { header: 'acme' } }])
    // a token whose scopes are not all listed is private: bypass
    const admin = await token('acme', 'read admin')
    expect((await gql(proxy.url, q, { authorization: `Bearer ${admin}` })).cache).toBe('BYPASS')
    // different admitted scopes are different entries
    const wider = await token('acme', 'read:entities read')
    expect((await gql(proxy.url, q, { authorization: `Bearer ${wider}` })).cache).toBe('MISS')
  })
})

describe('configuration errors', () => {
  it('a cache without a tenant filter before it fails to start unless requireTenant is false', async () => {
    const bad = { routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'cache' }] as never }] }
    // Two independent proxies, started side by side.
    const refused = expect(startTestProxy(bad)).rejects.toThrow(/requireTenant: no tenant filter runs before cache/)
    const ok = await startTestProxy({ routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'cache', requireTenant: false }] as never }] })
    await ok.close()
    await refused
  })
})
