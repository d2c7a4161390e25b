// An entity whose id is long (a URL, a composite key: over 1024 characters as a `Type:id` tag)
// was invalidated on the proxy that saw the mutation only: other proxies' subscribers dropped
// tags over 1024 characters from the shared channel, and kept serving the old entity.
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep } from '../../helpers/wait.ts'

let redis: TestRedis
let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  redis = await startRedis()
  // A backend whose entities have the ids asked for (any length), as a real one's may.
  backend = await startRawBackend((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c))
    req.on('end', () => {
      const id = /id: \\"([^"\\]*)\\"/.exec(body)?.[1] ?? '0'
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ data: { entity: { id, name: 'n', __typename: 'Entity' } } }))
    })
  })
  proxy = await startTestProxy({
    workers: 1,
    redis: { url: redis.url, keyPrefix: 'longtag:' },
    tenants: { acme: {} },
    routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, redis: { l2: false } }] as never }],
  })
  await sleep(200) // the subscriber is up
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
  await redis?.close()
})

async function gql(query: string): Promise<string> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  await res.body.dump()
  return res.headers['x-cache'] as string
}

describe('remote invalidation of an entity with a long id', () => {
  it("another proxy's message drops the entry whose tag is over 1024 characters", async () => {
    const id = `https://example.com/items/${'x'.repeat(1100)}`
    const q = `{ entity(id: "${id}") { id name } }`
    expect(await gql(q)).toBe('MISS')
    expect(await gql(q)).toBe('HIT')
    const pub = new Redis(redis.url)
    try {
      await pub.publish('longtag:cache:invalidate', JSON.stringify({ o: 'another-proxy', t: [`Entity:${id}`] }))
      await expect.poll(() => gql(q), { timeout: 3_000 }).toBe('MISS')
    } finally {
      pub.disconnect()
    }
  })
})
