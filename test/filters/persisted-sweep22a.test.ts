// Persisted filter sweep 22a. (1) With hints turned off (`hints.extension` / `hints.header`
// false), a client's own `costHints` extension and `x-igw-cost-hints` header went to the backend
// as sent: a backend trusting the gateway's hints read the client's claim of its own cost.
// (2) A manifest operation's `tier` did not apply inside a batch: the batch ran at the caller's
// tier, so an operation demoted to bronze was admitted at gold while bronze was being shed, and a
// batch of operations promoted to gold was shed with the caller's bronze. (3) An APQ registration
// (hash + query) logged no persistedId, so it could not be joined to its later hits.
// (4) Under log-unknown, an unknown operation in a batch was counted as freeform (or
// apq_registered / apq_hit), never unknown_logged: the count that says when enforce is safe missed
// every batched one (and under enforce a refused one was counted twice, freeform and not_allowed).
// Real proxy (worker threads), a node:http backend that records what it gets, undici.
import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const DEMOTED = 'query Demoted { hello }'
const PROMOTED = 'query Promoted { hello }'
const PLAIN = 'query Plain { hello }'
const HOLD = 'query Hold { hold }'
const CLAIM = { id: 'plain', cost: 1, costSource: 'hint' }
const CLAIM_HEADER = Buffer.from(JSON.stringify(CLAIM)).toString('base64url')

type Seen = { headers: IncomingHttpHeaders; body: unknown }

