// Concurrent misses on an expired key coalesce on one upstream request. When that request
// failed and its leader answered from the stale copy (stale-if-error), the waiters each went
// upstream in turn: a stampede on the failing backend, one failure per waiter. They now share
// the leader's answer: one upstream request, every client served STALE.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

describe('cache: waiters of a failed fill take its stale-if-error answer', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const state = { failing: false, calls: [] as string[], held: [] as ServerResponse[] }

  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      const q = new URL(req.url!, 'http://x').searchParams.get('query')!
      req.resume()
      state.calls.push(q)
      if (q === '{ sentinel }') {
        // Sent after the waiters: the held request fails now.
        for (const r of state.held.splice(0)) r.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":[{"message":"down"}]}')
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"sentinel":1}}')
        return
      }
      if (state.failing && state.held.length === 0 && !state.calls.includes('{ sentinel }')) {
        state.held.push(res)
        return
      }
      if (state.failing) res.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":[{"message":"down"}]}')
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"v":1}}')
    })
    proxy = await startTestProxy({
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 1, staleIfErrorSeconds: 600 }] as never }],
    })
  })
  afterAll(async () => {
    for (const r of state.held.splice(0)) r.destroy()
    await proxy?.close()
    await backend?.close()
  })

  const get = async (query: string) => {
    const res = await request(`${proxy.url}/graphql?query=${encodeURIComponent(query)}`)
    return { status: res.statusCode, cache: res.headers['x-cache'], body: await res.body.text() }
  }

  it('one upstream request for the leader and its waiters; all served STALE', async () => {
    expect(await get('{ v }')).toEqual({ status: 200, cache: 'MISS', body: '{"data":{"v":1}}' })
    const storedAt = Date.now()
    while (Date.now() < storedAt + 1_100) await sleep(50) // past its 1 s TTL
    state.failing = true
    state.calls.length = 0
    const leader = get('{ v }')
    await waitUntil(() => state.held.length === 1, 5_000, 'the leader held upstream')
    const waiters = Array.from({ length: 4 }, () => get('{ v }'))
    await sleep(100) // let the waiters reach the cache before the sentinel releases the leader
    const sentinel = await get('{ sentinel }')
    expect(sentinel.status).toBe(200)
    const all = await Promise.all([leader, ...waiters])
    expect(all).toEqual(Array.from({ length: 5 }, () => ({ status: 200, cache: 'STALE', body: '{"data":{"v":1}}' })))
    expect(state.calls.filter((q) => q === '{ v }')).toHaveLength(1)
  })
})
