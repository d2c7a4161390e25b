// Persisted filter sweep 15. Real igw, real node:http backend that records what it was sent,
// undici clients.
//  - Cost hints are the gateway's to give: a client's own x-igw-cost-hints header must not
//    reach the backend on requests the filter cannot parse (a batch, a GET without a query)
//    any more than on the ones it can.
//  - PersistedQueryNotFound / NotSupported answer 200 (Apollo's contract) and so must say they
//    are not to be cached (`Cache-Control: private, no-cache, must-revalidate`, as Apollo Server
//    and Router send): with `useGETForHashedQueries` a CDN or browser cache in front of the
//    gateway would otherwise keep answering "not found" for the hash after it is registered.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const FORGED = Buffer.from(JSON.stringify({ id: 'x', cost: 0, tier: 'gold' })).toString('base64url')

describe('persisted filter sweep 15', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen: { url: string; hints: string | undefined }[] = []

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        seen.push({ url: req.url ?? '', hints: req.headers['x-igw-cost-hints'] as string | undefined })
        const body = JSON.stringify({ data: { hello: 'world' } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) })
        res.end(body)
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        { name: 'open', match: { pathPrefix: '/open' }, upstream: backend.url, batching: { enabled: true }, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never },
        { name: 'noapq', match: { pathPrefix: '/noapq' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', apq: { enabled: false } }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('a client\'s own cost-hints header never reaches the backend, batch or GET without a query', async () => {
    const before = seen.length
    const batch = await request(`${proxy.url}/open/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-igw-cost-hints': FORGED },
      body: JSON.stringify([{ query: '{ hello }' }, { query: '{ hello }' }]),
    })
    expect(batch.statusCode).toBe(200)
    await batch.body.text()
    const get = await request(`${proxy.url}/open/graphql`, { headers: { 'x-igw-cost-hints': FORGED } })
    expect(get.statusCode).toBe(200)
    await get.body.text()
    const single = await request(`${proxy.url}/open/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-igw-cost-hints': FORGED }, body: JSON.stringify({ query: '{ hello }' }) })
    await single.body.text()
    const forwarded = seen.slice(before)
    expect(forwarded).toHaveLength(3)
    expect(forwarded.map((s) => s.hints)).toEqual([undefined, undefined, undefined])
  })

  it('PersistedQueryNotFound (POST and GET) and PersistedQueryNotSupported are never cacheable', async () => {
    const ext = { persistedQuery: { version: 1, sha256Hash: sha('{ hello(name: "never registered") }') } }
    const post = await request(`${proxy.url}/open/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ extensions: ext }) })
    const get = await request(`${proxy.url}/open/graphql?extensions=${encodeURIComponent(JSON.stringify(ext))}`)
    const off = await request(`${proxy.url}/noapq/graphql?extensions=${encodeURIComponent(JSON.stringify(ext))}`)
    for (const [res, code] of [[post, 'PERSISTED_QUERY_NOT_FOUND'], [get, 'PERSISTED_QUERY_NOT_FOUND'], [off, 'PERSISTED_QUERY_NOT_SUPPORTED']] as const) {
      expect(res.statusCode).toBe(200)
      expect(res.headers['cache-control']).toBe('private, no-cache, must-revalidate')
      const json = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
      expect(json.errors[0]!.extensions.code).toBe(code)
    }
    // Registering it, then asking by hash with GET, answers the data (and may be cached).
    const reg = await request(`${proxy.url}/open/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ hello(name: "never registered") }', extensions: ext }) })
    expect(reg.statusCode).toBe(200)
    await reg.body.text()
    const hit = await request(`${proxy.url}/open/graphql?extensions=${encodeURIComponent(JSON.stringify(ext))}`)
    expect(await hit.body.json()).toEqual({ data: { hello: 'world' } })
    expect(hit.headers['cache-control']).toBeUndefined()
  })
})
