// Response cache sweep 15: what the key must hold besides the operation. Real igw (worker
// threads), the real graphql-yoga demo backend (and a node:http backend where a test must
// dictate the response), undici clients.
//  - Content negotiation: graphql-yoga answers `Accept: application/json` with application/json
//    and `Accept: application/graphql-response+json` with that type, and `text/event-stream` with
//    an SSE stream. A stored copy must only answer requests that accept what it is.
//  - A manifest operation whose document a reload changes is another operation: an entry stored
//    for the old document (L1 survives a reload that keeps the cache settings) must not answer it.
//  - A response with more objects than the entity-tag walk visits cannot be tagged completely:
//    a mutation of an entity beyond the walk's limit would leave it stale.
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { validateConfig } from '../../config/load.ts'
import { acceptClass } from '../../filters/cache/cache-key.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { fnv1a, TAG_SLOTS } from '../../filters/cache/shared-state.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>

async function ask(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: JSON.stringify(body) })
  const text = await res.body.text()
  return { status: res.statusCode, type: String(res.headers['content-type']), cache: res.headers['x-cache'] as string | undefined, text }
}

describe('cache key: content negotiation (Accept)', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({ workers: 2, tenants: { acme: {} }, routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'cache' }] as never }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('a copy stored for one media type never answers a request that does not accept it', async () => {
    const q = { query: '{ hello(name: "negotiation") }' }
    const gr = await ask(proxy.url, q, { accept: 'application/graphql-response+json' })
    expect(gr.type).toMatch(/^application\/graphql-response\+json/)
    // A client that only takes application/json (GraphQL over HTTP: the legacy type) gets it.
    const json = await ask(proxy.url, q, { accept: 'application/json' })
    expect(json.type).toMatch(/^application\/json/)
    // An SSE client (graphql-sse, yoga's own) gets a stream, not a stored JSON body.
    const sse = await ask(proxy.url, q, { accept: 'text/event-stream' })
    expect(sse.type).toMatch(/^text\/event-stream/)
    expect(sse.text).toContain('event: next')
    expect(sse.cache).toBe('BYPASS')
    // Each kind of client still gets its hits.
    expect(await ask(proxy.url, q, { accept: 'application/graphql-response+json' })).toMatchObject({ cache: 'HIT', type: gr.type })
    expect(await ask(proxy.url, q, { accept: 'application/json' })).toMatchObject({ cache: 'HIT', type: json.type })
  })

  it('clients accepting the same types share entries, however they spell Accept', async () => {
    const q = { query: '{ hello(name: "spelling") }' }
    const a = await ask(proxy.url, q, { accept: 'application/graphql-response+json, application/json;q=0.9' })
    expect(a.cache).toBe('MISS')
    const b = await ask(proxy.url, q, { accept: 'application/json;q=0.9,application/graphql-response+json' })
    expect(b).toMatchObject({ cache: 'HIT', type: a.type })
    // Absent, */* and application/* accept either type: the same class.
    expect((await ask(proxy.url, q, {})).cache).toBe('HIT')
    expect((await ask(proxy.url, q, { accept: '*/*' })).cache).toBe('HIT')
    expect((await ask(proxy.url, q, { accept: 'application/*' })).cache).toBe('HIT')
  })

  it('reads Accept as RFC 9110 says: q=0 refuses, the most specific range decides', () => {
    expect(acceptClass(undefined)).toBe('')
    expect(acceptClass('*/*')).toBe('')
    expect(acceptClass('application/graphql-response+json;q=0, application/json')).toBe('j')
    expect(acceptClass('application/*, application/json; q=0')).toBe('g')
    expect(acceptClass('APPLICATION/JSON')).toBe('j')
    expect(acceptClass('multipart/mixed;deferSpec=20220824, application/json;q=0.9')).toBe('j')
    expect(acceptClass('text/event-stream')).toBeUndefined()
    expect(acceptClass('application/json;q=0')).toBeUndefined()
    expect(acceptClass('text/html, */*;q=0.1')).toBe('')
  })
})

describe('cache key: a manifest document changed by a reload', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  const doc = (document: string): Doc => ({
    tenants: { acme: {} },
    persistedDocuments: { operations: { one: { document, cacheTtlSeconds: 300 } } },
    routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'cache' }] as never }],
  })
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy(doc('query One { entity(id: "1") { id name } }'))
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('the new document is answered by the backend, not by the old document\'s entry', async () => {
    const byId = { extensions: { persistedQuery: { version: 1, sha256Hash: 'one' } } }
    const before = await ask(proxy.url, byId)
    expect(JSON.parse(before.text)).toEqual({ data: { entity: { __typename: 'Entity', id: '1', name: expect.any(String) } } })
    expect((await ask(proxy.url, byId)).cache).toBe('HIT')
    await proxy.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...doc('query One { entity(id: "1") { id name updatedAt } }') }))
    const after = await ask(proxy.url, byId)
    expect(after.cache).toBe('MISS')
    expect(JSON.parse(after.text).data.entity.updatedAt).toEqual(expect.any(String))
    expect((await ask(proxy.url, byId)).cache).toBe('HIT')
  })
})

