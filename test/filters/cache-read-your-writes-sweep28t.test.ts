// Read-your-writes with Redis (L2 on): a client that has read a mutation's whole answer and then
// queries the same proxy gets the entity as written, not as it was. Redis is made slow to purge
// with CLIENT PAUSE WRITE (reads still answered, so the not-yet-purged L2 copy is readable): the
// mutation's answer must wait for the purge rather than complete before it.
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

type Json = { data?: Record<string, { name?: string } | undefined> }

async function gql(url: string, query: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  return { cache: res.headers['x-cache'] as string, length: res.headers['content-length'], json: (await res.body.json()) as Json }
}

describe('read-your-writes with a slow Redis purge', () => {
  let redis: TestRedis
  let backend: DemoBackend
  let admin: Redis
  const proxies = new Map<number, TestProxy>()
  beforeAll(async () => {
    redis = await startRedis()
    backend = await startDemoBackend()
    admin = new Redis(redis.url)
    // 1 and 2 worker threads, each proxy under its own key prefix.
    await Promise.all(
      [1, 2].map(async (workers) => {
        const proxy = await startTestProxy({
          workers,
          redis: { url: redis.url, keyPrefix: `ryw${workers}:` },
          tenants: { acme: {} },
          routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, redis: { l2: true, timeoutMs: 2_000 }, invalidation: { redisTimeoutMs: 5_000 } }] as never }],
        })
        proxies.set(workers, proxy)
      }),
    )
  })
  afterAll(async () => {
    await admin?.client('UNPAUSE').catch(() => {})
    admin?.disconnect()
    await Promise.all([...proxies.values()].map((p) => p.close()))
    await backend?.close()
    await redis?.close()
  })

  it.each([1, 2])('%i worker threads: the next query after a mutation answer is fresh, from L1 and from the unpurged L2 copy', async (workers) => {
    const proxy = proxies.get(workers)!
    const id = String(40 + workers)
    const q = `{ entity(id: "${id}") { id name } }`
    const l2Entries = async () => (await admin.keys(`ryw${workers}:cache:e:*`)).length
    // Each worker's Redis connection comes up on its own: until it does, a miss stores nothing
    // in L2. Warm up until 4 misses in a row (spread over the workers) all reach L2.
    for (let round = 0; ; round++) {
      expect(round).toBeLessThan(20)
      const n = await l2Entries()
      for (let i = 0; i < 4; i++) await gql(proxy.url, `{ entity(id: "${900 + round * 4 + i}") { id } }`)
      if (await waitUntil(async () => (await l2Entries()) >= n + 4, 1_000).then(() => true, () => false)) break
    }
    const stored = await l2Entries()
    const first = await gql(proxy.url, q)
    expect(first.cache).toBe('MISS')
    const old = first.json.data?.entity?.name
    await waitUntil(async () => (await l2Entries()) > stored, 5_000, 'the L2 entry written')
    // Warm L1 (with 2 workers, at least the worker that answers next).
    for (let i = 0; i < 4; i++) expect((await gql(proxy.url, q)).json.data?.entity?.name).toBe(old)
    // Writes (the purge script) wait 0.8 s; reads of the old L2 copy are still answered.
    await admin.client('PAUSE', 800, 'WRITE')
    const name = `New ${id} ${Date.now()}`
    const m = await gql(proxy.url, `mutation { updateEntity(id: "${id}", name: "${name}") { id name } }`)
    expect(m.length).toBeDefined() // a sized answer: the client has it all with its last byte
    expect(m.json.data?.updateEntity?.name).toBe(name)
    for (let i = 0; i < 4; i++) expect((await gql(proxy.url, q)).json.data?.entity?.name).toBe(name)
  })
})
