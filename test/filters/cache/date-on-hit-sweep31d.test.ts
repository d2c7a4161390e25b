// Cache sweep 31d: a hit carries the upstream's Date beside its Age. It was sent a Date of the
// moment it was served, with the upstream's Expires and an Age: a browser or CDN reckons the
// lifetime as Expires − Date (what was left) and then subtracts the Age again (RFC 9111 4.2), so an
// entry past half its life reached them already expired (a CDN in front missed on every such hit).
// Real proxy, real node:http backend, undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'

let backend: RawBackend
let proxy: TestProxy
const LIFETIME_S = 120

function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    const body = JSON.stringify({ data: { n: 1 } })
    // Freshness stated with Expires alone; node:http adds its Date.
    res.writeHead(200, { 'content-type': 'application/json', expires: new Date(Date.now() + LIFETIME_S * 1000).toUTCString(), etag: '"n1"', 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({ routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 60 }] as never }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function ask(headers: Record<string, string> = {}) {
  const res = await request(`${proxy.url}/graphql?query=${encodeURIComponent('{ n }')}`, { headers: { accept: 'application/json', ...headers } })
  await res.body.dump()
  const h = res.headers as Record<string, string | undefined>
  return { status: res.statusCode, cache: h['x-cache'], date: h.date, expires: h.expires, age: Number(h.age ?? 0) }
}

/** What a client that follows RFC 9111 4.2 reckons is left of the response's freshness, in seconds. */
const freshnessLeft = (r: { date?: string; expires?: string; age: number }) => (Date.parse(r.expires!) - Date.parse(r.date!)) / 1000 - r.age

describe('Date on a hit', () => {
  it("is the upstream's, so Expires − Date − Age is what is really left", async () => {
    const miss = await ask()
    expect(miss.cache).toBe('MISS')
    expect(freshnessLeft(miss)).toBeGreaterThanOrEqual(LIFETIME_S - 1)
    await sleep(2_100) // Date has a resolution of one second
    const hit = await ask()
    expect(hit.cache).toBe('HIT')
    expect(hit.age).toBeGreaterThanOrEqual(2)
    expect(hit.date).toBe(miss.date)
    // Aged by its Age once, not twice.
    expect(freshnessLeft(hit)).toBeGreaterThan(LIFETIME_S - 4)
    // A 304 carries the Date the 200 would have (RFC 9110 15.4.5).
    const notModified = await ask({ 'if-none-match': '"n1"' })
    expect(notModified).toMatchObject({ status: 304, cache: 'HIT', date: miss.date })
  })
})
