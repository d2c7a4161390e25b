// A mutation whose upstream failed was taken for one that never reached it: any
// UPSTREAM_UNAVAILABLE dropped only the mutation's own tags. But a backend that received the whole
// request, committed the write and then closed the connection (it crashed, a proxy in front of it
// timed out) or answered with a broken head has run it: the route's cached reads now show the old
// entity, and they were served until their TTL. Now a failure after the request was written in
// full drops the route's entries; one that never reached the backend (connection refused) still
// keeps them (they are the stale-if-error fallbacks an outage needs).
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('a mutation whose upstream failed after receiving it', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let name = 'One'
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const q = (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { query?: string }).query ?? ''
        if (/^\s*mutation\b/.test(q)) {
          name = 'Two' // committed
          if (req.headers['x-test-fail'] === 'close') return void req.socket.destroy()
          if (req.headers['x-test-fail'] === 'malformed') return void req.socket.end('HTTP/1.1 ABC nonsense\r\n\r\n')
        }
        const body = JSON.stringify({ data: { entity: { id: '1', name, __typename: 'Entity' } } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) })
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
    const body = await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'], body }
  }
  const read = '{ entity(id: "1") { id name } }'

  it.each(['close', 'malformed'])('the backend ran it, then %s: the next read is fresh', async (fail) => {
    name = 'One'
    await send('mutation { reset }') // a clean start: this route's entries go
    expect((await send(read)).cache).toBe('MISS')
    expect((await send(read)).cache).toBe('HIT')
    const m = await send('mutation { rename }', { 'x-test-fail': fail })
    expect(m.status).toBe(502)
    expect(JSON.parse(m.body)).toMatchObject({ errors: [{ extensions: { code: 'UPSTREAM_UNAVAILABLE' } }] })
    const after = await send(read)
    expect(after.cache).toBe('MISS')
    expect(JSON.parse(after.body)).toEqual({ data: { entity: { id: '1', name: 'Two', __typename: 'Entity' } } })
  })

  // Last: it stops the backend.
  it('an upstream that refuses the connection ran nothing: the cached read stays', async () => {
    await send('mutation { reset }')
    expect((await send(read)).cache).toBe('MISS')
    expect((await send(read)).cache).toBe('HIT')
    await backend.close()
    const m = await send('mutation { rename }')
    expect([m.status, JSON.parse(m.body).errors[0].message]).toEqual([502, expect.stringContaining('unreachable (ECONNREFUSED)')])
    expect((await send(read)).cache).toBe('HIT')
  })
})
