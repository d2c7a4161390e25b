// Persisted filter sweep 23j: a batch's manifest operations were counted (requests by outcome,
// requests per id, igw_operation_cost) as they were resolved, before the batch was known to run.
// A batch answered PersistedQueryNotFound for another of its operations ("not run: send it
// again") counted them, and its resend counted them again: with Apollo's BatchHttpLink +
// persisted-queries link, every first batch naming a hash the gateway did not know yet doubled
// its manifest operations' counts and cost observations.
// Real proxy (worker threads), a node:http backend, undici.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const PLAIN = 'query Plain { hello }'

describe('persisted filter sweep 23j: batch metrics count what runs', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let upstream = 0
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        upstream++
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify((JSON.parse(body) as unknown[]).map(() => ({ data: { hello: 'world' } }))))
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      persistedDocuments: { operations: { plain: { document: PLAIN, costUnits: 7 } } },
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, batching: { enabled: true }, filters: [{ name: 'persisted' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const post = async (body: unknown) => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: r.statusCode, json: (await r.body.json()) as unknown }
  }
  const counts = async () => {
    const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
    const outcome = (o: string) => metricSum(text, 'igw_persisted_requests_total', `outcome="${o}"`)
    return {
      manifest: outcome('manifest'),
      freeform: outcome('freeform'),
      apq_registered: outcome('apq_registered'),
      apq_not_found: outcome('apq_not_found'),
      plain: metricSum(text, 'igw_persisted_operation_requests_total', 'persisted_id="plain"'),
      hintCount: metricSum(text, 'igw_operation_cost_count', 'source="hint"'),
      hintSum: metricSum(text, 'igw_operation_cost_sum', 'source="hint"'),
      estimateCount: metricSum(text, 'igw_operation_cost_count', 'source="estimate"'),
    }
  }

  it('a batch answered not-found counts its manifest operations once, when its resend runs', async () => {
    const doc = `query Fresh${Date.now()} { hello }`
    const pq = (h: string) => ({ persistedQuery: { version: 1, sha256Hash: h } })
    const before = await counts()

    // A manifest operation beside a hash the gateway does not know: not run.
    const miss = await post([{ extensions: pq('plain') }, { query: '{ hello }' }, { extensions: pq(sha(doc)) }])
    expect(miss.status).toBe(200)
    expect((miss.json as { errors: { extensions: { code: string } }[] }[]).map((r) => r.errors[0]!.extensions.code)).toEqual(Array(3).fill('PERSISTED_QUERY_NOT_FOUND'))
    await expect.poll(async () => (await counts()).apq_not_found, { timeout: 5_000 }).toBe(before.apq_not_found + 1)
    expect(upstream).toBe(0)

    // The client resends the first batch with the document: it runs, each operation counted once.
    const resent = await post([{ extensions: pq('plain') }, { query: '{ hello }' }, { query: doc, extensions: pq(sha(doc)) }])
    expect(resent.status).toBe(200)
    expect(upstream).toBe(1)
    await expect.poll(async () => (await counts()).apq_registered, { timeout: 5_000 }).toBe(before.apq_registered + 1)
    expect(await counts()).toEqual({
      ...before,
      manifest: before.manifest + 1,
      freeform: before.freeform + 1,
      apq_registered: before.apq_registered + 1,
      apq_not_found: before.apq_not_found + 1,
      plain: before.plain + 1,
      hintCount: before.hintCount + 1,
      hintSum: before.hintSum + 7,
      estimateCount: before.estimateCount + 2,
    })
  })
})
