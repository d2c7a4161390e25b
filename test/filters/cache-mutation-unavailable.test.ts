// A mutation answered 502 or 503 (a load balancer in front of the backend saying no backend is
// there, a backend refusing under load before it runs anything) most likely ran nothing: it
// drops its own tags, not the route's cache — during an outage every attempted mutation used to
// empty the route and take the stale-if-error fallbacks with it. A 500 still drops the route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('mutations answered 502/503 keep the route cache', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const q = (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { query?: string }).query ?? ''
        const status = Number(req.headers['x-test-status'] ?? 200)
        const body = /^\s*mutation\b/.test(q)
          ? JSON.stringify(status === 200 ? { data: { touch: true } } : { errors: [{ message: `upstream said ${status}` }] })
          : JSON.stringify({ data: { entity: { id: '1', name: 'One', __typename: 'Entity' } } })
        res.writeHead(/^\s*mutation\b/.test(q) ? status : 200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) })
        res.end(body)
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'rw', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300 }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const send = async (query: string, headers: Record<string, string> = {}) => {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: JSON.stringify({ query }) })
    await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'] }
  }

  it('502 and 503 keep an unrelated cached read; 500 drops it', async () => {
    const read = '{ entity(id: "1") { id name } }'
    expect((await send(read)).cache).toBe('MISS')
    expect((await send(read)).cache).toBe('HIT')
    for (const status of ['502', '503']) {
      expect((await send('mutation { touch }', { 'x-test-status': status })).status).toBe(Number(status))
      expect([status, (await send(read)).cache]).toEqual([status, 'HIT'])
    }
    expect((await send('mutation { touch }', { 'x-test-status': '500' })).status).toBe(500)
    expect((await send(read)).cache).toBe('MISS')
  })
})
