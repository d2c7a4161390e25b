// A cacheable query (its Accept admits JSON: Apollo Client's @defer Accept is
// `multipart/mixed;deferSpec=20220824,application/json`) whose upstream answers with a stream
// (multipart incremental delivery, SSE, NDJSON). Such a response is never a stored entry, so the
// cache decides at its head: it streams through, and the concurrent misses on its key go upstream
// at once instead of waiting for the stream's end (for a long @defer or a live stream, forever).
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const STREAMS: Record<string, { type: string; first: string; last: string }> = {
  multipart: { type: 'multipart/mixed; boundary="-"; deferSpec=20220824', first: '\r\n---\r\ncontent-type: application/json\r\n\r\n{"data":{"a":1},"hasNext":true}\r\n---', last: '\r\ncontent-type: application/json\r\n\r\n{"incremental":[{"data":{"b":2},"path":[]}],"hasNext":false}\r\n-----\r\n' },
  sse: { type: 'text/event-stream', first: 'event: next\ndata: {"data":{"a":1}}\n\n', last: 'event: complete\ndata:\n\n' },
  ndjson: { type: 'application/x-ndjson', first: '{"data":{"a":1},"hasNext":true}\n', last: '{"incremental":[{"data":{"b":2},"path":[]}],"hasNext":false}\n' },
}

describe('cache: streamed upstream answers', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const held: { kind: string; res: ServerResponse }[] = []
  let calls = 0

  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      calls++
      const kind = new URL(req.url!, 'http://x').searchParams.get('kind')!
      const s = STREAMS[kind]!
      res.writeHead(200, { 'content-type': s.type })
      res.write(s.first)
      held.push({ kind, res })
    })
    proxy = await startTestProxy({
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 60 }] as never }],
    })
  })
  afterAll(async () => {
    for (const h of held.splice(0)) h.res.destroy()
    await proxy?.close()
    await backend?.close()
  })

  const open = async (kind: string) => {
    const res = await request(`${proxy.url}/graphql?kind=${kind}&query=${encodeURIComponent('{ a ... @defer { b } }')}`, {
      headers: { accept: 'multipart/mixed;deferSpec=20220824,application/json' },
    })
    const it = res.body[Symbol.asyncIterator]()
    const first = (await it.next()).value as Buffer
    return { res, it, first: first.toString() }
  }

  for (const kind of Object.keys(STREAMS)) {
    it(`${kind}: streams through, is not stored, and does not hold a second miss`, async () => {
      const s = STREAMS[kind]!
      const before = calls
      const notJson = metricSum(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'igw_cache_not_stored_total', 'reason="not_json"')
      const a = await open(kind) // its first part arrives while the upstream still holds the rest
      expect(a.res.statusCode).toBe(200)
      expect(a.res.headers['content-type']).toBe(s.type)
      expect(s.first.startsWith(a.first)).toBe(true)
      // Same key, while the first stream is still open: goes upstream itself, at once.
      const b = await open(kind)
      expect(b.res.headers['x-cache']).not.toBe('HIT')
      await waitUntil(() => calls === before + 2, 3_000, 'second request upstream')
      for (const h of held.splice(0)) h.res.end(s.last)
      let restA = a.first
      for (let n = await a.it.next(); !n.done; n = await a.it.next()) restA += (n.value as Buffer).toString()
      expect(restA).toBe(s.first + s.last)
      for (let n = await b.it.next(); !n.done; n = await b.it.next());
      const after = metricSum(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'igw_cache_not_stored_total', 'reason="not_json"')
      expect(after).toBe(notJson + 2)
      // Nothing stored: a third request goes upstream too.
      const c = await open(kind)
      expect(c.res.headers['x-cache']).toBe('MISS')
      for (const h of held.splice(0)) h.res.end(s.last)
      for (let n = await c.it.next(); !n.done; n = await c.it.next());
    }, 8_000)
  }
})
