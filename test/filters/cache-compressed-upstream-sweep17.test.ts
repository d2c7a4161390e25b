// A backend that compresses when asked (Apollo Router does by default, so does an Express app
// with compression()), and clients that ask (every browser sends Accept-Encoding). The cache
// forwarded the client's Accept-Encoding, got gzip, and: never stored a query's answer
// (Content-Encoding → reason "encoded": every request a MISS), and could not read a mutation's
// body for its entities, so each mutation dropped the route's whole cache. The cache now asks
// the upstream for identity on the requests whose bodies it keeps or reads.
// Real proxy, real node:http backend compressing with zlib, real undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { gunzipSync, gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const BROWSER_AE = 'gzip, deflate, br, zstd'

function compressingBackend(seen: { calls: number; encodings: (string | undefined)[] }, names: Map<string, string>) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      seen.calls++
      seen.encodings.push(req.headers['accept-encoding'])
      const { query, variables } = JSON.parse(Buffer.concat(chunks).toString()) as { query: string; variables?: { id?: string; name?: string } }
      let data: unknown
      if (query.trimStart().startsWith('mutation')) {
        names.set(variables!.id!, variables!.name!)
        data = { updateEntity: { id: variables!.id, name: variables!.name, __typename: 'Entity' } }
      } else if (query.includes('other')) {
        data = { other: 'constant' }
      } else {
        const id = variables!.id!
        data = { entity: { id, name: names.get(id) ?? `Entity ${id}`, __typename: 'Entity' } }
      }
      let body = Buffer.from(JSON.stringify({ data }))
      const h: Record<string, string> = { 'content-type': 'application/json; charset=utf-8', vary: 'Accept-Encoding' }
      if (/\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
        body = gzipSync(body)
        h['content-encoding'] = 'gzip'
      }
      h['content-length'] = String(body.length)
      res.writeHead(200, h)
      res.end(body)
    })
  }
}

describe('cache in front of a backend that compresses', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen = { calls: 0, encodings: [] as (string | undefined)[] }
  const names = new Map<string, string>()

  beforeAll(async () => {
    backend = await startRawBackend(compressingBackend(seen, names))
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300 }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function ask(query: string, variables: Record<string, string>, acceptEncoding?: string) {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-tenant-id': 'acme' }
    if (acceptEncoding !== undefined) headers['accept-encoding'] = acceptEncoding
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) })
    let body = Buffer.from(await res.body.arrayBuffer())
    if (res.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
    return { status: res.statusCode, cache: res.headers['x-cache'], json: JSON.parse(body.toString()) as { data?: Record<string, { name?: string }> } }
  }

  const ENTITY = 'query E($id: ID!) { entity(id: $id) { id name } }'

  it('a browser-like client (Accept-Encoding: gzip, br…) gets its query stored and then answered from the cache', async () => {
    const first = await ask(ENTITY, { id: '1' }, BROWSER_AE)
    expect(first.status).toBe(200)
    expect(first.cache).toBe('MISS')
    expect(first.json.data?.entity?.name).toBe('Entity 1')
    const calls = seen.calls
    const second = await ask(ENTITY, { id: '1' }, BROWSER_AE)
    expect(second.cache).toBe('HIT')
    expect(second.json.data?.entity?.name).toBe('Entity 1')
    expect(seen.calls).toBe(calls)
    expect(metricSum(await proxy.metricsText(), 'igw_cache_not_stored_total', 'reason="encoded"')).toBe(0)
  })

  it("a browser's mutation invalidates the entity it returned, not the route's whole cache", async () => {
    await ask('query O($id: ID) { other }', { id: 'x' }) // stored (no Accept-Encoding: identity anyway)
    expect((await ask('query O($id: ID) { other }', { id: 'x' })).cache).toBe('HIT')
    await ask(ENTITY, { id: '2' })
    expect((await ask(ENTITY, { id: '2' })).cache).toBe('HIT')

    const m = await ask('mutation M($id: ID!, $name: String!) { updateEntity(id: $id, name: $name) { id name } }', { id: '2', name: 'Two' }, BROWSER_AE)
    expect(m.json.data?.updateEntity?.name).toBe('Two')
    // read-your-writes for the entity it returned…
    const after = await ask(ENTITY, { id: '2' })
    expect(after.cache).toBe('MISS')
    expect(after.json.data?.entity?.name).toBe('Two')
    // …and nothing else dropped (an unreadable, gzipped body dropped the route's every entry)
    expect((await ask('query O($id: ID) { other }', { id: 'x' })).cache).toBe('HIT')
  })

  it('requests the cache does not keep a body of still pass the client Accept-Encoding through', async () => {
    const before = seen.encodings.length
    // A Cookie makes it private: bypassed, its body neither kept nor read.
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', 'accept-encoding': 'gzip', cookie: 'session=1' }, body: JSON.stringify({ query: ENTITY, variables: { id: '3' } }) })
    expect(res.headers['x-cache']).toBe('BYPASS')
    expect(res.headers['content-encoding']).toBe('gzip')
    await res.body.arrayBuffer()
    expect(seen.encodings.slice(before)).toEqual(['gzip'])
  })
})
