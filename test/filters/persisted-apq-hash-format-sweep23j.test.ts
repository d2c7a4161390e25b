// Persisted filter sweep 23j: an APQ lookup (hash without query) whose sha256Hash is not a sha256
// in hex, which can never have been registered, was looked up in Redis all the same: any string
// a client sent, up to the body limit, became a GET of that key on the shared Redis (and a wait
// of up to redisTimeoutMs), per request and per batch operation. It is answered
// PersistedQueryNotFound at once now, as before, without asking Redis.
// Real proxy (worker threads), real redis-server, a node:http backend, undici, ioredis.
import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')

describe('persisted filter sweep 23j: APQ lookups of hashes that are no sha256', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let redis: TestRedis
  let admin: Redis
  beforeAll(async () => {
    redis = await startRedis()
    admin = new Redis(redis.url, { maxRetriesPerRequest: 1 })
    backend = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ data: { hello: 'world' } }))
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      redis: { url: redis.url, keyPrefix: 'sweep23j:' },
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, batching: { enabled: true }, filters: [{ name: 'persisted', apq: { redisTimeoutMs: 1000 } }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
    admin?.disconnect()
    await redis?.close()
  })

  const post = async (body: unknown) => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: r.statusCode, json: (await r.body.json()) as unknown }
  }
  const byHash = (h: string) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: h } } })
  const code = (json: unknown) => (json as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code
  const gets = async () => Number(/cmdstat_get:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0)

  it('answers not-found without reading Redis; a real unknown hash is still looked up there', async () => {
    // A hex digest the gateway does not hold is read from Redis (once the proxy's connection is up).
    const base = await gets()
    await expect
      .poll(
        async () => {
          await post(byHash(sha(`unknown ${Date.now()}`)))
          return gets()
        },
        { timeout: 5_000 },
      )
      .toBeGreaterThan(base)
    const ref = await gets()
    expect((await post(byHash(sha('another unknown').toUpperCase()))).status).toBe(200)
    expect(await gets()).toBe(ref + 1)

    const before = await gets()
    for (const h of ['z'.repeat(64), sha('x').slice(1), `${sha('x')}0`, 'k'.repeat(100_000)]) {
      const r = await post(byHash(h))
      expect(r.status).toBe(200)
      expect(code(r.json)).toBe('PERSISTED_QUERY_NOT_FOUND')
    }
    const batch = await post([{ query: '{ hello }' }, byHash('not-a-hash')])
    expect(batch.status).toBe(200)
    expect((batch.json as unknown[]).map(code)).toEqual(['PERSISTED_QUERY_NOT_FOUND', 'PERSISTED_QUERY_NOT_FOUND'])
    expect(await gets()).toBe(before)
  })
})
