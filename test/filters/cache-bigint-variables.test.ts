// Integers beyond 2^53 in variables (and in vary claims) through the real proxy: JSON.parse rounds
// 9007199254740993 to 9007199254740992, so the two would share one cache key, while a backend
// with 64-bit or arbitrary-precision integers (Java Long, Go int64, a BigInt ID scalar) reads the
// digits it is sent and answers for two different entities. The backend here is a raw node:http
// server that reads the id from the request text itself, as such a backend would (graphql-js
// would round it with JSON.parse too). Such requests bypass the cache; ordinary ones are cached.
import { createHash, createHmac } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hasInexactNumber } from '../../filters/cache/cache-key.ts'
import { parseGetParams, parsePostBody, type GraphQLRequest } from '../../proxy/graphql-request.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const A = '9007199254740993' // 2^53 + 1: JSON.parse reads 9007199254740992
const B = '9007199254740992' // 2^53
const ITEM = 'query Item($id: ID!) { item(id: $id) { id } }'
const SECRET = 'an-hmac-secret-of-at-least-32-characters!'

interface Seen {
  method: string
  /** The id as the backend read it from the bytes it received (variables of a POST body or GET query string). */
  id: string | undefined
  uid: string | undefined
}

/** Models a Java/Go backend: the id and the token's uid are read from the raw text, digit for digit. */
function rawBackend(seen: Seen[]) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const text = req.method === 'GET' ? (new URL(req.url!, 'http://backend').searchParams.get('variables') ?? '') : Buffer.concat(chunks).toString('utf8')
      const id = /"id"\s*:\s*(-?\d[\d.eE+-]*)/.exec(text)?.[1]
      const auth = req.headers.authorization
      const uid = auth === undefined ? undefined : /"uid"\s*:\s*(\d+)/.exec(Buffer.from(auth.split('.')[1] ?? '', 'base64url').toString('utf8'))?.[1]
      seen.push({ method: req.method!, id, uid })
      const body = uid !== undefined ? `{"data":{"me":{"uid":"${uid}"}}}` : `{"data":{"item":{"__typename":"Item","id":"${id ?? ''}"}}}`
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  }
}

interface Reply {
  status: number
  cache: string | undefined
  text: string
}

/** POST a body given as text: JavaScript cannot JSON.stringify 9007199254740993. */
async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body })
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, text: await res.body.text() }
}

async function get(url: string, query: string, variables: string): Promise<Reply> {
  const res = await request(`${url}/graphql?query=${encodeURIComponent(query)}&variables=${encodeURIComponent(variables)}`, { headers: { 'x-tenant-id': 'acme' } })
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, text: await res.body.text() }
}

const itemBody = (id: string) => `{"query":${JSON.stringify(ITEM)},"variables":{"id":${id}}}`
const itemAnswer = (id: string) => `{"data":{"item":{"__typename":"Item","id":"${id}"}}}`

async function bypasses(p: TestProxy): Promise<number> {
  return metricSum(await (await request(`${p.adminUrl}/metrics`)).body.text(), 'igw_cache_requests_total', 'result="bypass"')
}

describe('hasInexactNumber', () => {
  it('finds integers outside the safe range and non-finite numbers anywhere, and nothing else', () => {
    for (const v of [JSON.parse(A), 2 ** 53, -(2 ** 53) - 2, 1e300, Infinity, -Infinity, NaN, { a: [1, { b: [[JSON.parse(`[${A}]`)]] }] }, [1, 2, { x: JSON.parse('1e400') }]]) {
      expect(hasInexactNumber(v), String(v)).toBe(true)
    }
    for (const v of [undefined, null, 0, -0, 1.5, 0.1, 2 ** 53 - 1, -(2 ** 53 - 1), 1e-300, 'x', A, { id: A }, [1, [2, [3]], { a: { b: 'c' } }], {}]) {
      expect(hasInexactNumber(v), String(v)).toBe(false)
    }
  })

  it('walks deep values without recursion', () => {
    let deep: unknown = JSON.parse(A)
    for (let i = 0; i < 100_000; i++) deep = i % 2 ? [deep] : { v: deep }
    expect(hasInexactNumber(deep)).toBe(true)
  })
})

