// Cache sweep 20b: a background refresh of a persisted GET query sends what the proxy sends.
// A GET whose filled-in document makes a long URL is forwarded as a POST (the proxy's rule for
// backends behind nginx's 8 KiB request line); the refresh sent it as a GET, which such a backend
// refused (414): the entry was never renewed, and every stale hit started another failing refresh.
// Real proxy (persisted + cache filters), real node:http backend, undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

let backend: RawBackend
let proxy: TestProxy
const seen: { method: string; status: number }[] = []
let answers = 0

/** Behind nginx: request lines over 8 KiB are refused with 414. */
function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    if ((req.url ?? '').length > 8192) {
      seen.push({ method: req.method!, status: 414 })
      res.writeHead(414, { 'content-type': 'text/html' })
      res.end('<html>414 Request-URI Too Large</html>')
      return
    }
    seen.push({ method: req.method!, status: 200 })
    const body = JSON.stringify({ data: { n: ++answers } })
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=1', 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
}

// A real app's persisted query: long enough that its text in a URL passes 8 KiB.
const fields = Array.from({ length: 1200 }, (_, i) => `f${i}: n`).join(' ')
const DOCUMENT = `query Big { ${fields} }`

async function ask(): Promise<{ status: number; cache: string | undefined; n: number | undefined }> {
  const ext = encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: 'big' } }))
  const res = await request(`${proxy.url}/graphql?extensions=${ext}`, { headers: { accept: 'application/json' } })
  const json = (await res.body.json()) as { data?: { n: number } }
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, n: json.data?.n }
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({
    persistedDocuments: { operations: { big: { document: DOCUMENT } } },
    routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', filters: [{ name: 'persisted' }, { name: 'cache', requireTenant: false, ttlSeconds: 60, staleWhileRevalidateSeconds: 60 }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('background refresh of a long persisted GET', () => {
  it('is sent as the POST the miss was sent as, and renews the entry', async () => {
    expect(DOCUMENT.length).toBeGreaterThan(8192)
    const first = await ask()
    expect(first).toMatchObject({ status: 200, cache: 'MISS', n: 1 })
    expect(seen).toEqual([{ method: 'POST', status: 200 }])
    await waitUntil(async () => (await ask()).cache === 'STALE', 5_000, 'a stale answer')
    await waitUntil(() => seen.length >= 2, 5_000, 'the background refresh')
    expect(seen[1]).toEqual({ method: 'POST', status: 200 })
    await waitUntil(async () => ((await ask()).n ?? 0) > 1, 5_000, 'the renewed entry')
  })
})
