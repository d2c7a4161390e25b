// Adversarial sweep of the response cache and persisted queries through a real proxy: hostile
// or careless clients and misbehaving backends. Each test pins a defect that was found: nothing
// wrong may ever be served from the cache, and bad input gets a precise GraphQL error.
import { createHash } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>
type Json = { data?: Record<string, unknown> | null; errors?: { message: string; extensions?: { code?: string } }[] }

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  const text = await res.body.text()
  let json: Json | Json[] | undefined
  try {
    json = JSON.parse(text) as Json
  } catch {}
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, headers: res.headers, text, json: json as Json }
}

async function metrics(p: TestProxy): Promise<string> {
  return (await request(`${p.adminUrl}/metrics`)).body.text()
}

/**
 * A small GraphQL-ish backend over plain node:http: entities with a name each, `entity(id:)`
 * reads, `updateEntity(id:, name:)` writes, batches (JSON arrays) answered with arrays, GET
 * parameters read the way many frameworks read them (the last of repeated names wins), and
 * misbehaviour on request: `x-test-cache-control` sets Cache-Control, `x-test-status` the
 * status, `x-test-cut` sends half a body and resets the connection.
 */
function storeBackend() {
  const names = new Map<string, string>()
  const stats = { reads: 0, writes: 0 }
  const run = (op: { query?: string }): unknown => {
    const q = op.query ?? ''
    const id = /id:\s*"([^"]+)"/.exec(q)?.[1] ?? '0'
    if (/^\s*mutation\b/.test(q)) {
      stats.writes++
      const name = /name:\s*"([^"]*)"/.exec(q)?.[1] ?? ''
      names.set(id, name)
      return { data: { updateEntity: { id, name, __typename: 'Entity' } } }
    }
    stats.reads++
    return { data: { entity: { id, name: names.get(id) ?? `Entity ${id}`, __typename: 'Entity' } } }
  }
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      let payload: unknown
      if (req.method === 'GET') {
        const params = new URLSearchParams((req.url ?? '').split('?')[1] ?? '')
        const last = (k: string) => params.getAll(k).at(-1)
        payload = { query: last('query') }
      } else payload = JSON.parse(Buffer.concat(chunks).toString() || '{}')
      const out = Array.isArray(payload) ? payload.map(run) : run(payload as { query?: string })
      const body = JSON.stringify(out)
      const h: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }
      const cc = req.headers['x-test-cache-control']
      if (typeof cc === 'string') h['cache-control'] = cc
      res.writeHead(Number(req.headers['x-test-status'] ?? 200), h)
      if (req.headers['x-test-cut'] !== undefined) {
        res.write(body.slice(0, body.length >> 1))
        setTimeout(() => res.socket?.destroy(), 20)
        return
      }
      res.end(body)
    })
  }
  return { names, stats, handler }
}

const nameOf = (r: { json: Json }) => (r.json?.data?.entity as { name?: string } | undefined)?.name

// Each describe has its own backend and proxy, and a proxy takes a second or two to start and one
// to close (the idle keep-alive grace): all of them start at once before the first test and stop at
// once after the last. The tests still run one at a time, never next to a proxy starting. No
// request is in flight at the end, so a short drain skips that grace.
const starts: (() => Promise<void>)[] = []
const stops: (() => Promise<void>)[] = []
const startTogether = (fn: () => Promise<void>) => void starts.push(fn)
const stopTogether = (fn: () => Promise<void>) => void stops.push(fn)
const startQuickStop = (doc: Doc) => startTestProxy({ shutdown: { drainTimeoutMs: 400 }, ...doc })
beforeAll(async () => {
  // Every start settled before a failure is reported: afterAll then stops all that did start.
  for (const r of await Promise.allSettled(starts.map((f) => f()))) if (r.status === 'rejected') throw r.reason
})
afterAll(async () => {
  await Promise.all(stops.map((f) => f()))
})

