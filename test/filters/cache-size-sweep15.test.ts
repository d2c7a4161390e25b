// Response cache sweep 15: entry size bounds. The per-worker LRU (lru-cache, maxSize = the
// route's maxBytes) silently refuses an entry larger than its whole size. A route whose
// maxBytes is below maxEntryBytes (a small cache on a sidecar, with the default 1 MiB entry
// limit) must say it did not store such a response, not report it stored and then miss on
// every request. Real igw, real node:http backend, undici client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('cache: an entry larger than the route\'s whole cache', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let calls = 0
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      let raw = ''
      req.on('data', (c: Buffer) => (raw += c))
      req.on('end', () => {
        calls++
        const size = raw.includes('big') ? 200_000 : 1_000
        const body = JSON.stringify({ data: { blob: 'x'.repeat(size) } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', maxBytes: '128kib' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function ask(query: string) {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
    const text = await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'], size: text.length }
  }
  const tooLarge = async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_cache_not_stored_total', 'reason="too_large"')

  it('is streamed through and counted as not stored (too_large); smaller ones are still kept', async () => {
    const before = await tooLarge()
    const a = await ask('{ big }')
    expect(a).toMatchObject({ status: 200, cache: 'MISS' })
    expect(a.size).toBeGreaterThan(200_000)
    await expect.poll(tooLarge, { timeout: 10_000 }).toBe(before + 1)
    expect((await ask('{ big }')).cache).toBe('MISS')
    expect((await ask('{ small }')).cache).toBe('MISS')
    expect((await ask('{ small }')).cache).toBe('HIT')
  })
})
