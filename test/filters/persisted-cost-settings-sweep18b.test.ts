// Persisted filter sweep 18b: the static cost estimate follows the route's own cost settings.
// Analyses were cached per parsed document only (a module-level map shared by every route and
// config version): the first route (or version) to price a document fixed its cost for all.
// Real proxy, real node:http backend, the access log's cost.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

// objects: a, b → 2 × objectCost; scalars: c, d → 2 × scalarCost
const QUERY = '{ a { b { c } d } }'

describe('persisted filter sweep 18b: cost settings per route and per config version', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let objectCost = 1

  const doc = () => ({
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    workers: 1,
    tenants: { acme: {} },
    routes: [
      { name: 'cheap', match: { pathPrefix: '/cheap' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', cost: { objectCost } }] },
      { name: 'dear', match: { pathPrefix: '/dear' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', cost: { objectCost: 50, scalarCost: 3 } }] },
    ],
  })

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{"a":null}}')
      })
    })
    proxy = await startTestProxy(doc() as never, { loadConfig: () => validateConfig(doc()) })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function costOf(path: string, tag: string): Promise<unknown> {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': tag }, body: JSON.stringify({ query: QUERY }) })
    expect(res.statusCode).toBe(200)
    await res.body.dump()
    let cost: unknown
    await expect.poll(() => (cost = proxy.logs.find('access').find((l) => l.reqId === tag)?.cost), { timeout: 10_000 }).toBeDefined()
    return cost
  }

  it('two routes with different weights price one document each their own way', async () => {
    expect(await costOf('/cheap/graphql', 'r1')).toBe(2)
    expect(await costOf('/dear/graphql', 'r2')).toBe(106) // a: 50 + (b: 50 + c: 3) + d: 3
    expect(await costOf('/cheap/graphql', 'r3')).toBe(2)
  })

  it('a reload that changes the weights changes the estimate of a document already priced', async () => {
    expect(await costOf('/cheap/graphql', 'v1')).toBe(2)
    objectCost = 10
    expect(await proxy.reload()).toMatchObject({ ok: true })
    expect(await costOf('/cheap/graphql', 'v2')).toBe(20)
  })
})
