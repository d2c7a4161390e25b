// Response cache sweep 21c: an entity whose id is selected only under an alias is still tagged
// (a mutation returning it invalidates the cached copy); a stale-if-error answer is one lookup,
// counted once as `stale`; a HEAD is answered from the stored GET, and its own body-less
// answer is never stored; a backend's `Vary: X-Tenant-Id` is honoured by the tenant in the key.
// Real proxy, the real graphql-yoga demo backend and a plain node:http backend.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

interface State {
  failing: boolean
  calls: Record<string, number>
}

/** By path: …/vary… answers `Vary: X-Tenant-Id` with the tenant it got; /sie fails on demand; calls are counted. */
function handler(state: State) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    req.resume()
    req.on('end', () => {
      const where = (req.url ?? '').split('/')[1]!
      const k = `${req.method} ${where}`
      state.calls[k] = (state.calls[k] ?? 0) + 1
      if (where === 'sie' && state.failing) {
        res.writeHead(500, { 'content-type': 'application/json' })
        res.end('{"errors":[{"message":"database down"}]}')
        return
      }
      const body = JSON.stringify({ data: { tenant: req.headers['x-tenant-id'] ?? null, where } })
      const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), etag: '"h1"' }
      if (req.url!.includes('/vary')) headers.vary = 'X-Tenant-Id'
      res.writeHead(200, headers)
      res.end(req.method === 'HEAD' ? undefined : body)
    })
  }
}

