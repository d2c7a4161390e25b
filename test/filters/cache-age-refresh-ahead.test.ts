// Refresh-ahead with an upstream Age: it is bounded by half of the entry's life in our cache.
// With `created` moved back by the upstream's Age, an entry from a CDN 58 s into
// max-age=60 (2 s left here) counted 60 s of life: every hit within refreshAheadSeconds of the
// end started a background refresh, and each refresh (the same CDN object, as old) did it again.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

let backend: RawBackend
let proxy: TestProxy
let calls = 0

function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    calls++
    const body = JSON.stringify({ data: { n: calls } })
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60', age: '58', 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
}

async function ask(): Promise<string | undefined> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: 'query Aged { n }', operationName: 'Aged' }) })
  await res.body.dump()
  return res.headers['x-cache'] as string | undefined
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({
    tenants: { acme: {} },
    routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300, refreshAheadSeconds: 10, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('refresh-ahead with an upstream Age', () => {
  it('an entry with 2 s left here is not refreshed on a hit at its start (window: half of 2 s, not of 60 s)', async () => {
    expect(await ask()).toBe('MISS')
    expect(calls).toBe(1)
    expect(await ask()).toBe('HIT')
    expect(await ask()).toBe('HIT')
    await sleep(200)
    expect(calls).toBe(1)
  })
})
