// The keep-alive race: the upstream closes an idle connection just as the gateway reuses it, and
// the request dies before any answer. nginx and Envoy send a request that is safe to repeat once
// more; the client got a 502 for a request the upstream never saw. Real igw proxy, a real
// node:http backend that drops the connection a request arrives on, undici clients.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { extensions: { code: string } }[] }

let backend: RawBackend
let proxy: TestProxy
/** How many of the next requests the backend drops (closes their connection on arrival). */
let drop = 0

beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    if (drop > 0) {
      drop--
      req.socket.destroy()
      return
    }
    req.resume()
    req.on('end', () => {
      const body = '{"data":{"hello":"world"}}'
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  proxy = await startTestProxy({
    routes: [
      { name: 'g', match: { pathPrefix: '/graphql' }, upstream: backend.url, type: 'graphql' },
      { name: 'h', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function retries(route: string): Promise<number> {
  return metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_upstream_retries_total', `route="${route}"`)
}

function gql(query: string) {
  return request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })
}

/** A request answered, so the next one goes out on a kept-alive connection; then the next `n` are dropped. */
async function primeThenDrop(n: number): Promise<number> {
  drop = 0
  const a = await request(`${proxy.url}/warm`)
  expect(a.statusCode).toBe(200)
  await a.body.text()
  drop = n
  return backend.requests.length
}

describe('a request the upstream drops on a reused connection before answering', () => {
  beforeEach(() => {
    drop = 0
  })

  it('a GET is sent again once: the client gets the answer, the retry is counted', async () => {
    const before = await primeThenDrop(1)
    const retried = await retries('h')
    const b = await request(`${proxy.url}/b`)
    expect(b.statusCode).toBe(200)
    expect(await b.body.text()).toBe('{"data":{"hello":"world"}}')
    expect(backend.requests.slice(before).map((r) => r.url)).toEqual(['/b', '/b'])
    await expect.poll(() => retries('h'), { timeout: 5000 }).toBe(retried + 1)
  })

  it('a GraphQL query (a POST, its body held in memory) is sent again once', async () => {
    const before = await primeThenDrop(1)
    const b = await gql('query Q { hello }')
    expect(b.statusCode).toBe(200)
    expect(await b.body.json()).toEqual({ data: { hello: 'world' } })
    expect(backend.requests.length - before).toBe(2)
    await expect.poll(() => retries('g'), { timeout: 5000 }).toBe(1)
  })

  it('a GraphQL mutation is never sent twice: 502, as before', async () => {
    const before = await primeThenDrop(1)
    const retried = await retries('g')
    const b = await gql('mutation { deleteAll }')
    expect(b.statusCode).toBe(502)
    expect(((await b.body.json()) as GqlError).errors[0]!.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(backend.requests.length - before).toBe(1)
    expect(await retries('g')).toBe(retried)
  })

  it('a POST on an http route (not idempotent, its body streamed) is not sent twice', async () => {
    const before = await primeThenDrop(1)
    const retried = await retries('h')
    const b = await request(`${proxy.url}/submit`, { method: 'POST', body: 'payload' })
    expect(b.statusCode).toBe(502)
    await b.body.text()
    expect(backend.requests.length - before).toBe(1)
    expect(await retries('h')).toBe(retried)
  })

  it('is retried once only: a second drop is the 502', async () => {
    const before = await primeThenDrop(2)
    const retried = await retries('h')
    const b = await request(`${proxy.url}/c`)
    expect(b.statusCode).toBe(502)
    await b.body.text()
    expect(backend.requests.slice(before).map((r) => r.url)).toEqual(['/c', '/c'])
    await expect.poll(() => retries('h'), { timeout: 5000 }).toBe(retried + 1)
  })
})
