// Upstream Cache-Control that is invalid or self-contradicting, through the real proxy: RFC 9111
// 4.2.1 has a cache treat invalid freshness information (`max-age=-1`, `max-age=abc`) and a
// directive given twice with different values as stale. They were ignored (or the last one won),
// so a response whose upstream said "do not reuse" was served from the cache for the route's TTL.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
let calls = 0

/** Cache-Control header lines per operation name. */
const LINES: Record<string, string[]> = {
  TwoLines: ['public, max-age=0', 'max-age=60'],
  OneLine: ['max-age=0, max-age=60'],
  Negative: ['max-age=-1'],
  NotANumber: ['public, s-maxage=abc, max-age=60'],
  Quoted: ['max-age="60"'],
  Repeated: ['max-age=60', 'max-age=60'],
}

function handler(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    calls++
    const { operationName } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { operationName: string }
    const body = JSON.stringify({ data: { n: calls } })
    res.writeHead(200, ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), ...LINES[operationName]!.flatMap((l) => ['cache-control', l])])
    res.end(body)
  })
}

async function ask(operationName: string): Promise<{ cache: string | undefined; n: number }> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: `query ${operationName} { n }`, operationName }) })
  const json = (await res.body.json()) as { data: { n: number } }
  return { cache: res.headers['x-cache'] as string | undefined, n: json.data.n }
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({
    tenants: { acme: {} },
    routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300 }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('invalid or conflicting Cache-Control freshness is stale: not stored', () => {
  it.each(['TwoLines', 'OneLine', 'Negative', 'NotANumber'])('%s', async (op) => {
    const scrape = async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_cache_not_stored_total', 'reason="max_age_0"')
    const before = await scrape()
    const first = await ask(op)
    expect(first.cache).toBe('MISS')
    const second = await ask(op)
    expect(second.cache).toBe('MISS')
    expect(second.n).toBeGreaterThan(first.n)
    expect(await scrape()).toBe(before + 2)
  })

  it('a quoted value and a directive repeated with the same value still cache', async () => {
    for (const op of ['Quoted', 'Repeated']) {
      const first = await ask(op)
      expect(first.cache).toBe('MISS')
      expect(await ask(op)).toEqual({ cache: 'HIT', n: first.n })
    }
  })
})
