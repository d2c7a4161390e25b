// Stale-while-revalidate across the worker threads of one proxy with a cold L1: the miss that
// finds the L2 copy inside its stale-while-revalidate window hands its process-wide flight
// slot to the background refresh. Every request in either worker must be answered STALE at
// once (none waits for the upstream), exactly one refresh must reach the upstream, and its
// result must reach both workers' L1. A 2-worker proxy and a 1-worker one, one real
// redis-server, a real node:http backend that holds the refresh until released.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { Pool, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const PREFIX = 'swrw23i:'
const N = 24

describe('cache: SWR hand-over of the flight slot between worker threads', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let raw: Redis
  const state = { version: 1, calls: 0, gate: undefined as Promise<void> | undefined }

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        state.calls++
        const version = state.version
        void (state.gate ?? Promise.resolve()).then(() => {
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ data: { version } }))
        })
      })
    })
    const doc = (workers: number): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
      workers,
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [{ name: 'swr', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleWhileRevalidateSeconds: 600, redis: { l2: true, timeoutMs: 1_000 } }] as never }],
    })
    ;[a, b] = await Promise.all([startTestProxy(doc(1)), startTestProxy(doc(2))])
    raw = new Redis(redis.url)
    // 1 + 2 workers, each with a command and a subscriber connection.
    await waitUntil(async () => ((await raw.client('LIST')) as string).split('\n').filter((l) => l.includes('cmd=')).length >= 7, 8_000, 'every worker connected to Redis')
  })
  afterAll(async () => {
    raw?.disconnect()
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  // A new cache key per attempt (variables are part of it): a retry must not find the last
  // attempt's entries.
  let attempt = 0
  let body = ''
  const headers = { 'content-type': 'application/json', 'x-tenant-id': 'acme' }

  async function burst(pool: Pool): Promise<{ cache: string; text: string }[]> {
    return Promise.all(
      Array.from({ length: N }, async () => {
        const res = await pool.request({ path: '/graphql', method: 'POST', headers, body })
        return { cache: res.headers['x-cache'] as string, text: await res.body.text() }
      }),
    )
  }

  it('every request of both workers is served STALE, one refresh runs, and its result reaches both workers', async () => {
    body = JSON.stringify({ query: 'query ($attempt: Int) { version }', variables: { attempt: ++attempt } })
    state.version = 1
    const first = await request(`${a.url}/graphql`, { method: 'POST', headers, body })
    expect({ cache: first.headers['x-cache'], text: await first.body.text() }).toEqual({ cache: 'MISS', text: '{"data":{"version":1}}' })
    let freshUntil: number | undefined
    await waitUntil(async () => {
      const [k] = await raw.keys(`${PREFIX}cache:e:*`)
      const v = k === undefined ? null : await raw.getBuffer(k)
      if (v !== null) freshUntil = (JSON.parse(v.subarray(0, v.indexOf(0x0a)).toString()) as { f: number }).f
      return freshUntil !== undefined
    }, 5_000, 'the L2 entry written')
    while (Date.now() <= freshUntil! + 50) await sleep(50)

    state.version = 2
    state.calls = 0
    let release!: () => void
    state.gate = new Promise<void>((r) => (release = r))
    // Many connections: the kernel spreads them over both workers' reusePort listeners.
    const pool = new Pool(b.url, { connections: N, pipelining: 0 })
    try {
      // The refresh is held upstream: a request that waited for it would not answer here.
      const stale = await burst(pool)
      for (const r of stale) expect(r).toEqual({ cache: 'STALE', text: '{"data":{"version":1}}' })
      // The refresh starts in the background after the first stale answer went out: it may reach
      // the backend after the burst came back.
      await expect.poll(() => state.calls, { timeout: 5_000 }).toBe(1)
      release()
      await expect.poll(async () => (await burst(pool)).every((r) => r.cache === 'HIT' && r.text === '{"data":{"version":2}}'), { timeout: 5_000, interval: 50 }).toBe(true)
      expect(state.calls).toBe(1)
    } finally {
      release()
      state.gate = undefined
      await pool.close()
    }
  })
})