describe('background refreshes never bypass the filters after the cache (DLP)', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  startTogether(async () => {
    backend = await startDemoBackend()
    const dlp = { name: 'dlp' as const, preset: 'tok', exports: { graphql: { responsePaths: ['entities'] } } }
    proxy = await startQuickStop({
      mode: 'ingress',
      tenants: { acme: {} },
      dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-rob-')), 'keyring.json') }, presets: { tok: { email: 'tokenize' } }, policy: { allowedPresets: ['tok', 'tokenize_strict'] } },
      routes: [
        { name: 'swr', match: { pathPrefix: '/swr' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleWhileRevalidateSeconds: 30 }, dlp] },
        { name: 'ahead', match: { pathPrefix: '/ahead' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 2, refreshAheadSeconds: 1 }, dlp] },
      ],
    } as never)
  })
  stopTogether(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('stale-while-revalidate and refresh-ahead never store (or serve) the untransformed upstream body', async () => {
    const q = { query: '{ entities(first: 2) { id email } }' }
    const seen: string[] = []
    const swr = async () => {
      const r = await post(`${proxy.url}/swr/graphql`, q)
      seen.push(`${r.cache} ${r.text}`)
      return r
    }
    const ahead = async () => {
      const r = await post(`${proxy.url}/ahead/graphql`, q)
      seen.push(`${r.cache} ${r.text}`)
      return r
    }
    const t0 = Date.now()
    const [s1, a1] = await Promise.all([swr(), ahead()])
    expect([s1.cache, a1.cache]).toEqual(['MISS', 'MISS'])
    expect(s1.text).toContain('tok_email_')
    // SWR: past the TTL (1 s); refresh-ahead: in the last second of its TTL (2 s)
    await sleep(Math.max(0, 1250 - (Date.now() - t0)))
    await Promise.all([swr(), ahead()])
    await sleep(300) // a background refresh (if any) has landed
    await Promise.all([swr(), ahead(), swr(), ahead()])
    for (const line of seen) expect(line).not.toContain('@example.com')
    for (const line of seen) expect(line).toContain('tok_email_')
  })
})

describe('stale-if-error answers upstream failures only', () => {
  let raw: RawBackend
  let proxy: TestProxy
  startTogether(async () => {
    raw = await startRawBackend(storeBackend().handler)
    // cache before quota: hits are free, but a request the quota refuses must stay refused
    proxy = await startQuickStop({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { limitPerDay: 1 } } } },
      routes: [{ name: 'g', upstream: raw.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleIfErrorSeconds: 60 }, { name: 'quota' }] }],
    } as never)
  })
  stopTogether(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it("a quota refusal (429) after the TTL is not replaced by the stale entry", async () => {
    const q = { query: '{ entity(id: "1") { id name } }' }
    const first = await post(`${proxy.url}/graphql`, q)
    expect([first.status, first.cache]).toEqual([200, 'MISS'])
    await sleep(1100)
    const refused = await post(`${proxy.url}/graphql`, q)
    expect(refused.status).toBe(429)
    expect(refused.json.errors?.[0]?.extensions?.code).toBe('QUOTA_EXCEEDED')
    expect(refused.cache).not.toBe('STALE')
  })
})

