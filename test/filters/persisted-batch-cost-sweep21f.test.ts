// Persisted filter sweep 21f: a batch is priced by its operations. The persisted filter resolves
// and parses every operation of a batch (routes[].batching), but the batch kept the proxy's
// placeholder cost of one unit per operation: a query the quota refuses alone as too expensive
// (estimate 10^18, over the tenant's daily quota) ran when sent as a batch of one, charged 1 unit,
// and a manifest operation's costUnits and timeoutMs did not apply inside a batch. (Apollo Router
// runs each operation of a batch through its demand control.) Real proxy (worker threads), a
// node:http backend that records what it gets, undici.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
/** 10^18 estimated units (charged as 10^9). */
const ENORMOUS = '{ items(first: 1000000000) { more(first: 1000000000) { id } } }'
const LIST = '{ entities(first: 40) { id } }' // 40 units
const PRICED = 'query Priced { hello }'
const SLOW = 'query Slow { slow }'

type Reply = { status: number; json: unknown }

describe('persisted filter sweep 21f: the cost and timeout of a batch', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let seen = 0
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        seen++
        const parsed = JSON.parse(body) as unknown
        const answer = () => {
          if (res.destroyed) return
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(JSON.stringify(Array.isArray(parsed) ? parsed.map(() => ({ data: { hello: 'world' } })) : { data: { hello: 'world' } }))
        }
        // The slow operation answers after 5 s (never, for the test: the gateway's timeout is due first).
        if (body.includes('slow')) setTimeout(answer, 5_000).unref()
        else answer()
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { limitPerDay: 1000 } } } },
      persistedDocuments: { operations: { priced: { document: PRICED, costUnits: 7 }, slow: { document: SLOW, timeoutMs: 300 } } },
      routes: [
        {
          name: 'api',
          upstream: backend.url,
          batching: { enabled: true },
          filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }, { name: 'quota' }],
        },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const post = async (body: unknown): Promise<Reply> => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: r.statusCode, json: await r.body.json() }
  }
  const errorOf = (r: Reply) => (r.json as { errors: { message: string; extensions: Record<string, unknown> }[] }).errors[0]!

  it('an operation too expensive alone is too expensive in a batch; nothing reaches the backend', async () => {
    const before = seen
    const alone = await post({ query: ENORMOUS })
    expect(alone.status).toBe(400)
    expect(errorOf(alone).extensions).toMatchObject({ reason: 'too_expensive', cost: 1_000_000_000 })
    const batched = await post([{ query: ENORMOUS }])
    expect(batched.status).toBe(400)
    expect(errorOf(batched).extensions).toMatchObject({ code: 'BAD_REQUEST', reason: 'too_expensive', cost: 1_000_000_000 })
    // The same from an APQ registration, and beside a cheap operation.
    const mixed = await post([{ query: '{ hello }' }, { query: ENORMOUS, extensions: { persistedQuery: { version: 1, sha256Hash: sha(ENORMOUS) } } }])
    expect(mixed.status).toBe(400)
    expect(errorOf(mixed).extensions).toMatchObject({ reason: 'too_expensive' })
    expect(seen).toBe(before)
  })

  it('a batch costs the sum of its operations: estimates, and manifest costUnits', async () => {
    const r = await post([{ query: LIST }, { extensions: { persistedQuery: { version: 1, sha256Hash: 'priced' } } }, { query: PRICED }])
    expect(r.status).toBe(200)
    expect(r.json).toHaveLength(3)
    // 40 (estimate) + 7 + 7 (the manifest's costUnits, by id and by text)
    await expect.poll(() => proxy.logs.find('access').find((l) => l.cost === 54), { timeout: 5_000 }).toBeDefined()
    const line = proxy.logs.find('access').find((l) => l.cost === 54)!
    expect(line.status).toBe(200)
  })

  it("a batch made of operations that all have timeoutMs is answered 504 once the longest of them has passed", async () => {
    const t0 = performance.now()
    const r = await post([{ extensions: { persistedQuery: { version: 1, sha256Hash: 'slow' } } }, { query: SLOW }])
    expect(r.status).toBe(504)
    expect(errorOf(r).extensions.code).toBe('UPSTREAM_TIMEOUT')
    expect(performance.now() - t0).toBeLessThan(4_000)
  })
})