describe('an edited request keeps the client\'s digits when re-serialized', () => {
  it('POST: toBody writes 2^53+1 back as sent, nested too; safe numbers and replaced variables as they are', () => {
    const body = `{"query":"{ a }","variables":{"id":${A},"n":1.5,"deep":{"ids":[1,${B},-${A}],"big":1e400},"s":"${A}"}}`
    const gql = parsePostBody(Buffer.from(body)) as GraphQLRequest
    gql.setQuery('{ a __typename }')
    expect(gql.toBody().toString()).toBe(`{"query":"{ a __typename }","variables":{"id":${A},"n":1.5,"deep":{"ids":[1,${B},-${A}],"big":1e400},"s":"${A}"}}`)
    const plain = parsePostBody(Buffer.from('{"query":"{ a }","variables":{"id":7}}')) as GraphQLRequest
    plain.setQuery('{ b }')
    expect(plain.toBody().toString()).toBe('{"query":"{ b }","variables":{"id":7}}')
    gql.setVariables({ id: 1 })
    expect(gql.toBody().toString()).toBe('{"query":"{ a __typename }","variables":{"id":1}}')
  })

  it('GET: toGetPath writes the variables parameter back with its digits', () => {
    const search = `query=${encodeURIComponent('{ a }')}&variables=${encodeURIComponent(`{"id":${A}}`)}&x=1`
    const gql = parseGetParams(search)!
    gql.setQuery('{ b }')
    const out = new URLSearchParams(gql.toGetPath(`/graphql?${search}`).split('?')[1])
    expect([out.get('variables'), out.get('query'), out.get('x')]).toEqual([`{"id":${A}}`, '{ b }', '1'])
  })
})