describe('mutations invalidate however they arrive and however their response ends', () => {
  let raw: RawBackend
  let be: ReturnType<typeof storeBackend>
  let proxy: TestProxy
  startTogether(async () => {
    be = storeBackend()
    raw = await startRawBackend(be.handler)
    proxy = await startQuickStop({ tenants: { acme: {} }, routes: [{ name: 'g', upstream: raw.url, batching: { enabled: true }, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60 }] }] } as never)
  })
  stopTogether(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const read = (id: string) => post(`${proxy.url}/graphql`, { query: `{ entity(id: "${id}") { id name } }` })

  it('a mutation whose response is cut mid-body (it ran upstream) still invalidates', async () => {
    expect((await read('1')).cache).toBe('MISS')
    expect((await read('1')).cache).toBe('HIT')
    const m = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', 'x-test-cut': '1' }, body: JSON.stringify({ query: 'mutation { updateEntity(id: "1", name: "cut") { id name } }' }) })
      .then((r) => r.body.text())
      .then(
        () => 'complete',
        () => 'truncated',
      )
    expect(m).toBe('truncated')
    expect(be.names.get('1')).toBe('cut')
    const after = await read('1')
    expect([after.cache, nameOf(after)]).toEqual(['MISS', 'cut'])
  })

  it('a mutation inside a batch (a JSON array) invalidates', async () => {
    expect((await read('2')).cache).toBe('MISS')
    expect((await read('2')).cache).toBe('HIT')
    const batch = await post(`${proxy.url}/graphql`, [{ query: '{ entity(id: "3") { id } }' }, { query: 'mutation { updateEntity(id: "2", name: "batched") { id name } }' }])
    expect(batch.status).toBe(200)
    expect(be.names.get('2')).toBe('batched')
    const after = await read('2')
    expect([after.cache, nameOf(after)]).toEqual(['MISS', 'batched'])
  })
})

describe('Cache-Control: must-revalidate', () => {
  let raw: RawBackend
  let proxy: TestProxy
  startTogether(async () => {
    raw = await startRawBackend(storeBackend().handler)
    proxy = await startQuickStop({ tenants: { acme: {} }, routes: [{ name: 'g', upstream: raw.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, staleWhileRevalidateSeconds: 60, staleIfErrorSeconds: 60 }] }] } as never)
  })
  stopTogether(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('an entry the upstream marked must-revalidate (or proxy-revalidate) is never served stale', async () => {
    for (const directive of ['must-revalidate', 'proxy-revalidate']) {
      const q = { query: `{ entity(id: "${directive}") { id name } }` }
      const h = { 'x-test-cache-control': `max-age=1, ${directive}` }
      expect((await post(`${proxy.url}/graphql`, q, h)).cache).toBe('MISS')
      expect((await post(`${proxy.url}/graphql`, q, h)).cache).toBe('HIT')
    }
    await sleep(1100)
    for (const directive of ['must-revalidate', 'proxy-revalidate']) {
      const q = { query: `{ entity(id: "${directive}") { id name } }` }
      // past its max-age: revalidated upstream (a miss), not STALE; and not on error either
      const expired = await post(`${proxy.url}/graphql`, q, { 'x-test-cache-control': `max-age=1, ${directive}` })
      expect([directive, expired.cache]).toEqual([directive, 'MISS'])
    }
    await sleep(1100)
    const failing = await post(`${proxy.url}/graphql`, { query: '{ entity(id: "must-revalidate") { id name } }' }, { 'x-test-status': '503' })
    expect([failing.status, failing.cache]).toEqual([503, 'MISS'])
  })
})

