// s-maxage carries proxy-revalidate for a shared cache (RFC 9111 5.2.2.10): once it has run out
// the response may be served stale only as far as the upstream's own stale-while-revalidate /
// stale-if-error (RFC 5861) allow. The route's windows applied regardless: an upstream that said
// `s-maxage=1` was served stale for ten minutes. A real proxy and a real node:http backend.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

describe('cache: s-maxage limits the stale windows', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let failing = false
  let version = 1

  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        if (failing) {
          res.writeHead(500, { 'content-type': 'application/json' })
          res.end('{"errors":[{"message":"down"}]}')
          return
        }
        // The path names the Cache-Control the backend sends: /swr/<directives>.
        const cc = decodeURIComponent(req.url!.split('/')[2]!)
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': cc })
        res.end(JSON.stringify({ data: { version } }))
      })
    })
    proxy = await startTestProxy({
      routes: [
        { name: 'swr', match: { pathPrefix: '/swr' }, upstream: backend.url, filters: [{ name: 'cache', ttlSeconds: 600, staleWhileRevalidateSeconds: 600, requireTenant: false }] as never },
        { name: 'sie', match: { pathPrefix: '/sie' }, upstream: backend.url, filters: [{ name: 'cache', ttlSeconds: 600, staleIfErrorSeconds: 600, requireTenant: false }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function ask(path: string) {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ version }"}' })
    return { status: res.statusCode, cache: res.headers['x-cache'], text: await res.body.text() }
  }

  const paths = {
    swrBare: `/swr/${encodeURIComponent('public, s-maxage=1')}`,
    swrAllowed: `/swr/${encodeURIComponent('public, s-maxage=1, stale-while-revalidate=600')}`,
    swrMaxAge: `/swr/${encodeURIComponent('public, max-age=1')}`,
    sieBare: `/sie/${encodeURIComponent('public, s-maxage=1')}`,
    sieAllowed: `/sie/${encodeURIComponent('public, s-maxage=1, stale-if-error=600')}`,
  }

  it('serves stale after s-maxage only within the upstream’s own stale directives', async () => {
    for (const p of Object.values(paths)) {
      expect(await ask(p)).toMatchObject({ status: 200, cache: 'MISS' })
      expect(await ask(p)).toMatchObject({ status: 200, cache: 'HIT' })
    }
    // Wait out the one-second freshness.
    const until = Date.now() + 1_100
    while (Date.now() < until) await sleep(50)
    version = 2
    // stale-while-revalidate: only where the upstream allows it (max-age alone says nothing of shared caches).
    expect(await ask(paths.swrBare)).toMatchObject({ cache: 'MISS', text: '{"data":{"version":2}}' })
    expect(await ask(paths.swrAllowed)).toMatchObject({ cache: 'STALE', text: '{"data":{"version":1}}' })
    expect(await ask(paths.swrMaxAge)).toMatchObject({ cache: 'STALE', text: '{"data":{"version":1}}' })
    // stale-if-error: the upstream's failure stands unless it allowed a stale answer.
    failing = true
    expect(await ask(paths.sieBare)).toMatchObject({ status: 500, cache: 'MISS' })
    expect(await ask(paths.sieAllowed)).toMatchObject({ status: 200, cache: 'STALE', text: '{"data":{"version":1}}' })
  })
})