describe('integers beyond 2^53 in variables bypass the cache', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen: Seen[] = []
  beforeAll(async () => {
    backend = await startRawBackend(rawBackend(seen))
    proxy = await startTestProxy({
      tenants: { acme: {} },
      // a manifest document of its own: the freeform ITEM requests are not matched to it by text
      persistedDocuments: { operations: { item: { document: 'query PersistedItem($id: ID!) { item(id: $id) { id } }' } } },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'persisted' }, { name: 'cache' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('POST: ids 2^53+1 and 2^53 get their own answers, never one from the cache, and the bypass shows', async () => {
    const before = await bypasses(proxy)
    const calls = seen.length
    const a = await post(proxy.url, itemBody(A))
    const b = await post(proxy.url, itemBody(B))
    const a2 = await post(proxy.url, itemBody(A))
    expect([a.status, b.status, a2.status]).toEqual([200, 200, 200])
    expect([a.text, b.text, a2.text]).toEqual([itemAnswer(A), itemAnswer(B), itemAnswer(A)])
    expect([a.cache, b.cache, a2.cache]).toEqual(['BYPASS', 'BYPASS', 'BYPASS'])
    // each went upstream with the client's own digits (the body was not re-serialized)
    expect(seen.slice(calls).map((s) => s.id)).toEqual([A, B, A])
    expect((await bypasses(proxy)) - before).toBe(3)
  })

  it('POST: safe integer ids are still cached, one entry per id', async () => {
    const a = await post(proxy.url, itemBody('9007199254740991'))
    const a2 = await post(proxy.url, itemBody('9007199254740991'))
    const b = await post(proxy.url, itemBody('9007199254740990'))
    expect([a.cache, a2.cache, b.cache]).toEqual(['MISS', 'HIT', 'MISS'])
    expect([a.text, a2.text, b.text]).toEqual([itemAnswer('9007199254740991'), itemAnswer('9007199254740991'), itemAnswer('9007199254740990')])
  })

  it('GET: the same with the variables in the query string', async () => {
    const calls = seen.length
    const a = await get(proxy.url, ITEM, `{"id":${A}}`)
    const b = await get(proxy.url, ITEM, `{"id":${B}}`)
    expect([a.text, b.text]).toEqual([itemAnswer(A), itemAnswer(B)])
    expect([a.cache, b.cache]).toEqual(['BYPASS', 'BYPASS'])
    expect(seen.slice(calls).map((s) => [s.method, s.id])).toEqual([['GET', A], ['GET', B]])
    const c = await get(proxy.url, ITEM, '{"id":12345}')
    const c2 = await get(proxy.url, ITEM, '{"id":12345}')
    expect([c.cache, c2.cache]).toEqual(['MISS', 'HIT'])
    expect(c2.text).toBe(itemAnswer('12345'))
  })

  it('nested inside objects and arrays, negative, or not finite (1e400): bypass too', async () => {
    const q = JSON.stringify('query Items($f: ItemFilter) { items(filter: $f) { id } }')
    for (const vars of [`{"f":{"ids":[1,2,{"deep":[-${A}]}]}}`, `{"f":{"score":1e400}}`, `{"f":{"ids":[1e300]}}`]) {
      const r1 = await post(proxy.url, `{"query":${q},"variables":${vars}}`)
      const r2 = await post(proxy.url, `{"query":${q},"variables":${vars}}`)
      expect([r1.cache, r2.cache], vars).toEqual(['BYPASS', 'BYPASS'])
    }
    const ok = `{"f":{"ids":[1,2,{"deep":[-3]}],"score":1.5}}`
    expect([(await post(proxy.url, `{"query":${q},"variables":${ok}}`)).cache, (await post(proxy.url, `{"query":${q},"variables":${ok}}`)).cache]).toEqual(['MISS', 'HIT'])
  })

  it('persisted (manifest id) and APQ requests take the same key path: bypass with such an id; the filled-in request keeps the digits', async () => {
    const byId = (id: string) => `{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"item"}},"variables":{"id":${id}}}`
    const m1 = await post(proxy.url, byId('7'))
    const m2 = await post(proxy.url, byId('7'))
    expect([m1.cache, m2.cache]).toEqual(['MISS', 'HIT'])
    let calls = seen.length
    const ma = await post(proxy.url, byId(A))
    const mb = await post(proxy.url, byId(B))
    expect([ma.status, mb.status, ma.cache, mb.cache]).toEqual([200, 200, 'BYPASS', 'BYPASS'])
    // the persisted filter filled in the query (and cost hints): the body was re-serialized, digits intact
    expect(seen.slice(calls).map((s) => s.id)).toEqual([A, B])
    expect([ma.text, mb.text]).toEqual([itemAnswer(A), itemAnswer(B)])

    const apqDoc = 'query ItemApq($id: ID!) { item(id: $id) { id } }'
    const hash = createHash('sha256').update(apqDoc).digest('hex')
    const register = await post(proxy.url, `{"query":${JSON.stringify(apqDoc)},"extensions":{"persistedQuery":{"version":1,"sha256Hash":"${hash}"}},"variables":{"id":8}}`)
    expect(register.status).toBe(200)
    const byHash = (id: string) => `{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"${hash}"}},"variables":{"id":${id}}}`
    expect((await post(proxy.url, byHash('8'))).cache).toBe('HIT')
    calls = seen.length
    const ha = await post(proxy.url, byHash(A))
    const hb = await post(proxy.url, byHash(B))
    expect([ha.status, hb.status, ha.cache, hb.cache]).toEqual([200, 200, 'BYPASS', 'BYPASS'])
    expect(seen.slice(calls).map((s) => s.id)).toEqual([A, B])
  })

  it('a mutation with such an id reaches the backend with its own digits after the __typename rewrite, and invalidates by entity', async () => {
    const cached = itemBody('4242')
    expect([(await post(proxy.url, cached)).cache, (await post(proxy.url, cached)).cache]).toEqual(['MISS', 'HIT'])
    const calls = seen.length
    const m = await post(proxy.url, `{"query":"mutation Del($id: ID!) { deleteItem(id: $id) { id } }","variables":{"id":${A}}}`)
    expect([m.status, m.cache]).toEqual([200, 'BYPASS'])
    expect(seen.slice(calls).map((s) => s.id)).toEqual([A])
    // it touched Item:9007199254740993 only: another entity's entry stays
    expect((await post(proxy.url, cached)).cache).toBe('HIT')
  })
})

describe('vary claims beyond 2^53 bypass the cache', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen: Seen[] = []
  // Signed by hand: jose's SignJWT would JSON.stringify the claim, which cannot hold 2^53+1.
  const token = (uid: string) => {
    const part = (s: string) => Buffer.from(s).toString('base64url')
    const head = `${part('{"alg":"HS256","typ":"JWT"}')}.${part(`{"tenant_id":"acme","scope":"read","uid":${uid},"exp":${Math.floor(Date.now() / 1000) + 300}}`)}`
    return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`
  }
  const me = (uid: string) => post(proxy.url, '{"query":"{ me { uid } }"}', { authorization: `Bearer ${token(uid)}` })
  beforeAll(async () => {
    backend = await startRawBackend(rawBackend(seen))
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        {
          name: 'graphql',
          upstream: backend.url,
          filters: [{ name: 'request-id' }, { name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }, { name: 'cache', vary: { claims: ['uid'] }, authorization: { scopes: ['read'] } }] as never,
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('two users whose uids round to one double each get their own answer; safe uids are cached per user', async () => {
    const a = await me(A)
    const b = await me(B)
    expect([a.text, b.text]).toEqual([`{"data":{"me":{"uid":"${A}"}}}`, `{"data":{"me":{"uid":"${B}"}}}`])
    expect([a.cache, b.cache]).toEqual(['BYPASS', 'BYPASS'])
    const c = await me('77')
    const c2 = await me('77')
    const d = await me('78')
    expect([c.cache, c2.cache, d.cache]).toEqual(['MISS', 'HIT', 'MISS'])
    expect(d.text).toBe('{"data":{"me":{"uid":"78"}}}')
  })
})