describe('GET requests that say two things at once', () => {
  let raw: RawBackend
  let be: ReturnType<typeof storeBackend>
  let proxy: TestProxy
  const A = 'query A { entity(id: "a") { id name } }'
  const EVIL = '{ entity(id: "evil") { id name } }'
  startTogether(async () => {
    be = storeBackend()
    raw = await startRawBackend(be.handler)
    const doc: Doc = {
      mode: 'ingress',
      tenants: { acme: {} },
      persistedDocuments: { operations: { a: { document: A } } },
      routes: [
        // hints off: nothing makes the gateway rewrite the request, it goes as received
        { name: 'enforce', match: { pathPrefix: '/enforce' }, upstream: raw.url, filters: [{ name: 'tenant' }, { name: 'persisted', safelist: { mode: 'enforce' }, hints: { extension: false, header: false } }] as never },
        { name: 'cached', match: { pathPrefix: '/cached' }, upstream: raw.url, filters: [{ name: 'tenant' }, { name: 'cache', invalidation: { injectTypename: false } }] as never },
      ],
    }
    proxy = await startQuickStop(doc)
  })
  stopTogether(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const get = async (path: string, body?: string) => {
    const res = await request(`${proxy.url}${path}`, { method: 'GET', headers: { 'x-tenant-id': 'acme', ...(body ? { 'content-type': 'application/json' } : {}) }, body })
    const text = await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, text, json: JSON.parse(text) as Json }
  }
  const qs = (...queries: string[]) => queries.map((q) => `query=${encodeURIComponent(q)}`).join('&')

  // Refused by the proxy on every GraphQL route (proxy/graphql-request.ts, proxy/exchange.ts),
  // before the safelist or the cache could be fooled by them.
  it('a repeated GraphQL parameter (the backend may read the last one) is a 400, never forwarded nor cached', async () => {
    const reads = be.stats.reads
    const ok = await get(`/enforce/graphql?${qs(A)}`)
    expect(nameOf(ok)).toBe('Entity a')
    for (const path of [`/enforce/graphql?${qs(A, EVIL)}`, `/cached/graphql?${qs(A, EVIL)}`, `/cached/graphql?${qs(A)}&operationName=A&operationName=B`]) {
      const dup = await get(path)
      expect(dup.status, path).toBe(400)
      expect(dup.json.errors?.[0]?.extensions?.code).toBe('BAD_REQUEST')
      expect(dup.json.errors?.[0]?.message).toMatch(/parameter "(query|operationName)" is repeated/)
    }
    expect(be.stats.reads - reads).toBe(1)
    expect(metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="BAD_REQUEST"')).toBeGreaterThanOrEqual(3)
  })

  it('a GET carrying a body (which no check saw) is a 400, never forwarded nor cached', async () => {
    const reads = be.stats.reads
    for (const path of ['/enforce/graphql', `/enforce/graphql?${qs(A)}`, `/cached/graphql?${qs(A)}`]) {
      const r = await get(path, JSON.stringify({ query: EVIL }))
      expect(r.status, path).toBe(400)
      expect(r.json.errors?.[0]?.message).toMatch(/cannot carry a body/)
    }
    expect(be.stats.reads - reads).toBe(0)
    const clean = await get(`/cached/graphql?${qs(A)}`)
    expect([clean.cache, nameOf(clean)]).toEqual(['MISS', 'Entity a'])
    expect(nameOf(await get(`/cached/graphql?${qs(A)}`))).toBe('Entity a')
  })
})

describe('APQ hashes in upper case', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  startTogether(async () => {
    backend = await startDemoBackend()
    proxy = await startQuickStop({ tenants: { acme: {} }, routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }] as never }] })
  })
  stopTogether(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('a registration accepted with an upper-case hash is found by that hash afterwards', async () => {
    const query = 'query Upper { hello(name: "upper") }'
    const hash = createHash('sha256').update(query).digest('hex').toUpperCase()
    const ext = { persistedQuery: { version: 1, sha256Hash: hash } }
    const reg = await post(`${proxy.url}/graphql`, { query, extensions: ext })
    expect(reg.json).toEqual({ data: { hello: 'Hello, upper!' } })
    const hit = await post(`${proxy.url}/graphql`, { extensions: ext })
    expect(hit.json).toEqual({ data: { hello: 'Hello, upper!' } })
  })
})

describe('APQ registrations are bounded in bytes, not only in count', () => {
  it('many distinct large registrations evict the oldest long before maxEntries is reached', async () => {
    const { APQ_MAX_BYTES, ApqStore } = await import('../../filters/persisted/apq-store.ts')
    const store = new ApqStore(10_000, undefined, 0, 50, () => {})
    const doc = (i: number) => `query Q${i} { hello } # ${'x'.repeat(60 * 1024)}`
    const n = Math.ceil(APQ_MAX_BYTES / (60 * 1024)) + 50 // well under 10 000 entries
    for (let i = 0; i < n; i++) store.register(`h${i}`, doc(i))
    expect(store.local(`h${n - 1}`)).toBe(doc(n - 1))
    expect(store.local('h0')).toBeUndefined()
  })
})
