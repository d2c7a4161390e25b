// Cache state across hot config reloads while traffic flows, against a real igw (2 worker
// threads), real backends, undici clients and (where said) a real redis-server. (The quota
// filter's state across reloads was checked the same way and held: no test here.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { validateConfig } from '../../config/load.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep } from '../helpers/wait.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>

async function post(url: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 20_000) {
  const t0 = performance.now()
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: JSON.stringify(body), headersTimeout: timeoutMs, bodyTimeout: timeoutMs })
  const text = await res.body.text()
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, text, ms: performance.now() - t0 }
}

function apply(p: TestProxy, d: Doc): Promise<unknown> {
  return p.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, ...d }))
}

describe('cache across reloads', () => {
  let backend: RawBackend
  let calls = 0
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      let raw = ''
      req.on('data', (c: Buffer) => (raw += c))
      req.on('end', () => {
        calls++
        const n = calls
        const delay = raw.includes('slow') ? 600 : 0
        setTimeout(() => {
          const body = JSON.stringify({ data: { n } })
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600', 'content-length': Buffer.byteLength(body) })
          res.end(body)
        }, delay)
      })
    })
  })
  afterAll(async () => {
    await backend?.close()
  })

  const doc = (cache: Record<string, unknown>, extra: Partial<GatewayConfigInput> = {}): Doc => ({
    workers: 2,
    tenants: { acme: {} },
    routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ...cache }] as never }],
    ...extra,
  })

  it('a miss under new cache settings (maxBytes changed) while a fill under the old settings runs does not wait out the old leader\'s lease', async () => {
    const p = await startTestProxy(doc({ maxBytes: 8 * 1024 * 1024 }))
    try {
      const q = { query: '{ slow }' }
      const first = post(p.url, q)
      await sleep(150) // its fill (600 ms upstream) leads the process-wide single-flight slot
      await apply(p, doc({ maxBytes: 4 * 1024 * 1024 }))
      const second = await post(p.url, q, {}, 8_000)
      const a = await first
      expect([a.status, second.status]).toEqual([200, 200])
      expect(JSON.parse(second.text).data.n).toBeGreaterThan(0)
      // Before the fix: the follower waited for a broadcast on the old settings' channel until
      // the leader's lease (the route deadline) ran out — 8 s here (the client gave up).
      expect(second.ms).toBeLessThan(3_000)
    } finally {
      await p.close()
    }
  })
})

describe('cache L2 across reloads', () => {
  let backend: RawBackend
  let redis: TestRedis
  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        const body = JSON.stringify({ data: { a: req.headers['x-a'] ?? null, b: req.headers['x-b'] ?? null } })
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      })
    })
  })
  afterAll(async () => {
    await backend?.close()
    await redis?.close()
  })
  it('a reload that renames a vary header does not serve the L2 entry of the old header\'s value', async () => {
    const doc = (vary: string[]): Doc =>
      ({
        workers: 2,
        redis: { url: redis.url, keyPrefix: 'rs:' },
        tenants: { acme: {} },
        routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, vary: { headers: vary }, redis: { l2: true } }] as never }],
      }) as Doc
    const p = await startTestProxy(doc(['x-a']))
    try {
      const q = { query: '{ who }' }
      await sleep(300) // the cache's Redis connection is ready (L2 commands fail fast before)
      const a = await post(p.url, q, { 'x-a': 'alice' })
      expect(a.cache).toBe('MISS')
      await sleep(300) // stored in L2 (fire and forget); the fill's single-flight grace is over
      expect(await apply(p, doc(['x-b']))).toMatchObject({ ok: true })
      const b = await post(p.url, q, { 'x-b': 'alice' })
      // Before the fix: x-cache HIT with {"a":"alice","b":null}, the answer for x-a: alice.
      expect(JSON.parse(b.text)).toEqual({ data: { a: null, b: 'alice' } })
    } finally {
      await p.close()
    }
  })
})