describe('entity tags: a response too large to tag completely', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const N = 120_000
  let big: Buffer
  let victim = 0
  beforeAll(async () => {
    // The tag walk (last in, first out) reaches items N, N-1, … first and stops after 100 000
    // objects. Entries keep their tags as slots of a shared table: pick an item the walk never
    // reaches whose slot no reached tag shares, so only a missing tag can explain a stale hit.
    const reached = new Set(['Item', 'route:g', 'Query.items'].map((t) => fnv1a(t) & (TAG_SLOTS - 1)))
    for (let i = N; i >= N - 100_000; i--) reached.add(fnv1a(`Item:${i}`) & (TAG_SLOTS - 1))
    for (let i = 1; victim === 0; i++) if (!reached.has(fnv1a(`Item:${i}`) & (TAG_SLOTS - 1))) victim = i
    // 120 000 entities (beyond the tag walk's 100 000 objects), ~4 MB of JSON.
    const items: string[] = []
    for (let i = 1; i <= N; i++) items.push(`{"__typename":"Item","id":"${i}"}`)
    big = Buffer.from(`{"data":{"items":[${items.join(',')}]}}`)
    backend = await startRawBackend((req, res) => {
      let raw = ''
      req.on('data', (c: Buffer) => (raw += c))
      req.on('end', () => {
        const body = raw.includes('mutation') ? Buffer.from(`{"data":{"touch":{"__typename":"Item","id":"${victim}"}}}`) : big
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
        res.end(body)
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', maxEntryBytes: '16mib', invalidation: { injectTypename: false } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('is not stored, so a mutation of an entity beyond the walk can never leave it stale', async () => {
    const q = { query: '{ items { __typename id } }' }
    const first = await ask(proxy.url, q)
    expect(first.text.length).toBe(big.length)
    await ask(proxy.url, { query: 'mutation { touch { __typename id } }' })
    // The mutation returned an item the walk never reached: whatever the cache holds for the
    // query, it is not the copy from before that mutation.
    const second = await ask(proxy.url, q)
    expect(second.cache).toBe('MISS')
    const tooLarge = async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_cache_not_stored_total', 'reason="too_large"')
    await expect.poll(tooLarge, { timeout: 10_000 }).toBeGreaterThanOrEqual(1)
  })
})

describe('private requests: a verified token in the tenant filter\'s own header', () => {
  const SECRET = 'an-hmac-secret-of-at-least-32-characters!'
  const key = new TextEncoder().encode(SECRET)
  const token = (sub: string, scope: string) => new SignJWT({ tenant_id: 'acme', sub, scope }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(key)
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    const route = (name: string, cache: Record<string, unknown>) => ({
      name,
      match: { pathPrefix: `/${name}` },
      upstream: backend.url,
      filters: [{ name: 'tenant', jwt: { header: 'x-auth-token', secret: SECRET, algorithms: ['HS256'] } }, { name: 'cache', ...cache }] as never,
    })
    proxy = await startTestProxy({ tenants: { acme: {} }, routes: [route('plain', {}), route('scoped', { authorization: { scopes: ['read'] } })] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function who(path: string, t: string) {
    const res = await request(`${proxy.url}${path}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-auth-token': `Bearer ${t}` }, body: JSON.stringify({ query: '{ echo { header(name: "x-auth-token") } }' }) })
    const json = (await res.body.json()) as { data: { echo: { header: string } } }
    return { status: res.statusCode, cache: res.headers['x-cache'], token: json.data.echo.header }
  }

  it('one user\'s response never answers another user of the same tenant', async () => {
    const alice = await token('alice', 'read')
    const bob = await token('bob', 'read')
    expect(await who('/plain', alice)).toMatchObject({ status: 200, token: `Bearer ${alice}`, cache: 'BYPASS' })
    expect(await who('/plain', bob)).toMatchObject({ status: 200, token: `Bearer ${bob}`, cache: 'BYPASS' })
  })

  it('authorization.scopes admits such tokens as it admits them in Authorization (keyed by scopes)', async () => {
    const a = await token('carol', 'read')
    const b = await token('dave', 'read')
    expect(await who('/scoped', a)).toMatchObject({ cache: 'MISS' })
    expect(await who('/scoped', b)).toMatchObject({ cache: 'HIT' })
    expect(await who('/scoped', await token('erin', 'read write'))).toMatchObject({ cache: 'BYPASS' })
  })
})
