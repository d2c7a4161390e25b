// A mutation made while Redis is unreachable invalidates the proxy's L1 (shared memory) but
// cannot purge the shared L2 nor tell the other proxies. Redis comes back with its data (a
// partition, a restart with persistence): the L2 still holds the entity as it was before the
// write, and the mutating proxy's own next read — its L1 entry is gone — was answered from
// that L2 copy: the client read the old value right after its own write, for the rest of the
// TTL. A failed purge is now replayed (purge + publish) once Redis is ready again.
// Real igw, real redis-server (persistent, killed and restarted), graphql-yoga backend, undici.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const PREFIX = 'l2outage17:'

async function gql(url: string, query: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  const json = (await res.body.json()) as { data?: Record<string, { name?: string } | null> }
  return { status: res.statusCode, cache: res.headers['x-cache'] as string, json }
}

describe('cache L2: an invalidation Redis missed is replayed when it is back', () => {
  let redis: TestRedis
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    redis = await startRedis({ persistent: true })
    backend = await startDemoBackend()
    proxy = await startTestProxy({
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300, redis: { l2: true, timeoutMs: 1_000 } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
    await redis?.close()
  })

  /** Clients connected to Redis with a command run (ours included): the proxies' are up. */
  async function connections(): Promise<number> {
    const list = await withRedis((c) => c.client('LIST') as Promise<string>).catch(() => '')
    return list.split('\n').filter((l) => l.includes('cmd=')).length
  }

  async function withRedis<T>(fn: (c: Redis) => Promise<T>): Promise<T> {
    const c = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 })
    try {
      await c.connect()
      return await fn(c)
    } finally {
      c.disconnect()
    }
  }

  it("the mutating proxy's next read after Redis returns is the written value, not the L2 copy from before", async () => {
    const q = '{ entity(id: "5") { id name } }'
    // The proxy's Redis connections come up after it listens; an L2 read before that fails fast.
    await waitUntil(async () => (await connections()) >= 3, 10_000, 'the proxy connected to Redis')
    await sleep(200)
    expect((await gql(proxy.url, q)).cache).toBe('MISS')
    await waitUntil(async () => (await withRedis((c) => c.keys(`${PREFIX}cache:e:*`))).length === 1, 5_000, 'the L2 entry written')
    await sleep(1_500) // appendfsync everysec: the entry is on disk when Redis is killed
    expect((await gql(proxy.url, q)).cache).toBe('HIT')

    await redis.stop()
    const m = await gql(proxy.url, 'mutation { updateEntity(id: "5", name: "Five, written") { id name } }')
    expect(m.status).toBe(200)
    expect(m.json.data?.updateEntity?.name).toBe('Five, written')
    expect(metricSum(await proxy.metricsText(), 'igw_cache_redis_errors_total', 'op="invalidate"')).toBeGreaterThanOrEqual(1)

    await redis.start()
    // Redis is back with the pre-mutation entry on disk; let the proxy reconnect (command and
    // subscriber connections) without reading through it meanwhile.
    await waitUntil(async () => (await connections()) >= 3, 10_000, 'the proxy reconnected') // ours + the proxy's two
    await sleep(300)

    const after = await gql(proxy.url, q)
    expect(after.json.data?.entity?.name).toBe('Five, written')
    expect(after.cache).toBe('MISS')
    // and L2 holds the written value for every other proxy too
    await waitUntil(async () => {
      const values = await withRedis(async (c) => Promise.all((await c.keys(`${PREFIX}cache:e:*`)).map((k) => c.get(k))))
      return values.length === 1 && values[0]!.includes('Five, written')
    }, 5_000, 'L2 refilled with the written value')
  })
})
