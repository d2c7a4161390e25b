// The shared L2 keeps an entry past its freshness while the route's stale-if-error (or
// stale-while-revalidate) window lasts. A proxy whose L1 is cold then finds that stale copy,
// goes upstream — and did not store what it got: the L2 lookup only took Redis's sequence when
// no entry was there, and a miss without it never writes L2. Every proxy with a cold L1 (a new
// pod, a restarted one, another worker) missed upstream until the stale copy's last window ran
// out (a day, with staleIfErrorSeconds: 86400). Two real proxies, one real redis-server.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const PREFIX = 'l2stale17:'

async function ask(url: string, query: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  const json = (await res.body.json()) as { data?: { entity?: { name: string } } }
  return { cache: res.headers['x-cache'] as string, name: json.data?.entity?.name }
}

describe('cache L2: a stale L2 entry is replaced by the miss it causes', () => {
  let redis: TestRedis
  let backend: DemoBackend
  let a: TestProxy
  let b: TestProxy
  let raw: Redis

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startDemoBackend()
    const doc = (): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleIfErrorSeconds: 600, redis: { l2: true, timeoutMs: 1_000 } }] as never }],
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

  /** The freshness deadline (ms) of the only L2 entry, or undefined when there is none. */
  async function l2FreshUntil(): Promise<number | undefined> {
    const keys = await raw.keys(`${PREFIX}cache:e:*`)
    if (keys.length === 0) return undefined
    expect(keys).toHaveLength(1)
    const v = await raw.getBuffer(keys[0]!)
    if (v === null) return undefined
    return (JSON.parse(v.subarray(0, v.indexOf(0x0a)).toString()) as { f: number }).f
  }

  it('a cold proxy that finds only a stale L2 copy goes upstream and writes the fresh answer back to L2', async () => {
    const q = '{ entity(id: "17") { id name } }'
    // The proxies' Redis connections come up after they listen; an L2 read before that fails fast.
    await waitUntil(async () => ((await raw.client('LIST')) as string).split('\n').filter((l) => l.includes('cmd=')).length >= 5, 10_000, 'both proxies connected to Redis')
    await sleep(200)
    expect((await ask(a.url, q)).cache).toBe('MISS')
    await waitUntil(async () => (await l2FreshUntil()) !== undefined, 5_000, 'the L2 entry written')
    const first = (await l2FreshUntil())!
    // Past its freshness; it stays in Redis for the stale-if-error window.
    while (Date.now() <= first + 100) await sleep(50)
    expect(await l2FreshUntil()).toBe(first)

    const calls = backend.stats.byField.get('entity') ?? 0
    const onB = await ask(b.url, q) // b's L1 is cold: the stale L2 copy is all there is
    expect(onB.cache).toBe('MISS')
    expect(onB.name).toBe('Entity 17')
    expect(backend.stats.byField.get('entity')).toBe(calls + 1)
    // b's fresh answer replaces the stale copy in L2 (before the fix it stayed stale).
    await waitUntil(async () => ((await l2FreshUntil()) ?? 0) > first, 5_000, 'the L2 entry refreshed by the miss')
  })
})
