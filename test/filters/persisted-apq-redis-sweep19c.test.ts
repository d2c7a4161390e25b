// Persisted filter sweep 19c: APQ registrations in a real Redis.
// - A document served from Redis must hash to the key it is stored under: whatever else wrote
//   there (another application sharing the prefix, a hand edit) ran under that hash.
// - A document in use is kept in Redis: hits served from the worker's LRU never touched Redis, so
//   a hot document expired there after redisTtlSeconds and every proxy started later answered
//   "not found" for it.
// - A registration of a document the worker already held was not written to Redis: once Redis
//   lost it (expired, flushed), the proxy that lacked it kept answering "not found" while the
//   client's registrations landed on the proxy that had it, which wrote nothing.
// Real igw processes (two, sharing one Redis), the real graphql-yoga demo backend, undici.
import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'

const sha = (q: string) => createHash('sha256').update(q).digest('hex')

describe('APQ store in Redis', () => {
  let backend: DemoBackend
  let redis: TestRedis
  let admin: Redis
  const proxies: TestProxy[] = []
  beforeAll(async () => {
    backend = await startDemoBackend()
    redis = await startRedis()
    admin = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    admin?.disconnect()
    await redis?.close()
    await backend?.close()
  })

  async function proxy(prefix: string, ttl: number): Promise<TestProxy> {
    const p = await startTestProxy({
      tenants: { acme: {} },
      redis: { url: redis.url, keyPrefix: prefix },
      routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', apq: { redisTtlSeconds: ttl } }] as never }],
    } as never)
    proxies.push(p)
    return p
  }
  async function post(p: TestProxy, body: unknown) {
    const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return (await res.body.json()) as { data?: { hello: string }; errors?: { extensions?: { code?: string } }[] }
  }
  const ext = (q: string) => ({ persistedQuery: { version: 1, sha256Hash: sha(q) } })

  it('a document in Redis that does not hash to its key is never served', async () => {
    const p = await proxy('poison:', 0)
    const asked = 'query Asked { hello(name: "asked") }'
    await admin.set(`poison:apq:${sha(asked)}`, 'query Other { hello(name: "planted") }')
    const r = await post(p, { extensions: ext(asked) })
    expect(r.data).toBeUndefined()
    expect(r.errors?.[0]?.extensions?.code).toBe('PERSISTED_QUERY_NOT_FOUND')
    // The client's registration then puts the right document there, and it is served.
    expect((await post(p, { query: asked, extensions: ext(asked) })).data?.hello).toBe('Hello, asked!')
    await expect.poll(() => admin.get(`poison:apq:${sha(asked)}`), { timeout: 10_000 }).toBe(asked)
    expect((await post(p, { extensions: ext(asked) })).data?.hello).toBe('Hello, asked!')
  })

  it('a document in use keeps its Redis copy alive: hits from the LRU refresh the TTL', async () => {
    const p = await proxy('hot:', 2)
    const q = 'query Hot { hello(name: "hot") }'
    expect((await post(p, { query: q, extensions: ext(q) })).data?.hello).toBe('Hello, hot!')
    await expect.poll(() => admin.exists(`hot:apq:${sha(q)}`), { timeout: 10_000 }).toBe(1)
    await new Promise((r) => setTimeout(r, 1_300)) // past half the TTL
    expect((await post(p, { extensions: ext(q) })).data?.hello).toBe('Hello, hot!') // from the LRU
    // Refreshed to the full 2 s (it had 0.7 s left, or was gone, without the refresh).
    await expect.poll(() => admin.pttl(`hot:apq:${sha(q)}`), { timeout: 10_000 }).toBeGreaterThan(1_200)
  })

  it('a registration of a document the proxy holds but Redis lost is written again', async () => {
    const a = await proxy('rr:', 2)
    const b = await proxy('rr:', 2)
    const q = 'query PingPong { hello(name: "pp") }'
    expect((await post(a, { query: q, extensions: ext(q) })).data?.hello).toBe('Hello, pp!')
    // Nobody uses it for longer than the TTL: gone from Redis, still in a's LRU.
    await expect.poll(() => admin.exists(`rr:apq:${sha(q)}`), { timeout: 10_000, interval: 200 }).toBe(0)
    expect((await post(b, { extensions: ext(q) })).errors?.[0]?.extensions?.code).toBe('PERSISTED_QUERY_NOT_FOUND')
    // The client registers; a round-robin balancer sends that to a.
    expect((await post(a, { query: q, extensions: ext(q) })).data?.hello).toBe('Hello, pp!')
    await expect.poll(() => admin.exists(`rr:apq:${sha(q)}`), { timeout: 10_000 }).toBe(1)
    expect((await post(b, { extensions: ext(q) })).data?.hello).toBe('Hello, pp!')
  })
})
