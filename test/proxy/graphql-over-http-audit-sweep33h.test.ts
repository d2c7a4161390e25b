// The GraphQL over HTTP spec's own conformance audit (graphql-http's serverAudits, by the spec's
// working group) run against the demo graphql-yoga backend directly and through igw: an empty
// chain, and the chain of config/examples/persisted-cache.yaml (request-id, tenant with a default,
// persisted with limits and cost, cache). igw claims to be transparent, so every audit must do at
// least as well through igw as direct (ok stays ok; warn may become ok).
// Found, sweep 33: the persisted filter answered a document that does not parse with 400 whatever
// the client accepted; the backend (and the spec, §6.4.1) answers a client served application/json
// 200, so the filter alone turned a GraphQL error into a transport failure for legacy clients
// (audits 572B and FDE2, whose "validation" document `{ 8f31… }` does not parse either).
import { join } from 'node:path'
import { serverAudits, type AuditResult } from 'graphql-http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { ROOT, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const rank = { ok: 3, notice: 2, warn: 1, error: 0 } as const
type Results = Map<string, { name: string; result: AuditResult }>

async function runAudits(url: string): Promise<Results> {
  const out: Results = new Map()
  for (const audit of serverAudits({ url, fetchFn: fetch })) out.set(audit.id, { name: audit.name, result: await audit.fn() })
  return out
}

const reason = (r: AuditResult) => (r.status === 'ok' ? '' : ` (${r.reason})`)

describe('graphql-http server audits: igw is no worse than the backend direct', () => {
  let backend: DemoBackend
  let empty: TestProxy
  let chain: TestProxy
  let direct: Results
  beforeAll(async () => {
    backend = await startDemoBackend()
    empty = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url, type: 'graphql', filters: [] }] })
    // config/examples/persisted-cache.yaml's route, its manifest and filters as shipped
    chain = await startTestProxy({
      mode: 'sidecar',
      tenants: { demo: { tier: 'gold' }, acme: { tier: 'silver' } },
      persistedDocuments: { operations: { entity: { document: 'query Entity($id: ID!) { entity(id: $id) { id name email updatedAt } }', cacheTtlSeconds: 60 } } },
      routes: [
        {
          name: 'graphql',
          upstream: backend.url,
          type: 'graphql',
          filters: [
            { name: 'request-id' },
            { name: 'tenant', defaultTenant: 'demo' },
            {
              name: 'persisted',
              safelist: { mode: 'log-unknown', tenants: { acme: 'enforce' } },
              limits: { maxDepth: 12, maxQueryBytes: '32kib' },
              cost: { schemaFile: join(ROOT, 'config/examples/cost-schema.graphql'), defaultListSize: 10 },
            },
            { name: 'cache', ttlSeconds: 30, refreshAheadSeconds: 10, staleWhileRevalidateSeconds: 30, staleIfErrorSeconds: 300, maxBytes: '64mib', maxEntryBytes: '512kib', vary: { headers: ['accept-language'] } },
          ],
        },
      ],
    } as never)
    direct = await runAudits(`${backend.url}/graphql`)
  })
  afterAll(async () => {
    await chain?.close()
    await empty?.close()
    await backend?.close()
  })

  for (const [label, proxy] of [['empty chain', () => empty], ['persisted-cache example chain', () => chain]] as const) {
    it(`${label}: every audit at least as good as direct`, async () => {
      const via = await runAudits(`${proxy().url}/graphql`)
      expect([...via.keys()].sort()).toEqual([...direct.keys()].sort())
      const worse: string[] = []
      for (const [id, d] of direct) {
        const v = via.get(id)!
        if (rank[v.result.status] < rank[d.result.status]) worse.push(`${id} ${d.name}: direct ${d.result.status}${reason(d.result)}, through igw ${v.result.status}${reason(v.result)}`)
      }
      expect(worse.join('\n')).toBe('')
    })
  }

  it('a document that does not parse: status and media type through the persisted filter are the backend’s, for every Accept', async () => {
    const accepts = [undefined, '*/*', 'application/json', 'application/graphql-response+json', 'application/graphql-response+json, application/json;q=0.9', 'application/json, application/graphql-response+json', 'application/json, text/event-stream']
    const answer = async (base: string, accept: string | undefined) => {
      const r = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...(accept === undefined ? {} : { accept }) }, body: JSON.stringify({ query: '{ hello(name: ) }' }) })
      const body = (await r.json()) as { data?: unknown; errors: { message: string }[] }
      return `${accept ?? '(none)'}: ${r.status} ${r.headers.get('content-type')} ${'data' in body ? 'data' : 'no data'} ${body.errors[0]!.message}`
    }
    const want: string[] = []
    const got: string[] = []
    for (const a of accepts) {
      want.push(await answer(backend.url, a))
      got.push(await answer(chain.url, a))
    }
    expect(got).toEqual(want)
  })
})
