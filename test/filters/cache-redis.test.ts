// Two gateways (each with 2 worker threads) sharing one real redis-server: a mutation through
// one invalidates the other's entries (pub/sub) and the shared L2; an entry filled through one
// is a hit on the other (L2); Redis going down leaves each proxy serving from its own L1.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

type Json = { data?: Record<string, unknown> }

async function gql(url: string, query: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  return { cache: res.headers['x-cache'] as string, json: (await res.body.json()) as Json }
}

const nameOf = (r: { json: Json }) => (r.json.data?.entity as { name: string } | undefined)?.name

describe('two proxies sharing Redis', () => {
  let redis: TestRedis
  let backend: DemoBackend
  let a: TestProxy
  let b: TestProxy
  beforeAll(async () => {
    redis = await startRedis()
    backend = await startDemoBackend()
    const doc = (l2: boolean): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
      workers: 2,
      redis: { url: redis.url, keyPrefix: 'cachetest:' },
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, redis: { l2 } }] as never }],
    })
    a = await startTestProxy(doc(true))
    b = await startTestProxy(doc(true))
    await sleep(200) // subscriber connections up
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  let attempt = 0
  it('an entry filled through one proxy is an L2 hit on the other', async () => {
    // An id of its own per try: a retry after a slow L2 write must not find the first try's entry.
    const id = 21 + 10 * ++attempt // 31, then 41 (the demo backend holds 1–50; 32–34 are other tests')
    const q = `{ entity(id: "${id}") { id name } }`
    const entries = async () => {
      const c = new Redis(redis.url)
      try {
        return (await c.keys('cachetest:cache:e:*')).length
      } finally {
        c.disconnect()
      }
    }
    const stored = await entries()
    expect((await gql(a.url, q)).cache).toBe('MISS')
    // The L2 write is not on the client's path: wait for it rather than for a fixed time.
    await waitUntil(async () => (await entries()) > stored, 15_000, 'the L2 entry written')
    const before = backend.stats.byField.get('entity') ?? 0
    const onB = await gql(b.url, q)
    expect(onB.cache).toBe('HIT')
    expect(nameOf(onB)).toBe(`Entity ${id}`)
    expect(backend.stats.byField.get('entity')).toBe(before)
  })

  it('a mutation through one proxy invalidates the entity on the other (pub/sub) and in L2', async () => {
    const q = '{ entity(id: "32") { id name } }'
    await gql(b.url, q)
    await sleep(50)
    // warm both proxies' workers
    for (let i = 0; i < 6; i++) await gql(a.url, q)
    for (let i = 0; i < 6; i++) expect((await gql(b.url, q)).cache).toBe('HIT')
    const m = await gql(a.url, 'mutation { updateEntity(id: "32", name: "Thirty-two") { id name } }')
    expect(m.json.data).toEqual({ updateEntity: { id: '32', name: 'Thirty-two', __typename: 'Entity' } })
    // the publish is done before the mutation's response ended; delivery to b is asynchronous
    await waitUntil(async () => nameOf(await gql(b.url, q)) === 'Thirty-two', 500)
    for (let i = 0; i < 6; i++) expect(nameOf(await gql(b.url, q))).toBe('Thirty-two')
    for (let i = 0; i < 6; i++) expect(nameOf(await gql(a.url, q))).toBe('Thirty-two')
    const text = await b.metricsText()
    expect(metricSum(text, 'igw_cache_invalidations_total', 'origin="remote"')).toBeGreaterThanOrEqual(1)
  })

  it('junk published on the invalidation channel is ignored: no worker dies, real invalidations still apply', async () => {
    const pub = new Redis(redis.url)
    try {
      const channel = 'cachetest:cache:invalidate'
      // each of these threw inside the subscriber's listener (null.t, tags that are no strings…)
      for (const junk of ['null', '42', '"t"', '{"t":null}', '{"t":[null,{"x":1},7]}', '{"o":{},"t":["route:graphql",[1]]}', 'not json']) await pub.publish(channel, junk)
      await sleep(100)
      const q = '{ entity(id: "34") { id name } }'
      await gql(b.url, q)
      for (let i = 0; i < 4; i++) expect((await gql(b.url, q)).cache).toBe('HIT')
      await pub.publish(channel, JSON.stringify({ o: 'someone-else', t: ['Entity:34'] }))
      await waitUntil(async () => (await gql(b.url, q)).cache === 'MISS', 1_000)
      expect(metricSum(await b.metricsText(), 'igw_worker_restarts_total')).toBe(0)
    } finally {
      pub.disconnect()
    }
  })

  it('Redis down: each proxy keeps serving from its L1, failures are counted; back up: shared again', async () => {
    const q = '{ entity(id: "33") { id name } }'
    expect((await gql(a.url, q)).cache).toBe('MISS')
    expect((await gql(a.url, q)).cache).toMatch(/HIT/)
    await redis.stop()
    try {
      const r = await gql(a.url, '{ entity(id: "34") { id name } }')
      expect(r.cache).toBe('MISS')
      expect(nameOf(r)).toBe('Entity 34')
      const m = await gql(b.url, 'mutation { updateEntity(id: "34", name: "local") { id } }')
      expect(m.json.data).toBeDefined()
      // every failure is counted, but the log gets one line per 5 s per worker (2 here), not one per request
      const linesBefore = a.logs.find('cache: redis unavailable').length
      const errorsBefore = metricSum(await a.metricsText(), 'igw_cache_redis_errors_total')
      for (let i = 0; i < 30; i++) await gql(a.url, `{ entity(id: "${40 + i}") { id name } }`)
      expect(metricSum(await a.metricsText(), 'igw_cache_redis_errors_total') - errorsBefore).toBeGreaterThanOrEqual(30)
      expect(a.logs.find('cache: redis unavailable').length - linesBefore).toBeLessThanOrEqual(2)
    } finally {
      await redis.start()
    }
    await waitUntil(async () => metricSum(await a.metricsText(), 'igw_redis_up') === 2 && metricSum(await b.metricsText(), 'igw_redis_up') === 2, 8_000)
    await sleep(100) // subscribers re-subscribed
    // shared again: b's mutation reaches a
    const q2 = '{ entity(id: "35") { id name } }'
    await gql(a.url, q2)
    for (let i = 0; i < 4; i++) await gql(a.url, q2)
    await gql(b.url, 'mutation { updateEntity(id: "35", name: "after outage") { id } }')
    await waitUntil(async () => nameOf(await gql(a.url, q2)) === 'after outage', 500)
  })
})
