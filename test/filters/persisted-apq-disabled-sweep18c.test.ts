// Persisted filter sweep 18c: `apq.enabled: false` and a request carrying both a query and its
// APQ hash. Apollo Server and Apollo Router refuse any request with extensions.persistedQuery
// when APQ is off: 200 {"errors":[{"message":"PersistedQueryNotSupported","extensions":{"code":
// "PERSISTED_QUERY_NOT_SUPPORTED"}}]}, on which Apollo Client's persisted-queries link resends
// the query without a hash and stops hashing. The gateway ran it, so the client never learnt that
// hashing is off. A manifest document sent with its hash still runs (it is persisted).
// Real igw, real node:http backend, undici client.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRecordingBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const MANIFEST_DOC = 'query Known { hello }'

describe('persisted filter sweep 18c: APQ disabled', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const bodies: string[] = []

  beforeAll(async () => {
    backend = await startRecordingBackend(bodies, () => JSON.stringify({ data: { hello: 'world' } }))
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { known: { document: MANIFEST_DOC } } },
      routes: [{ name: 'noapq', match: { pathPrefix: '/noapq' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', apq: { enabled: false } }] as never }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(body: unknown) {
    const res = await request(`${proxy.url}/noapq/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as { data?: unknown; errors?: { message: string; extensions: { code: string } }[] } }
  }

  it('query + APQ hash → 200 PersistedQueryNotSupported, not forwarded; the query alone runs', async () => {
    const query = '{ hello(name: "apq off") }'
    const before = bodies.length
    const both = await post({ query, extensions: { persistedQuery: { version: 1, sha256Hash: sha(query) } } })
    expect(both.status).toBe(200)
    expect(both.headers['cache-control']).toBe('private, no-cache, must-revalidate')
    expect(both.json.errors).toEqual([{ message: 'PersistedQueryNotSupported', extensions: { code: 'PERSISTED_QUERY_NOT_SUPPORTED' } }])
    expect(bodies.length).toBe(before)

    // What Apollo Client sends next: the query without the hash.
    const plain = await post({ query })
    expect(plain.status).toBe(200)
    expect(plain.json.data).toEqual({ hello: 'world' })
    expect(JSON.parse(bodies.at(-1)!)).toEqual({ query })
  })

  it('a manifest document with its hash, or its id, still runs with APQ off', async () => {
    for (const hash of [sha(MANIFEST_DOC), 'known']) {
      const r = await post({ query: MANIFEST_DOC, extensions: { persistedQuery: { version: 1, sha256Hash: hash } } })
      expect(r.status).toBe(200)
      expect(r.json.data).toEqual({ hello: 'world' })
      const sent = JSON.parse(bodies.at(-1)!) as { query: string; extensions?: Record<string, unknown> }
      expect(sent.query).toBe(MANIFEST_DOC)
      expect(sent.extensions?.persistedQuery).toBeUndefined()
    }
  })
})
