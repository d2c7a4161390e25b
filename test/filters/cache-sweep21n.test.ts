// Response cache sweep 21n: a HEAD that L1 cannot answer is answered from a fresh L2 (Redis)
// copy (a proxy with a cold L1 sent it upstream as BYPASS while Redis held the entry), and its
// own answer is still never stored; a query that aliases another field to `__typename` gets no
// injected `__typename` beside it (the backend refused the conflicting fields: a query that
// worked without the cache failed with it). Two real proxies, one real redis-server, the real
// graphql-yoga demo backend.
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

const PREFIX = 'sweep21n:'
const headers = { 'x-tenant-id': 'acme', accept: 'application/json' }

describe('cache sweep 21n', () => {
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
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300, redis: { l2: true, timeoutMs: 1_000 } }] as never }],
    })
    a = await startTestProxy(doc())
    b = await startTestProxy(doc())
    raw = new Redis(redis.url)
    // The proxies' Redis connections come up after they listen; an L2 read before that fails fast.
    await waitUntil(async () => ((await raw.client('LIST')) as string).split('\n').filter((l) => l.includes('cmd=')).length >= 5, 5_000, 'both proxies connected to Redis')
  })
  afterAll(async () => {
    raw?.disconnect()
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  const url = (base: string, q: string) => `${base}/graphql?query=${encodeURIComponent(q)}`
  const l2Keys = async () => (await raw.keys(`${PREFIX}cache:e:*`)).length

  it('a HEAD on a proxy with a cold L1 is answered from the L2 copy (head only); a HEAD miss stores nothing', async () => {
    const q = '{ entity(id: "21") { id name } }'
    const get = await request(url(a.url, q), { headers })
    const body = await get.body.text()
    expect(get.headers['x-cache']).toBe('MISS')
    await waitUntil(async () => (await l2Keys()) === 1, 5_000, 'the L2 entry written')
    const calls = backend.stats.byField.get('entity')

    const head = await request(url(b.url, q), { method: 'HEAD', headers })
    expect(await head.body.text()).toBe('')
    expect({ status: head.statusCode, cache: head.headers['x-cache'], length: head.headers['content-length'], type: head.headers['content-type'] }).toEqual({
      status: 200,
      cache: 'HIT',
      length: String(Buffer.byteLength(body)),
      type: get.headers['content-type'],
    })
    expect(backend.stats.byField.get('entity')).toBe(calls)

    // Not in L2: upstream, uncached, and nothing of it stored in L1 or L2.
    const other = '{ entity(id: "22") { id name } }'
    const miss = await request(url(b.url, other), { method: 'HEAD', headers })
    await miss.body.dump()
    expect(miss.headers['x-cache']).toBe('BYPASS')
    expect(await l2Keys()).toBe(1)
    const after = await request(url(b.url, other), { headers })
    expect(after.headers['x-cache']).toBe('MISS')
    expect(JSON.parse(await after.body.text())).toMatchObject({ data: { entity: { id: '22', name: 'Entity 22' } } })
  })

  it('a query that aliases another field to __typename is not given a conflicting __typename', async () => {
    const post = async (query: string) => {
      const res = await request(`${a.url}/graphql`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ query }) })
      return { status: res.statusCode, cache: res.headers['x-cache'], json: (await res.body.json()) as unknown }
    }
    const q = '{ entity(id: "23") { id __typename: name } }'
    const want = { data: { entity: { id: '23', __typename: 'Entity 23' } } }
    expect(await post(q)).toEqual({ status: 200, cache: 'MISS', json: want })
    expect(await post(q)).toEqual({ status: 200, cache: 'HIT', json: want })
    // The same through an inline fragment merged into that selection set.
    const frag = '{ entity(id: "24") { __typename: name ... on Entity { id } } }'
    expect(await post(frag)).toMatchObject({ status: 200, json: { data: { entity: { id: '24', __typename: 'Entity 24' } } } })
  })
})
