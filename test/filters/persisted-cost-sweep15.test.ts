// Persisted filter sweep 15: the static cost estimate of a list sized by a variable the request
// leaves out. GraphQL runs such an operation with the variable's default
// (`query ($n: Int = 500) { entities(first: $n) … }` returns 500 entities when `n` is not
// sent), so the estimate must use that default, not the route's defaultListSize: otherwise a
// client is charged 10 for 500 (a quota bypass by moving the size into a default). Real igw,
// the real graphql-yoga demo backend, undici client; the cost is read where the backend and
// the access log see it. The same holds for a slicing argument the request leaves out when a
// cost schema file gives it a default (`items(first: Int = 200)`).
import { parse } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { analyzeDocument, loadCostSchema } from '../../filters/persisted/document-analysis.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const BIG = 'query Big($n: Int = 500) { entities(first: $n) { id } echo { extensions } }'

describe('cost of a list sized by an omitted variable with a default', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend({ entities: 600 })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { big: { document: BIG } } },
      routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(body: unknown) {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return (await res.body.json()) as { data: { entities: unknown[]; echo: { extensions: string } } }
  }

  it('a manifest id is priced (and hinted to the backend) with the default the backend runs', async () => {
    const r = await post({ extensions: { persistedQuery: { version: 1, sha256Hash: 'big' } } })
    expect(r.data.entities).toHaveLength(500)
    // entities: 500 × (object 1 + id 0) + echo: 1 × 1
    expect(JSON.parse(r.data.echo.extensions).costHints).toMatchObject({ id: 'big', cost: 501, costSource: 'estimate' })
    // A variable that is sent wins over the default.
    const small = await post({ extensions: { persistedQuery: { version: 1, sha256Hash: 'big' } }, variables: { n: 3 } })
    expect(small.data.entities).toHaveLength(3)
    expect(JSON.parse(small.data.echo.extensions).costHints.cost).toBe(4)
  })

  it('so is a freeform document', async () => {
    const q = 'query Free($n: Int = 400) { entities(first: $n) { id } }'
    const r = await post({ query: q })
    expect(r.data.entities).toHaveLength(400)
    await expect.poll(() => proxy.logs.find('access').find((l) => l.persistedId === undefined && l.cost === 400), { timeout: 10_000 }).toBeDefined()
  })
})

describe('with a cost schema file: a slicing argument left out takes the schema\'s default', () => {
  const S = { defaultListSize: 10, objectCost: 1, scalarCost: 0, mutationCost: 10, slicingArguments: ['first', 'last', 'limit', 'pageSize', 'take', 'top'] }
  const info = loadCostSchema('type Item { id: ID! }\ntype Query { items(first: Int = 200): [Item!]! pages(limit: Int = 50): [Item!]! @listSize(slicingArguments: ["limit"]) }')
  const cost = (q: string, vars?: Record<string, unknown>) => analyzeDocument(parse(q), undefined, vars, S, info).cost

  it('not given, or given as an omitted variable without a default of its own', () => {
    expect(cost('{ items { id } }')).toBe(200)
    expect(cost('{ pages { id } }')).toBe(50)
    expect(cost('query ($n: Int) { items(first: $n) { id } }')).toBe(200)
    expect(cost('query ($n: Int = 7) { items(first: $n) { id } }')).toBe(7)
    expect(cost('query ($n: Int) { items(first: $n) { id } }', { n: 3 })).toBe(3)
    expect(cost('{ items(first: 5) { id } }')).toBe(5)
  })
})
