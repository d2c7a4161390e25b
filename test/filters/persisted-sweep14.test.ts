// Persisted filter sweep: a request that names its operation twice (documentId beside a query
// or a persistedQuery hash) must name one document, manifest hashes in upper-case hex, and
// mutations sent with GET. Real proxy, real node:http backend that records what it was sent.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const HELLO = 'query Hello { hello }'
const LIST = 'query List { entities { id } }'
const RENAME = 'mutation Rename { updateEntity(id: "1", name: "x") { id } }'
type Json = { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] }

describe('persisted filter sweep 14', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const sent: { url: string; body: string }[] = []

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        sent.push({ url: req.url ?? '', body: Buffer.concat(chunks).toString() })
        const body = JSON.stringify({ data: { hello: 'world' } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) })
        res.end(body)
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { hello: { document: HELLO }, list: { document: LIST }, rename: { document: RENAME } } },
      routes: [
        { name: 'enforce', match: { pathPrefix: '/enforce' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', safelist: { mode: 'enforce' } }] as never },
        { name: 'open', match: { pathPrefix: '/open' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(path: string, body: unknown) {
    const before = sent.length
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.statusCode, json: (await res.body.json()) as Json, upstream: sent.slice(before) }
  }

  it('documentId and a persistedQuery hash that name different documents → 400, nothing forwarded', async () => {
    for (const path of ['/enforce/graphql', '/open/graphql']) {
      const r = await post(path, { documentId: `sha256:${sha(HELLO)}`, extensions: { persistedQuery: { version: 1, sha256Hash: sha(LIST) } } })
      expect(r.status).toBe(400)
      expect(r.json.errors?.[0]?.extensions?.code).toBe('BAD_REQUEST')
      expect(r.json.errors?.[0]?.message).toBe('documentId and extensions.persistedQuery name different documents')
      expect(r.upstream).toHaveLength(0)
    }
  })

  it('documentId and a persistedQuery hash of the same document: runs, and the backend gets neither name', async () => {
    const r = await post('/enforce/graphql', { documentId: 'hello', extensions: { persistedQuery: { version: 1, sha256Hash: sha(HELLO).toUpperCase() } } })
    expect(r.status).toBe(200)
    const forwarded = JSON.parse(r.upstream[0]!.body) as { query: string; extensions?: Record<string, unknown>; documentId?: string }
    expect(forwarded.query).toBe(HELLO)
    expect(forwarded.documentId).toBeUndefined()
    expect(forwarded.extensions?.persistedQuery).toBeUndefined()
  })

  it('documentId beside a query: the two must be one document, or the backend could run the unchecked one', async () => {
    const bad = await post('/open/graphql', { documentId: 'hello', query: '{ secrets }' })
    expect(bad.status).toBe(400)
    expect(bad.json.errors?.[0]?.message).toBe('documentId and query name different documents')
    expect(bad.upstream).toHaveLength(0)
    // A manifest query beside an id the backend may know (and the gateway does not): refused too.
    const unknownId = await post('/enforce/graphql', { documentId: 'backend-only-id', query: HELLO })
    expect(unknownId.status).toBe(400)
    expect(unknownId.upstream).toHaveLength(0)
    const same = await post('/enforce/graphql', { documentId: 'hello', query: HELLO })
    expect(same.status).toBe(200)
    expect((JSON.parse(same.upstream[0]!.body) as { documentId?: string }).documentId).toBeUndefined()
  })

  it('a manifest hash in upper-case hex names its document (no PersistedQueryNotFound round trip)', async () => {
    const r = await post('/enforce/graphql', { extensions: { persistedQuery: { version: 1, sha256Hash: sha(LIST).toUpperCase() } } })
    expect(r.status).toBe(200)
    expect(JSON.parse(r.upstream[0]!.body).query).toBe(LIST)
    const byId = await post('/enforce/graphql', { documentId: `sha256:${sha(LIST).toUpperCase()}` })
    expect(byId.status).toBe(200)
  })

  it('a mutation sent with GET is refused with 405, whether as text, by documentId or by hash', async () => {
    const before = sent.length
    const paths = [
      `/open/graphql?query=${encodeURIComponent(RENAME)}`,
      '/open/graphql?documentId=rename',
      `/enforce/graphql?extensions=${encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: sha(RENAME) } }))}`,
    ]
    for (const path of paths) {
      const res = await request(`${proxy.url}${path}`)
      expect(res.statusCode, path).toBe(405)
      expect(res.headers.allow).toBe('POST')
      expect(((await res.body.json()) as Json).errors?.[0]?.extensions?.code).toBe('METHOD_NOT_ALLOWED')
    }
    expect(sent.length).toBe(before)
    // A query by GET still runs; a mutation by POST too.
    expect((await request(`${proxy.url}/open/graphql?documentId=hello`)).statusCode).toBe(200)
    expect((await post('/open/graphql', { query: RENAME })).status).toBe(200)
  })
})
