// Cache sweep 20b: a background refresh (stale-while-revalidate, refresh-ahead) asks the
// upstream what the request itself would have asked. It sent the upstream's own authority as
// Host (undici's default) on a wildcard-host route that keys entries by the client's Host,
// so a multi-site backend answered its default site and that answer was stored under site A's
// key; and at the edge (forwarded.trustIncoming: false) it relayed a client's own
// X-Forwarded-Host, which the proxy strips from every other request: one request on a stale
// entry stored a backend answer built for the spoofed host, served to everyone (cache poisoning).
// Real proxy, real node:http backend, undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

let backend: RawBackend
let proxy: TestProxy
let calls = 0

/** A multi-site backend: answers for the Host it was asked on, with links built as frameworks do. */
function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    calls++
    const site = req.headers['x-forwarded-host'] ?? req.headers.host
    const body = JSON.stringify({ data: { host: req.headers.host, link: `https://${String(site)}/cart`, xff: req.headers['x-forwarded-for'] ?? null, n: calls } })
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=1', 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
}

interface Answer {
  cache: string | undefined
  data: { host: string; link: string; xff: string | null; n: number }
}

async function ask(host: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', host, ...headers }, body: JSON.stringify({ query: '{ site { link } }' }) })
  const json = (await res.body.json()) as { data: Answer['data'] }
  return { cache: res.headers['x-cache'] as string | undefined, data: json.data }
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({
    forwarded: { trustIncoming: false },
    routes: [{ name: 'sites', match: { host: '*.shop.test', pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 60, staleWhileRevalidateSeconds: 60 }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('background refresh: the request as the proxy forwards it', () => {
  it("keeps the client's Host, and at the edge replaces a client's X-Forwarded-* as every forwarded request does", async () => {
    const first = await ask('a.shop.test')
    expect(first).toMatchObject({ cache: 'MISS', data: { host: 'a.shop.test', link: 'https://a.shop.test/cart', xff: '127.0.0.1' } })
    // Past max-age=1: served stale, and this request's refresh goes upstream in the background.
    let stale: Answer | undefined
    await waitUntil(async () => (stale = await ask('a.shop.test', { 'x-forwarded-host': 'evil.test', 'x-forwarded-for': '6.6.6.6' })).cache === 'STALE', 5_000, 'a stale answer')
    expect(stale!.data.n).toBe(first.data.n)
    await waitUntil(() => calls >= 2, 5_000, 'the background refresh')
    let refreshed: Answer | undefined
    await waitUntil(async () => (refreshed = await ask('a.shop.test')).data.n > first.data.n, 5_000, 'the refreshed entry')
    expect(refreshed!.cache).toMatch(/HIT|STALE/)
    // Asked for site a, as the original miss was; the spoofed forwarding headers never reached it.
    expect(refreshed!.data).toMatchObject({ host: 'a.shop.test', link: 'https://a.shop.test/cart', xff: '127.0.0.1' })
  })
})
