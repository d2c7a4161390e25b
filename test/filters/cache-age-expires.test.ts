// The upstream's Age and Expires through the real proxy (RFC 9111 4.2): a response that comes
// from a CDN already 58 s into its max-age=60 may be served from our cache for 2 s more, not for
// the route's whole TTL; the Age we serve counts from when it was made, not from when we stored
// it (else a client cache downstream believes it fresh for another minute); an Expires without
// max-age caps the TTL; one already past is not stored.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

let backend: RawBackend
let proxy: TestProxy
let calls = 0

/** Answers every query; the headers to send come from the operation name (the test's "knob"). */
function handler(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    calls++
    const { operationName } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { operationName: string }
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (operationName === 'Aged') Object.assign(headers, { 'cache-control': 'max-age=60', age: '58' })
    if (operationName === 'Expiring') Object.assign(headers, { expires: new Date(Date.now() + 2_000).toUTCString(), date: new Date().toUTCString() })
    if (operationName === 'Expired') Object.assign(headers, { expires: 'Thu, 01 Jan 1970 00:00:00 GMT' })
    if (operationName === 'UsedUp') Object.assign(headers, { 'cache-control': 'max-age=30', age: '31' })
    const body = JSON.stringify({ data: { n: calls } })
    res.writeHead(200, { ...headers, 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
}

async function ask(operationName: string): Promise<{ cache: string | undefined; age: string | undefined; n: number }> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: `query ${operationName} { n }`, operationName }) })
  const json = (await res.body.json()) as { data: { n: number } }
  return { cache: res.headers['x-cache'] as string | undefined, age: res.headers.age as string | undefined, n: json.data.n }
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({
    tenants: { acme: {} },
    routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('the upstream Age and Expires bound how long a response is served from the cache', () => {
  it('max-age=60 with Age 58: a hit now (Age 58+), a miss after 2 s — not 300 s of hits', async () => {
    const first = await ask('Aged')
    expect(first.cache).toBe('MISS')
    const hit = await ask('Aged')
    expect([hit.cache, hit.n]).toEqual(['HIT', first.n])
    expect(Number(hit.age)).toBeGreaterThanOrEqual(58)
    expect(Number(hit.age)).toBeLessThanOrEqual(60)
    await sleep(2_300)
    const later = await ask('Aged')
    expect(later.cache).toBe('MISS')
    expect(later.n).not.toBe(first.n)
  })

  it('Expires 2 s ahead (no max-age) caps the TTL at 2 s', async () => {
    const first = await ask('Expiring')
    expect((await ask('Expiring')).cache).toBe('HIT')
    await sleep(2_300)
    const later = await ask('Expiring')
    expect(later.cache).toBe('MISS')
    expect(later.n).not.toBe(first.n)
  })

  it('an Expires in the past, or an Age beyond max-age, is not stored, and the reason is counted', async () => {
    const metrics = async () => (await (await request(`${proxy.adminUrl}/metrics`)).body.text())
    expect((await ask('Expired')).cache).toBe('MISS')
    expect((await ask('Expired')).cache).toBe('MISS')
    expect((await ask('UsedUp')).cache).toBe('MISS')
    expect((await ask('UsedUp')).cache).toBe('MISS')
    const text = await metrics()
    expect(metricSum(text, 'igw_cache_not_stored_total', 'reason="max_age_0"')).toBeGreaterThanOrEqual(2)
    expect(metricSum(text, 'igw_cache_not_stored_total', 'reason="stale"')).toBe(2)
  })
})
