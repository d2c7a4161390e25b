// A background refresh (stale-while-revalidate, refresh-ahead) of a query whose upstream now
// answers with a stream (multipart @defer, SSE, NDJSON) decides at the head, as a miss does: the
// stream is dropped unread at once. It used to be read to its end before storeDecision refused
// it: the upstream connection (and the key, which misses waited on) held for up to the route's
// whole timeout (60 s by default), and no later hit could start another refresh meanwhile.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const TYPES: Record<string, string> = {
  multipart: 'multipart/mixed; boundary="-"; deferSpec=20220824',
  sse: 'text/event-stream',
  ndjson: 'application/x-ndjson',
}

describe('cache: a background refresh answered with a stream', () => {
  let backend: RawBackend
  let proxy: TestProxy
  /** Per query (?q=): what the backend answers now ('json' or a stream kind). */
  const mode = new Map<string, string>()
  const open: { q: string; res: ServerResponse; closed: boolean }[] = []

  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      const q = new URL(req.url!, 'http://x').searchParams.get('q')!
      const m = mode.get(q) ?? 'json'
      if (m === 'json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"v":1}}')
        return
      }
      res.writeHead(200, { 'content-type': TYPES[m]! })
      res.write(m === 'sse' ? 'event: next\ndata: {"data":{"v":2}}\n\n' : '{"data":{"v":2},"hasNext":true}\n')
      const s = { q, res, closed: false }
      res.on('close', () => void (s.closed = true))
      open.push(s)
    })
    proxy = await startTestProxy({
      routes: [
        { name: 'swr', match: { pathPrefix: '/swr' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 1, staleWhileRevalidateSeconds: 600 }] as never },
        { name: 'ahead', match: { pathPrefix: '/ahead' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 2, refreshAheadSeconds: 2 }] as never },
      ],
    })
  })
  afterAll(async () => {
    for (const s of open.splice(0)) s.res.destroy()
    await proxy?.close()
    await backend?.close()
  })

  const get = async (path: string, q: string) => {
    const res = await request(`${proxy.url}${path}?q=${q}&query=${encodeURIComponent(`{ v(q: "${q}") }`)}`)
    return { cache: res.headers['x-cache'], body: await res.body.text() }
  }
  // A worker that dies closes every socket: the streams would read as dropped by the refresh.
  const noWorkerDied = () => expect(proxy.logs.lines.filter((l) => l.level === 'fatal' || (typeof l.level === 'number' && l.level >= 60))).toEqual([])
  const metric = async (name: string, label: string) => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), name, label)

  for (const kind of Object.keys(TYPES)) {
    it(`stale-while-revalidate: a ${kind} answer is dropped at its head`, async () => {
      const q = `swr-${kind}`
      expect(await get('/swr', q)).toEqual({ cache: 'MISS', body: '{"data":{"v":1}}' })
      mode.set(q, kind)
      const notJson = await metric('igw_cache_not_stored_total', 'reason="not_json"')
      // Hits until the 1 s TTL runs out; the first stale one starts the refresh.
      await expect.poll(async () => (await get('/swr', q)).cache, { timeout: 5_000, interval: 50 }).toBe('STALE')
      await waitUntil(() => open.some((s) => s.q === q), 3_000, 'the refresh reached the backend')
      await waitUntil(() => open.filter((s) => s.q === q).every((s) => s.closed), 3_000, 'the refresh dropped the stream')
      expect(await metric('igw_cache_not_stored_total', 'reason="not_json"')).toBeGreaterThan(notJson)
      // The key is free again: the next stale hit starts a refresh of its own.
      await expect.poll(async () => {
        expect((await get('/swr', q)).cache).toBe('STALE')
        return open.filter((s) => s.q === q).length
      }, { timeout: 3_000, interval: 50 }).toBeGreaterThanOrEqual(2)
      noWorkerDied()
    })
  }

  it('refresh-ahead: a stream answer is dropped at its head', async () => {
    const q = 'ahead'
    expect(await get('/ahead', q)).toEqual({ cache: 'MISS', body: '{"data":{"v":1}}' })
    mode.set(q, 'multipart')
    // Hits in the last half of its 2 s TTL refresh ahead.
    await expect.poll(async () => {
      expect((await get('/ahead', q)).cache).toBe('HIT')
      return open.some((s) => s.q === q)
    }, { timeout: 3_000, interval: 50 }).toBe(true)
    await waitUntil(() => open.filter((s) => s.q === q).every((s) => s.closed), 3_000, 'the refresh dropped the stream')
    // The key is free again: a later hit refreshes ahead anew.
    await expect.poll(async () => {
      await get('/ahead', q)
      return open.filter((s) => s.q === q).length
    }, { timeout: 3_000, interval: 50 }).toBeGreaterThanOrEqual(2)
    noWorkerDied()
  })
})
