// Persisted filter sweep 20g: a batch operation that is not a well-formed GraphQL request (a
// non-string documentId or operationName, "variables" as a string) was skipped by the filter and
// went upstream as sent, its query unchecked: under `safelist.mode: enforce` a freeform query
// rode past the safelist beside `"documentId": 1` (Apollo Server ignores the member and runs the
// query), and past maxDepth in any mode. The same request alone is refused with 400. Through a
// real proxy and a node:http backend that records what it gets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRecordingBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const DEEP = '{ a { b { c { d { e { f } } } } } }' // depth 6
type Reply = { status: number; json: unknown }

describe('persisted filter sweep 20g: malformed batch operations', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const bodies: string[] = []
  beforeAll(async () => {
    backend = await startRecordingBackend(bodies, (body) => {
      const parsed = JSON.parse(body) as unknown[]
      return JSON.stringify(parsed.map(() => ({ data: { hello: 'world' } })))
    })
    const filters = (mode: string) => [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', safelist: { mode }, limits: { maxDepth: 4 } }]
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      persistedDocuments: { operations: { known: { document: 'query Known { hello }' } } },
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
    return { status: r.statusCode, json: await r.body.json() }
  }
  const errorOf = (r: Reply) => (r.json as { errors: { message: string; extensions: { code: string } }[] }).errors[0]!

  it('enforce: a freeform query beside a non-string documentId is refused, not forwarded', async () => {
    const before = bodies.length
    const alone = await post('/enforce', { query: '{ secrets }', documentId: 1 })
    expect(alone.status).toBe(400)
    const r = await post('/enforce', [{ documentId: 'known' }, { query: '{ secrets }', documentId: 1 }])
    expect(r.status).toBe(400)
    expect(errorOf(r).extensions.code).toBe('PERSISTED_QUERY_NOT_ALLOWED')
    expect(errorOf(r).message).toMatch(/^batch operation 1 /)
    expect(bodies.length).toBe(before)
  })

  it('off: a query over maxDepth in a malformed operation is refused as alone', async () => {
    const before = bodies.length
    for (const item of [{ query: DEEP, operationName: 7 }, { query: DEEP, variables: '{}' }]) {
      const r = await post('/off', [{ query: '{ ok }' }, item])
      expect(r.status, JSON.stringify(item)).toBe(400)
      expect(errorOf(r).extensions.code).toBe('BAD_REQUEST')
      expect(errorOf(r).message).toMatch(/^batch operation 1 is not a GraphQL request/)
    }
    expect(bodies.length).toBe(before)
  })

  it('an item that carries no request at all still goes upstream for the backend to answer', async () => {
    const r = await post('/off', [{ query: '{ ok }' }, 7])
    expect(r.status).toBe(200)
    expect(JSON.parse(bodies.at(-1)!)).toEqual([{ query: '{ ok }' }, 7])
  })
})
