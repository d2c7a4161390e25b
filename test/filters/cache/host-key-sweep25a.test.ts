// Cache sweep 25a: the key holds the Host whenever the upstream is sent the client's Host, and a
// client's X-Forwarded-Host whenever the proxy relays it. Only `*.` wildcard-host routes keyed
// the Host: a route with no match.host (it takes every Host) in front of a multi-site backend
// served one site's stored answers to another; and behind a trusted edge
// (forwarded.trustIncoming) the backend's answer built from one X-Forwarded-Host was served for
// every other. Real proxy, real node:http backend, undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy

/** A multi-site backend: answers for the Host it was asked on, with links built from X-Forwarded-Host as frameworks do. */
function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    const body = JSON.stringify({ data: { host: req.headers.host, link: `https://${String(req.headers['x-forwarded-host'])}/cart` } })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
}

beforeAll(async () => {
  backend = await startRawBackend(handler)
  proxy = await startTestProxy({
    forwarded: { trustIncoming: true },
    routes: [
      { name: 'rewritten', match: { pathPrefix: '/rewritten' }, upstream: backend.url, hostRewrite: 'api.internal', filters: [{ name: 'cache', requireTenant: false }] as never },
      { name: 'any', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function ask(path: string, query: string, headers: Record<string, string>): Promise<{ cache: unknown; data: { host: string; link: string } }> {
  const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query }) })
  const json = (await res.body.json()) as { data: { host: string; link: string } }
  return { cache: res.headers['x-cache'], data: json.data }
}

describe('cache key: Host and X-Forwarded-Host as the upstream gets them', () => {
  it("a route without match.host keeps one site's answers from another; case and default port are one site", async () => {
    const q = '{ site { host } }'
    expect(await ask('/graphql', q, { host: 'shop-a.example' })).toMatchObject({ cache: 'MISS', data: { host: 'shop-a.example' } })
    expect(await ask('/graphql', q, { host: 'shop-b.example' })).toMatchObject({ cache: 'MISS', data: { host: 'shop-b.example' } })
    expect(await ask('/graphql', q, { host: 'Shop-A.Example:80' })).toMatchObject({ cache: 'HIT', data: { host: 'shop-a.example' } })
    expect(await ask('/graphql', q, { host: 'shop-b.example' })).toMatchObject({ cache: 'HIT', data: { host: 'shop-b.example' } })
  })

  it("a route with hostRewrite sends one Host whatever the client's: its entries are shared", async () => {
    const q = '{ site { rewritten } }'
    expect(await ask('/rewritten/graphql', q, { host: 'shop-a.example', 'x-forwarded-host': 'www.example' })).toMatchObject({ cache: 'MISS', data: { host: 'api.internal' } })
    expect(await ask('/rewritten/graphql', q, { host: 'shop-b.example', 'x-forwarded-host': 'www.example' })).toMatchObject({ cache: 'HIT', data: { host: 'api.internal' } })
  })

  it("a trusted X-Forwarded-Host, relayed to the upstream, keys its own entries", async () => {
    const q = '{ site { link } }'
    expect(await ask('/graphql', q, { host: 'gw.example', 'x-forwarded-host': 'shop-a.example' })).toMatchObject({ cache: 'MISS', data: { link: 'https://shop-a.example/cart' } })
    expect(await ask('/graphql', q, { host: 'gw.example', 'x-forwarded-host': 'shop-b.example' })).toMatchObject({ cache: 'MISS', data: { link: 'https://shop-b.example/cart' } })
    expect(await ask('/graphql', q, { host: 'gw.example', 'x-forwarded-host': 'SHOP-A.example' })).toMatchObject({ cache: 'HIT', data: { link: 'https://shop-a.example/cart' } })
    // Also on a hostRewrite route: the upstream reads the relayed header all the same.
    const r = '{ site { rewrittenLink } }'
    expect(await ask('/rewritten/graphql', r, { host: 'gw.example', 'x-forwarded-host': 'shop-a.example' })).toMatchObject({ cache: 'MISS', data: { link: 'https://shop-a.example/cart' } })
    expect(await ask('/rewritten/graphql', r, { host: 'gw.example', 'x-forwarded-host': 'shop-b.example' })).toMatchObject({ cache: 'MISS', data: { link: 'https://shop-b.example/cart' } })
  })
})
