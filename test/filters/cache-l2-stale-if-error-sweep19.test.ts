// stale-if-error from the shared L2: Redis keeps an entry past its freshness for the route's
// stale-if-error window, yet a proxy whose L1 was cold (a new pod, a restarted one) answered
// an upstream failure with the error while that copy sat in Redis. Two real proxies, one real
// redis-server, a real node:http backend that starts failing.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const PREFIX = 'l2sie19:'

describe('cache L2: stale-if-error serves the stale L2 copy on a cold proxy', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let raw: Redis
  const state = { failing: false, calls: 0 }

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        state.calls++
        if (state.failing) {
          res.writeHead(500, { 'content-type': 'application/json' })
          res.end('{"errors":[{"message":"database down"}]}')
          return
        }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { entity: { __typename: 'Entity', id: '7', name: 'Seven' } } }))
      })
    })
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

  async function ask(url: string, query: string) {
    const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
    const text = await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'] as string, text }
  }

  it("a cold proxy answers an upstream failure with the stale L2 copy inside the stale-if-error window", async () => {
    const q = '{ entity(id: "7") { id name } }'
    await waitUntil(async () => ((await raw.client('LIST')) as string).split('\n').filter((l) => l.includes('cmd=')).length >= 5, 10_000, 'both proxies connected to Redis')
    await sleep(200)
    expect(await ask(a.url, q)).toMatchObject({ status: 200, cache: 'MISS' })
    await waitUntil(async () => (await raw.keys(`${PREFIX}cache:e:*`)).length === 1, 5_000, 'the L2 entry written')
    const key = (await raw.keys(`${PREFIX}cache:e:*`))[0]!
    const v = (await raw.getBuffer(key))!
    const freshUntil = (JSON.parse(v.subarray(0, v.indexOf(0x0a)).toString()) as { f: number }).f
    while (Date.now() <= freshUntil + 100) await sleep(50)
    expect(await raw.exists(key)).toBe(1) // kept for the stale-if-error window

    state.failing = true
    const calls = state.calls
    const onB = await ask(b.url, q) // b's L1 is cold: the stale L2 copy is all there is
    expect(state.calls).toBe(calls + 1) // it did try the upstream
    expect(onB.status).toBe(200)
    expect(onB.cache).toBe('STALE')
    expect(JSON.parse(onB.text)).toEqual({ data: { entity: { __typename: 'Entity', id: '7', name: 'Seven' } } })
  })
})
