// A HEAD on a proxy with a cold L1 takes an L2 copy inside its stale-while-revalidate window as
// a GET (and a HEAD on a warm L1) does: served STALE while one background GET refreshes it. It
// went upstream as BYPASS instead, though RFC 9111 4.3.5 lets a HEAD be answered from a stored
// GET response. Two real proxies, one real redis-server, a real node:http backend.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const PREFIX = 'head23i:'

describe('cache: a cold HEAD takes a stale L2 copy inside its SWR window', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let raw: Redis
  const state = { version: 1, calls: [] as string[] }

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        state.calls.push(req.method!)
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ data: { version: state.version } }))
      })
    })
    const doc = (): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [{ name: 'swr', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleWhileRevalidateSeconds: 600, redis: { l2: true, timeoutMs: 1_000 } }] as never }],
    })
    a = await startTestProxy(doc())
    b = await startTestProxy(doc())
    raw = new Redis(redis.url)
    await waitUntil(async () => ((await raw.client('LIST')) as string).split('\n').filter((l) => l.includes('cmd=')).length >= 5, 5_000, 'both proxies connected to Redis')
  })
  afterAll(async () => {
    raw?.disconnect()
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  const headers = { 'x-tenant-id': 'acme', accept: 'application/json' }
  const url = (base: string) => `${base}/graphql?query=${encodeURIComponent('{ version }')}`

  it('serves the HEAD from the stale L2 copy and refreshes it with one background GET', async () => {
    const get = await request(url(a.url), { headers })
    const body = await get.body.text()
    expect({ cache: get.headers['x-cache'], body }).toEqual({ cache: 'MISS', body: '{"data":{"version":1}}' })
    let freshUntil: number | undefined
    await waitUntil(async () => {
      const [k] = await raw.keys(`${PREFIX}cache:e:*`)
      const v = k === undefined ? null : await raw.getBuffer(k)
      if (v !== null) freshUntil = (JSON.parse(v.subarray(0, v.indexOf(0x0a)).toString()) as { f: number }).f
      return freshUntil !== undefined
    }, 5_000, 'the L2 entry written')
    while (Date.now() <= freshUntil! + 50) await sleep(50)
    state.version = 2
    state.calls.length = 0

    // b's L1 is cold: the stale L2 copy answers the HEAD (its head only).
    const head = await request(url(b.url), { method: 'HEAD', headers })
    expect(await head.body.text()).toBe('')
    expect({ status: head.statusCode, cache: head.headers['x-cache'], length: head.headers['content-length'] }).toEqual({ status: 200, cache: 'STALE', length: String(Buffer.byteLength(body)) })
    // One background refresh, a GET (a HEAD's answer has no body to store).
    await expect.poll(async () => {
      const res = await request(url(b.url), { headers })
      return { cache: res.headers['x-cache'], body: await res.body.text() }
    }, { timeout: 5_000, interval: 50 }).toEqual({ cache: 'HIT', body: '{"data":{"version":2}}' })
    expect(state.calls).toEqual(['GET'])
  })
})
