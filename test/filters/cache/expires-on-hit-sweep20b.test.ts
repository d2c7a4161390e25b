// Cache sweep 20b: a hit carries the upstream's Expires. An upstream that states its freshness
// with Expires alone (no Cache-Control) had it on the MISS but not on HITs: a CDN or browser in
// front of the gateway then applied its own default (CloudFront's 24 h default TTL, a browser's
// heuristic from Last-Modified) to hits, and kept them long after the upstream said they expire.
// Real proxy, real node:http backend, undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
const EXPIRES = new Date(Date.now() + 120_000).toUTCString()

function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    const body = JSON.stringify({ data: { n: 1 } })
    res.writeHead(200, { 'content-type': 'application/json', expires: EXPIRES, 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT', 'content-length': String(Buffer.byteLength(body)) })
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

describe('Expires on a hit', () => {
  it('is the upstream Expires the miss carried', async () => {
    const ask = async () => {
      const res = await request(`${proxy.url}/graphql?query=${encodeURIComponent('{ n }')}`, { headers: { accept: 'application/json' } })
      await res.body.dump()
      return { cache: res.headers['x-cache'], expires: res.headers.expires }
    }
    expect(await ask()).toEqual({ cache: 'MISS', expires: EXPIRES })
    expect(await ask()).toEqual({ cache: 'HIT', expires: EXPIRES })
  })
})
