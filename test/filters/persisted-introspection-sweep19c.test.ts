// Persisted filter sweep 19c: introspection meta fields (__schema, __type) in the depth limit and
// the cost estimate. They were skipped outright (depth 0, cost 0), yet their selections nest
// without bound (__type { fields { type { fields … } } }, each level multiplying the response) and
// the backend runs them: maxDepth was no limit for an introspection query, and aliasing __schema
// a thousand times cost 1. Real igw, the real graphql-yoga demo backend, undici client.
import { getIntrospectionQuery } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

function nestedType(levels: number): string {
  let sel = 'name'
  for (let i = 0; i < levels; i++) sel = `fields { type { ${sel} } }`
  return `{ __type(name: "Query") { ${sel} } }`
}

describe('introspection fields count toward maxDepth and the cost estimate', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        { name: 'shallow', match: { pathPrefix: '/shallow' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', limits: { maxDepth: 6 } }] as never },
        { name: 'g', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(path: string, query: string) {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })
    return { status: res.statusCode, json: (await res.body.json()) as { data?: Record<string, unknown>; errors?: { message: string; extensions?: { code?: string } }[] } }
  }

  it('a deeply nested __type query is refused by maxDepth, as the same nesting of ordinary fields is', async () => {
    const deep = nestedType(6) // __type(1) fields(2) type(3) … name(14)
    const r = await post('/shallow/graphql', deep)
    expect(r.status).toBe(400)
    expect(r.json.errors?.[0]?.extensions?.code).toBe('BAD_REQUEST')
    expect(r.json.errors?.[0]?.message).toMatch(/query depth 14 exceeds the limit of 6/)
    // Within the limit it runs (the backend answers the introspection).
    const ok = await post('/shallow/graphql', nestedType(2))
    expect(ok.status).toBe(200)
    expect(ok.json.data?.__type).toBeDefined()
  })

  it('the standard introspection query (GraphiQL, codegen) still passes the default maxDepth', async () => {
    const r = await post('/graphql', getIntrospectionQuery())
    expect(r.status).toBe(200)
    expect((r.json.data?.__schema as { queryType: { name: string } }).queryType.name).toBe('Query')
  })

  it('aliases of __schema are each priced (they were free: cost 1 whatever the count)', async () => {
    const aliases = Array.from({ length: 50 }, (_, i) => `a${i}: __schema { queryType { name } }`).join(' ')
    const r = await post('/graphql', `query Many { ${aliases} }`)
    expect(r.status).toBe(200)
    // Each alias: __schema (object 1) + queryType (object 1) = 2.
    await expect.poll(() => proxy.logs.find('access').find((l) => l.cost === 100), { timeout: 10_000 }).toBeDefined()
  })
})