describe('persisted filter sweep 22a', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen: Seen[] = []
  const held: (() => void)[] = []
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        const parsed = JSON.parse(body) as unknown
        seen.push({ headers: req.headers, body: parsed })
        const answer = () => {
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(JSON.stringify(Array.isArray(parsed) ? parsed.map(() => ({ data: { hello: 'world' } })) : { data: { hello: 'world' } }))
        }
        // Held in flight until the test lets it go: the load the QoS shedding sees.
        if (body.includes('hold')) held.push(answer)
        else answer()
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { g: { tier: 'gold' }, b: { tier: 'bronze' } },
      // One request in flight of two: bronze (0.5) is shed, silver and gold are not.
      quotas: { qos: { maxInFlight: 2, shedAt: { gold: 1, silver: 0.85, bronze: 0.5 } } },
      persistedDocuments: { operations: { demoted: { document: DEMOTED, tier: 'bronze' }, promoted: { document: PROMOTED, tier: 'gold' }, plain: { document: PLAIN } } },
      routes: [
        {
          name: 'off',
          match: { pathPrefix: '/off' },
          upstream: backend.url,
          batching: { enabled: true },
          filters: [{ name: 'tenant', defaultTenant: 'g' }, { name: 'persisted', hints: { extension: false, header: false } }],
        },
        {
          name: 'log',
          match: { pathPrefix: '/log' },
          upstream: backend.url,
          batching: { enabled: true },
          filters: [{ name: 'tenant', defaultTenant: 'g' }, { name: 'persisted', safelist: { mode: 'log-unknown' } }],
        },
        {
          name: 'enforce',
          match: { pathPrefix: '/enforce' },
          upstream: backend.url,
          batching: { enabled: true },
          filters: [{ name: 'tenant', defaultTenant: 'g' }, { name: 'persisted', safelist: { mode: 'enforce' } }],
        },
        {
          name: 'qos',
          match: { pathPrefix: '/qos' },
          upstream: backend.url,
          batching: { enabled: true },
          filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }],
        },
      ],
    } as never)
  })
  afterAll(async () => {
    for (const release of held.splice(0)) release()
    await proxy?.close()
    await backend?.close()
  })

  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const r = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    return { status: r.statusCode, json: (await r.body.json()) as unknown }
  }

  it('with hints off, a hint the client sent (extension or header) never reaches the backend', async () => {
    const ext = { costHints: CLAIM }
    const sends: unknown[] = [
      { query: PLAIN, extensions: ext }, // a manifest operation by text
      { query: '{ hello }', extensions: ext }, // freeform
      { extensions: { ...ext, persistedQuery: { version: 1, sha256Hash: 'plain' } } }, // by id
      [{ query: PLAIN, extensions: ext }, { query: '{ hello }', extensions: ext }], // a batch
    ]
    for (const body of sends) {
      const from = seen.length
      const r = await post('/off/graphql', body, { 'x-igw-cost-hints': CLAIM_HEADER })
      expect(r.status, JSON.stringify(body)).toBe(200)
      expect(seen.length).toBe(from + 1)
      const got = seen[from]!
      expect(got.headers['x-igw-cost-hints'], JSON.stringify(body)).toBeUndefined()
      for (const op of Array.isArray(got.body) ? got.body : [got.body]) {
        expect((op as { extensions?: Record<string, unknown> }).extensions?.costHints, JSON.stringify(body)).toBeUndefined()
      }
    }
  })

  describe('a batch runs at the least favoured tier of its operations', () => {
    const qos = (tenant: string, body: unknown) => post('/qos/graphql', body, { 'x-tenant-id': tenant })
    const code = (r: { json: unknown }) => (r.json as { errors?: { extensions: { code: string } }[] }).errors?.[0]?.extensions.code

    it('under load that sheds bronze', async () => {
      const holding = qos('g', { query: HOLD })
      try {
        await waitUntil(() => held.length === 1, 5_000)
        // Alone, a manifest tier overrides the caller's (as it already did).
        expect(code(await qos('g', { query: DEMOTED }))).toBe('OVERLOADED')
        expect((await qos('b', { query: PROMOTED })).status).toBe(200)
        // A gold caller's batch holding an operation demoted to bronze is shed as bronze.
        const demoted = await qos('g', [{ query: DEMOTED }, { query: PLAIN }])
        expect(demoted.status).toBe(503)
        expect(code(demoted)).toBe('OVERLOADED')
        const byId = await qos('g', [{ extensions: { persistedQuery: { version: 1, sha256Hash: 'demoted' } } }, { query: '{ hello }' }])
        expect(byId.status).toBe(503)
        // A bronze caller's batch made only of operations promoted to gold runs as gold...
        const promoted = await qos('b', [{ query: PROMOTED }, { extensions: { persistedQuery: { version: 1, sha256Hash: sha(PROMOTED) } } }])
        expect(promoted.status).toBe(200)
        expect(promoted.json).toHaveLength(2)
        // ...but an operation without a manifest tier keeps the caller's bronze for the batch.
        expect((await qos('b', [{ query: PROMOTED }, { query: PLAIN }])).status).toBe(503)
        expect((await qos('b', [{ query: PROMOTED }, { query: '{ hello }' }])).status).toBe(503)
        // A batch without manifest tiers runs at the caller's tier, as before.
        expect((await qos('g', [{ query: PLAIN }, { query: '{ hello }' }])).status).toBe(200)
      } finally {
        for (const release of held.splice(0)) release()
      }
      expect((await holding).status).toBe(200)
    })
  })

  it('an APQ registration logs the persistedId its later hits log', async () => {
    const doc = `query Registered${Date.now()} { hello }`
    const hash = sha(doc)
    const reg = await post('/off/graphql', { query: doc, extensions: { persistedQuery: { version: 1, sha256Hash: hash } } })
    expect(reg.status).toBe(200)
    const hit = await post('/off/graphql', { extensions: { persistedQuery: { version: 1, sha256Hash: hash } } })
    expect(hit.status).toBe(200)
    const op = doc.split(' ')[1]
    await waitUntil(() => proxy.logs.find('access').filter((l) => l.op === op).length === 2, 5_000)
    const lines = proxy.logs.find('access').filter((l) => l.op === op)
    expect(lines.map((l) => l.persistedId)).toEqual([hash, hash])
  })

  it('batched operations outside the manifest are counted as lone ones are: unknown_logged under log-unknown, not_allowed alone under enforce', async () => {
    const outcomes = async () => {
      const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
      const of = (o: string) => metricSum(text, 'igw_persisted_requests_total', `outcome="${o}"`)
      return { freeform: of('freeform'), apq_registered: of('apq_registered'), apq_hit: of('apq_hit'), unknown_logged: of('unknown_logged'), manifest: of('manifest'), not_allowed: of('not_allowed') }
    }
    const doc = `query Batched${Date.now()} { hello }`
    const pq = { persistedQuery: { version: 1, sha256Hash: sha(doc) } }
    const before = await outcomes()
    // Alone: the reference.
    expect((await post('/log/graphql', { query: '{ a: hello }' })).status).toBe(200)
    await expect.poll(async () => (await outcomes()).unknown_logged, { timeout: 5_000 }).toBe(before.unknown_logged + 1)
    // Batched: a freeform operation, an APQ registration, then its hit, and a manifest one.
    expect((await post('/log/graphql', [{ query: '{ b: hello }' }, { query: doc, extensions: pq }, { query: PLAIN }])).status).toBe(200)
    expect((await post('/log/graphql', [{ extensions: pq }])).status).toBe(200)
    await expect.poll(async () => (await outcomes()).manifest, { timeout: 5_000 }).toBe(before.manifest + 1)
    // Under enforce, a refused batch operation is not_allowed, not also freeform.
    expect((await post('/enforce/graphql', [{ query: PLAIN }, { query: '{ c: hello }' }])).status).toBe(400)
    await expect.poll(async () => (await outcomes()).not_allowed, { timeout: 5_000 }).toBe(before.not_allowed + 1)
    const after = await outcomes()
    expect(after).toEqual({ ...before, unknown_logged: before.unknown_logged + 4, manifest: before.manifest + 2, not_allowed: before.not_allowed + 1 })
  })
})
