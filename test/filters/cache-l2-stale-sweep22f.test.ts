// Stale copies in the shared L2 answer as L1's do. A cold proxy (a new pod, a restarted one)
// that found an L2 copy inside its stale-while-revalidate window made the client wait for the
// upstream instead of serving it stale while one background request refreshed it; and the
// misses that coalesced behind the one that found an L2 copy inside its stale-if-error window
// answered an upstream failure with the error (only the leader got the stale copy). Two real
// proxies, one real redis-server, a real node:http backend.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const PREFIX = 'l2s22f:'

describe('cache L2: stale copies answer a cold proxy as L1 copies do', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let raw: Redis
  const state = { version: 1, failing: false, calls: 0 }

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        state.calls++
        if (req.url!.startsWith('/sie') && state.failing) {
          // Slow enough that concurrent misses coalesce behind the first.
          setTimeout(() => {
            res.writeHead(500, { 'content-type': 'application/json' })
            res.end('{"errors":[{"message":"database down"}]}')
          }, 200)
          return
        }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { version: state.version } }))
      })
    })
    const l2 = { l2: true, timeoutMs: 1_000 }
    const doc = (): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [
        { name: 'swr', match: { pathPrefix: '/swr' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleWhileRevalidateSeconds: 600, redis: l2 }] as never },
        { name: 'sie', match: { pathPrefix: '/sie' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 1, staleIfErrorSeconds: 600, redis: l2 }] as never },
      ],
    })
    a = await startTestProxy(doc())
    b = await startTestProxy(doc())
    raw = new Redis(redis.url)
    await waitUntil(async () => ((await raw.client('LIST')) as string).split('\n').filter((l) => l.includes('cmd=')).length >= 5, 10_000, 'both proxies connected to Redis')
  })
  afterAll(async () => {
    raw?.disconnect()
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  async function ask(url: string, path: string, query: string) {
    const res = await request(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
    return { status: res.statusCode, cache: res.headers['x-cache'] as string, text: await res.body.text() }
  }

  /** Wait until the L2 entry tagged `tag` exists and is past its freshness. */
  async function l2Expired(tag: string): Promise<void> {
    let freshUntil: number | undefined
    await waitUntil(async () => {
      for (const k of await raw.keys(`${PREFIX}cache:e:*`)) {
        const v = await raw.getBuffer(k)
        const m = v === null ? undefined : (JSON.parse(v.subarray(0, v.indexOf(0x0a)).toString()) as { f: number; t: string[] })
        if (m?.t.includes(tag)) freshUntil = m.f
      }
      return freshUntil !== undefined
    }, 5_000, `the L2 entry tagged ${tag}`)
    while (Date.now() <= freshUntil! + 50) await sleep(50)
  }

  it('a cold proxy serves an L2 copy inside its stale-while-revalidate window as STALE and refreshes it in the background', async () => {
    const q = '{ swr { version } }'
    expect(await ask(a.url, '/swr', q)).toMatchObject({ status: 200, cache: 'MISS', text: '{"data":{"version":1}}' })
    await l2Expired('Query.swr')
    state.version = 2
    // b's L1 is cold: the stale L2 copy answers at once.
    expect(await ask(b.url, '/swr', q)).toMatchObject({ status: 200, cache: 'STALE', text: '{"data":{"version":1}}' })
    // The background refresh stores the new answer.
    await expect.poll(async () => ask(b.url, '/swr', q), { timeout: 5_000, interval: 50 }).toMatchObject({ cache: 'HIT', text: '{"data":{"version":2}}' })
  })

  it('misses coalesced behind the one that found a stale-if-error L2 copy get it too when the upstream fails', async () => {
    const q = '{ sie { version } }'
    expect(await ask(a.url, '/sie', q)).toMatchObject({ status: 200, cache: 'MISS' })
    const stored = (await ask(a.url, '/sie', q)).text
    await l2Expired('Query.sie')
    state.failing = true
    const answers = await Promise.all([1, 2, 3].map(() => ask(b.url, '/sie', q)))
    for (const r of answers) expect(r).toMatchObject({ status: 200, cache: 'STALE', text: stored })
  })
})
