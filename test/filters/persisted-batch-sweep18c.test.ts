// Persisted filter sweep 18c: batches (routes[].batching). A batch's requests went upstream as
// sent: an Apollo BatchHttpLink + PersistedQueryLink batch of hash-only operations reached a
// backend without APQ support unresolved, an APQ registration in a batch was never kept, and a
// client's own extensions.costHints reached the backend (stripped for a lone request).
// GraphQLBatch now exposes its requests and re-serializes once when one is edited; the persisted
// filter resolves each. The proxy hands the filter the batch as `ctx.batch` (proxy/exchange.ts,
// proxy/context.ts). Through a real proxy and a node:http backend that records what it gets.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { GraphQLBatch, parsePostBody } from '../../proxy/graphql-request.ts'
import { startRecordingBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const MANIFEST_DOC = 'query Known { hello }'
const FORGED = { id: 'x', cost: 0, tier: 'gold' }
const apq = (q: string) => ({ persistedQuery: { version: 1, sha256Hash: sha(q) } })

function batchOf(items: unknown[]): GraphQLBatch {
  const b = parsePostBody(Buffer.from(JSON.stringify(items)))
  expect(b).toBeInstanceOf(GraphQLBatch)
  return b as GraphQLBatch
}

describe('GraphQLBatch', () => {
  it('forwards the bytes as received until a request is edited, then serializes once keeping the client\'s numbers', () => {
    const text = '[{"query":"{ a }","variables":{"id":9007199254740993}},{"query":"{ b }","variables":{"n":1.50}},7]'
    const b = parsePostBody(Buffer.from(text)) as GraphQLBatch
    expect(b.operations).toBe(3)
    expect(b.toBody().toString()).toBe(text)
    expect(b.requests[2]).toBeUndefined() // not a request: goes as sent
    b.requests[1]!.setExtension('x', 1)
    expect(b.toBody().toString()).toBe('[{"query":"{ a }","variables":{"id":9007199254740993}},{"query":"{ b }","variables":{"n":1.50},"extensions":{"x":1}},7]')
  })
})

describe('persisted filter sweep 18c: batches through the proxy', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const bodies: string[] = []
  beforeAll(async () => {
    backend = await startRecordingBackend(bodies, (body) => {
      const n = (JSON.parse(body) as unknown[]).length
      return JSON.stringify(Array.from({ length: n }, () => ({ data: { hello: 'world' } })))
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { known: { document: MANIFEST_DOC, costUnits: 4 } } },
      routes: [{ name: 'b', match: { pathPrefix: '/b' }, upstream: backend.url, batching: { enabled: true }, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('Apollo BatchHttpLink + PersistedQueryLink: not found, register, then hash-only reaches the backend resolved', async () => {
    const q = '{ hello(name: "e2e") }'
    const post = async (items: unknown[]) => {
      const r = await request(`${proxy.url}/b/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(items) })
      return { status: r.statusCode, json: (await r.body.json()) as { errors?: { extensions: { code: string } }[] }[] }
    }
    const first = await post([{ extensions: apq(q) }])
    expect(first.json[0]!.errors?.[0]?.extensions.code).toBe('PERSISTED_QUERY_NOT_FOUND')
    expect((await post([{ query: q, extensions: { ...apq(q), costHints: FORGED } }])).status).toBe(200)
    expect(JSON.parse(bodies.at(-1)!)).toEqual([{ query: q }])
    expect((await post([{ extensions: apq(q) }])).status).toBe(200)
    expect(JSON.parse(bodies.at(-1)!)).toEqual([{ query: q }])
  })

  const post = async (items: unknown[]) => {
    const r = await request(`${proxy.url}/b/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(items) })
    return { status: r.statusCode, json: (await r.body.json()) as unknown }
  }

  it('resolves APQ hashes and persisted ids per operation, keeps registrations, drops client cost hints', async () => {
    const q = '{ hello(name: "batched") }'
    // A registration (hash + query) in a batch is kept, as for a lone request.
    expect((await post([{ query: q, extensions: apq(q) }, { query: '{ other }', extensions: { costHints: FORGED } }])).status).toBe(200)
    expect(JSON.parse(bodies.at(-1)!)).toEqual([{ query: q }, { query: '{ other }' }])
    expect((await post([{ extensions: apq(q), variables: { id: 1 } }, { extensions: { persistedQuery: { version: 1, sha256Hash: 'known' } } }, { documentId: 'known' }, { query: '{ plain }' }])).status).toBe(200)
    const sent = JSON.parse(bodies.at(-1)!) as { query: string; extensions?: Record<string, unknown>; documentId?: string }[]
    expect(sent[0]).toEqual({ query: q, variables: { id: 1 } })
    for (const x of [sent[1]!, sent[2]!]) {
      expect(x.query).toBe(MANIFEST_DOC)
      expect(x.documentId).toBeUndefined()
      expect(x.extensions).toEqual({ costHints: expect.objectContaining({ id: 'known', cost: 4, costSource: 'hint' }) })
    }
    expect(sent[3]).toEqual({ query: '{ plain }' })
  })

  it('an unknown hash → 200 with one PersistedQueryNotFound result per operation, nothing forwarded', async () => {
    const before = bodies.length
    const r = await post([{ query: '{ a }' }, { extensions: apq('{ never registered }') }])
    expect(r.status).toBe(200)
    expect(r.json).toEqual([
      { errors: [{ message: expect.stringMatching(/^not run/), extensions: { code: 'PERSISTED_QUERY_NOT_FOUND' } }] },
      { errors: [{ message: 'PersistedQueryNotFound', extensions: { code: 'PERSISTED_QUERY_NOT_FOUND' } }] },
    ])
    expect(bodies.length).toBe(before)
  })
})
