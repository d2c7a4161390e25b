// An L2 entry that cannot be read (another version's format, truncated, hand-edited) was taken
// for a Redis failure: the miss it caused stored nothing in L2, so it stayed there, unreadable,
// until its TTL, and every proxy with a cold L1 went upstream for it. Now it is deleted and
// counted (igw_cache_redis_errors_total{op="decode"}), and the miss refills it. Two real
// proxies, one real redis-server, a real node:http backend.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

const PREFIX = 'l2c24c:'

describe('cache L2: an unreadable entry is replaced, not kept until its TTL', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let raw: Redis
  let calls = 0

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        calls++
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{"answer":42}}')
      })
    })
    const doc = () => ({
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 600, redis: { l2: true, timeoutMs: 1_000 } }] as never }],
    })
    a = await startTestProxy(doc())
    b = await startTestProxy(doc())
    raw = new Redis(redis.url)
  })
  afterAll(async () => {
    raw?.disconnect()
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  async function ask(p: TestProxy) {
    const res = await request(p.url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ answer }' }) })
    return { status: res.statusCode, cache: res.headers['x-cache'], text: await res.body.text() }
  }

  it('a cold proxy that reads a corrupt L2 entry deletes it, counts it, and its miss stores a good one', async () => {
    await waitUntil(async () => (await ask(a)).cache === 'HIT', 10_000, 'proxy a caches the answer')
    let key = ''
    await waitUntil(async () => ((key = (await raw.keys(`${PREFIX}cache:e:*`))[0] ?? '') !== ''), 5_000, 'the L2 entry')
    await raw.set(key, 'garbage without a meta line', 'KEEPTTL')

    const before = calls
    expect(await ask(b)).toMatchObject({ status: 200, cache: 'MISS', text: '{"data":{"answer":42}}' })
    expect(calls).toBe(before + 1)
    expect(metricSum(await b.metricsText(), 'igw_cache_redis_errors_total', 'op="decode"')).toBe(1)
    // The miss's answer replaced it: readable again, with the body the backend sent.
    await waitUntil(async () => (await raw.getBuffer(key))?.subarray(0, 1).toString() === '{', 5_000, 'a readable L2 entry')
    const v = (await raw.getBuffer(key))!
    expect(JSON.parse(v.subarray(0, v.indexOf(0x0a)).toString())).toMatchObject({ s: 200, t: expect.arrayContaining(['route:r']) })
    expect(v.subarray(v.indexOf(0x0a) + 1).toString()).toBe('{"data":{"answer":42}}')
  })
})
