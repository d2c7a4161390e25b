// Persisted filter sweep 19: a batch's documents are held to a lone request's rules. A batch
// (routes[].batching) was forwarded with its operations unchecked: a query over maxDepth or
// maxQueryBytes, or one that does not parse, reached the backend as long as it rode in an array,
// while the same query alone got 400. And under `safelist.mode: enforce` every batch was refused,
// even one made only of manifest operations (what a BatchHttpLink + persisted link sends).
// Through a real proxy and a node:http backend that records what it gets.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRecordingBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const MANIFEST_DOC = 'query Known { hello }'
const DEEP = '{ a { b { c { d { e { f } } } } } }' // depth 6
const apq = (q: string) => ({ persistedQuery: { version: 1, sha256Hash: sha(q) } })

type Reply = { status: number; json: { errors?: { message: string; extensions: { code: string } }[] } | unknown[] }

describe('persisted filter sweep 19: batch operations and the limits', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const bodies: string[] = []
  beforeAll(async () => {
    backend = await startRecordingBackend(bodies, (body) => {
      const parsed = JSON.parse(body) as unknown
      const n = Array.isArray(parsed) ? parsed.length : 1
      return JSON.stringify(Array.isArray(parsed) ? Array.from({ length: n }, () => ({ data: { hello: 'world' } })) : { data: { hello: 'world' } })
    })
    const filters = (mode: string) => [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', safelist: { mode }, limits: { maxDepth: 4, maxQueryBytes: 200 } }]
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      persistedDocuments: { operations: { known: { document: MANIFEST_DOC, costUnits: 4 } } },
      routes: [
        { name: 'off', match: { pathPrefix: '/off' }, upstream: backend.url, batching: { enabled: true }, filters: filters('off') as never },
        { name: 'enforce', match: { pathPrefix: '/enforce' }, upstream: backend.url, batching: { enabled: true }, filters: filters('enforce') as never },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const post = async (path: string, body: unknown): Promise<Reply> => {
    const r = await request(`${proxy.url}${path}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: r.statusCode, json: (await r.body.json()) as Reply['json'] }
  }
  const errorOf = (r: Reply) => (r.json as { errors: { message: string; extensions: { code: string } }[] }).errors[0]!

  it('a query over maxDepth is refused alone and in a batch; nothing reaches the backend', async () => {
    const before = bodies.length
    const alone = await post('/off', { query: DEEP })
    expect(alone.status).toBe(400)
    const batched = await post('/off', [{ query: '{ ok }' }, { query: DEEP }])
    expect(batched.status).toBe(400)
    expect(errorOf(batched).extensions.code).toBe('BAD_REQUEST')
    expect(errorOf(batched).message).toBe('batch operation 1: query depth 6 exceeds the limit of 4')
    expect(bodies.length).toBe(before)
  })

  it('over maxQueryBytes, and a document that does not parse, are refused in a batch as alone', async () => {
    const before = bodies.length
    const big = `{ ${Array.from({ length: 60 }, (_, i) => `f${i}`).join(' ')} }`
    const tooBig = await post('/off', [{ query: big }])
    expect(tooBig.status).toBe(400)
    expect(errorOf(tooBig).message).toMatch(/^batch operation 0: query of \d+ bytes exceeds the limit of 200$/)
    const broken = await post('/off', [{ query: '{ ok }' }, { query: '{ ok' }])
    expect(broken.status).toBe(400)
    expect(errorOf(broken).extensions.code).toBe('BAD_REQUEST')
    expect((errorOf(broken) as { locations?: unknown }).locations).toEqual([{ line: 1, column: 5 }])
    expect(errorOf(broken).message).toMatch(/^batch operation 1: Syntax Error/)
    expect(bodies.length).toBe(before)
  })

  it('an APQ hit is checked too; a batch within the limits still goes through whole', async () => {
    // Registered alone within the limits on /off; the same hash in a batch resolves and passes.
    const q = '{ a { b } }'
    expect((await post('/off', { query: q, extensions: apq(q) })).status).toBe(200)
    const ok = await post('/off', [{ extensions: apq(q) }, { query: '{ ok }' }])
    expect(ok.status).toBe(200)
    expect(JSON.parse(bodies.at(-1)!)).toEqual([{ query: q }, { query: '{ ok }' }])
  })

  it('enforce: a batch of manifest operations is forwarded resolved; one freeform operation refuses the batch', async () => {
    const ok = await post('/enforce', [{ documentId: 'known' }, { extensions: { persistedQuery: { version: 1, sha256Hash: sha(MANIFEST_DOC) } } }, { query: MANIFEST_DOC }])
    expect(ok.status).toBe(200)
    const sent = JSON.parse(bodies.at(-1)!) as { query: string }[]
    expect(sent.map((x) => x.query)).toEqual([MANIFEST_DOC, MANIFEST_DOC, MANIFEST_DOC])
    const before = bodies.length
    const mixed = await post('/enforce', [{ documentId: 'known' }, { query: '{ freeform }' }])
    expect(mixed.status).toBe(400)
    expect(errorOf(mixed).extensions.code).toBe('PERSISTED_QUERY_NOT_ALLOWED')
    expect(errorOf(mixed).message).toBe('batch operation 1 is not in the persisted-documents manifest')
    // A registration (hash + query) under enforce is refused and not remembered.
    const q = '{ sneaky }'
    expect(errorOf(await post('/enforce', [{ query: q, extensions: apq(q) }])).extensions.code).toBe('PERSISTED_QUERY_NOT_ALLOWED')
    const again = await post('/off', [{ extensions: apq(q) }])
    expect((again.json as { errors: { extensions: { code: string } }[] }[])[0]!.errors[0]!.extensions.code).toBe('PERSISTED_QUERY_NOT_FOUND')
    expect(bodies.length).toBe(before)
  })
})