describe('cache sweep 21c', () => {
  let demo: DemoBackend
  let raw: RawBackend
  let proxy: TestProxy
  const state: State = { failing: false, calls: {} }

  beforeAll(async () => {
    demo = await startDemoBackend()
    raw = await startRawBackend(handler(state))
    const tenant = { name: 'tenant' }
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {}, globex: {} },
      routes: [
        { name: 'demo', match: { pathPrefix: '/graphql' }, upstream: demo.url, filters: [tenant, { name: 'cache', ttlSeconds: 300 }] as never },
        { name: 'vary', match: { pathPrefix: '/vary' }, upstream: raw.url, filters: [tenant, { name: 'cache', ttlSeconds: 300 }] as never },
        { name: 'vary-untenanted', match: { pathPrefix: '/open' }, upstream: raw.url, filters: [{ name: 'cache', ttlSeconds: 300, requireTenant: false }] as never },
        { name: 'sie', match: { pathPrefix: '/sie' }, upstream: raw.url, filters: [tenant, { name: 'cache', ttlSeconds: 1, staleIfErrorSeconds: 600 }] as never },
        { name: 'head', match: { pathPrefix: '/head' }, upstream: raw.url, filters: [tenant, { name: 'cache', ttlSeconds: 300 }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    await demo?.close()
  })

  async function post(path: string, query: string, tenant = 'acme') {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query }) })
    const text = await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'], data: (JSON.parse(text) as { data?: Record<string, unknown> }).data }
  }

  const metrics = async (): Promise<string> => (await request(`${proxy.adminUrl}/metrics`)).body.text()

  it('an entity whose id is selected only under an alias is invalidated by a mutation that returns it', async () => {
    const q = '{ entity(id: "7") { eid: id name } }'
    expect(await post('/graphql', q)).toMatchObject({ cache: 'MISS', data: { entity: { eid: '7', name: 'Entity 7' } } })
    expect(await post('/graphql', q)).toMatchObject({ cache: 'HIT' })
    expect((await post('/graphql', 'mutation { updateEntity(id: "7", name: "Renamed") { id name } }')).status).toBe(200)
    expect(await post('/graphql', q)).toMatchObject({ cache: 'MISS', data: { entity: { eid: '7', name: 'Renamed' } } })

    // The other way round: the mutation names the id under an alias, the cached query does not.
    const plain = '{ entity(id: "8") { id name } }'
    expect(await post('/graphql', plain)).toMatchObject({ cache: 'MISS' })
    expect(await post('/graphql', plain)).toMatchObject({ cache: 'HIT' })
    await post('/graphql', 'mutation { updateEntity(id: "8", name: "Eight") { changed: id } }')
    expect(await post('/graphql', plain)).toMatchObject({ cache: 'MISS', data: { entity: { id: '8', name: 'Eight' } } })
  })

  it('a stale-if-error answer is one lookup, counted once: as stale, not also as a miss', async () => {
    const q = '{ sie }'
    const m0 = await metrics()
    expect(await post('/sie/graphql', q)).toMatchObject({ cache: 'MISS' })
    state.failing = true
    try {
      // Hits until its one-second TTL runs out; then the upstream's 500 is answered stale.
      let last: Awaited<ReturnType<typeof post>> | undefined
      await expect
        .poll(async () => (last = await post('/sie/graphql', q)).cache, { timeout: 5_000, interval: 100 })
        .toBe('STALE')
      expect(last).toMatchObject({ status: 200, data: { where: 'sie' } })
    } finally {
      state.failing = false
    }
    const m1 = await metrics()
    const delta = (result: string) => metricSum(m1, 'igw_cache_requests_total', `result="${result}"`) - metricSum(m0, 'igw_cache_requests_total', `result="${result}"`)
    expect(delta('stale')).toBe(1)
    expect(delta('miss')).toBe(1) // the first request only
  })

  it('a HEAD is answered from the stored GET (its head, no body); its own answer is never stored', async () => {
    const url = (q: string) => `${proxy.url}/head/graphql?query=${encodeURIComponent(q)}`
    const headers = { 'x-tenant-id': 'acme', accept: 'application/json' }
    const get = await request(url('{ headStored }'), { headers })
    const body = await get.body.text()
    expect(get.headers['x-cache']).toBe('MISS')
    const gets = state.calls['GET head']
    const head = await request(url('{ headStored }'), { method: 'HEAD', headers })
    expect(await head.body.text()).toBe('')
    expect({ status: head.statusCode, cache: head.headers['x-cache'], length: head.headers['content-length'], type: head.headers['content-type'] }).toEqual({
      status: 200,
      cache: 'HIT',
      length: String(Buffer.byteLength(body)),
      type: get.headers['content-type'],
    })
    expect(state.calls['HEAD head']).toBeUndefined()
    // Conditional HEAD: 304 from the stored validators.
    const cond = await request(url('{ headStored }'), { method: 'HEAD', headers: { ...headers, 'if-none-match': '"h1"' } })
    await cond.body.dump()
    expect([cond.statusCode, cond.headers['x-cache']]).toEqual([304, 'HIT'])
    expect(state.calls['GET head']).toBe(gets)

    // A HEAD miss goes upstream as a HEAD, uncached; the GET after it is a miss with its body.
    const miss = await request(url('{ headFirst }'), { method: 'HEAD', headers })
    await miss.body.dump()
    expect([miss.statusCode, miss.headers['x-cache']]).toEqual([200, 'BYPASS'])
    expect(state.calls['HEAD head']).toBe(1)
    const after = await request(url('{ headFirst }'), { headers })
    expect(after.headers['x-cache']).toBe('MISS')
    expect(JSON.parse(await after.body.text())).toEqual({ data: { tenant: 'acme', where: 'head' } })
  })

  it("a backend's Vary: X-Tenant-Id is honoured by the tenant in the key: stored, per tenant; without a tenant filter, refused", async () => {
    const q = '{ perTenant }'
    expect(await post('/vary/graphql', q, 'acme')).toMatchObject({ cache: 'MISS', data: { tenant: 'acme' } })
    expect(await post('/vary/graphql', q, 'acme')).toMatchObject({ cache: 'HIT', data: { tenant: 'acme' } })
    expect(await post('/vary/graphql', q, 'globex')).toMatchObject({ cache: 'MISS', data: { tenant: 'globex' } })
    expect(await post('/vary/graphql', q, 'globex')).toMatchObject({ cache: 'HIT', data: { tenant: 'globex' } })

    // No tenant filter: the client's own header reaches the backend and the key ignores it.
    const m0 = metricSum(await metrics(), 'igw_cache_not_stored_total', 'reason="vary"')
    expect(await post('/open/vary', q, 'acme')).toMatchObject({ cache: 'MISS', data: { tenant: 'acme' } })
    expect(await post('/open/vary', q, 'globex')).toMatchObject({ cache: 'MISS', data: { tenant: 'globex' } })
    expect(metricSum(await metrics(), 'igw_cache_not_stored_total', 'reason="vary"') - m0).toBe(2)
  })
})
