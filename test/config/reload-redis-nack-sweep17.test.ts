// A config version a worker refuses (a filter later in the chain cannot be built) must leave the
// worker's Redis connection as it was. The worker swapped its connection to the new `redis.url`
// before building the chain, so after the NACK the refused URL's connection stayed open (retrying
// forever when unreachable, and setting igw_redis_up to 0 while the connection in use was fine),
// and the next reload of the running document opened a second connection to the running Redis.
// Real proxy (supervisor + worker thread), two real redis-servers, real graphql-yoga backend.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { freePort } from '../helpers/ports.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { sleep } from '../helpers/wait.ts'

type Doc = Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>

/** The ids of the connections to `url` other than the one asking. */
async function clientIds(url: string): Promise<string[]> {
  const c = new Redis(url)
  try {
    const me = String(await c.client('ID'))
    const list = (await c.client('LIST')) as string
    return list
      .split('\n')
      .map((l) => /^id=(\d+)/.exec(l)?.[1])
      .filter((id): id is string => id !== undefined && id !== me)
      .sort()
  } finally {
    c.disconnect()
  }
}

async function redisUp(p: TestProxy): Promise<number> {
  const res = await request(`${p.adminUrl}/metrics`)
  return metricSum(await res.body.text(), 'igw_redis_up')
}

describe('worker Redis after a refused config version', () => {
  let backend: DemoBackend
  let a: TestRedis
  let b: TestRedis
  const dir = mkdtempSync(join(tmpdir(), 'igw-redis-nack-'))
  beforeAll(async () => {
    backend = await startDemoBackend()
    a = await startRedis()
    b = await startRedis()
  })
  afterAll(async () => {
    await backend?.close()
    await a?.close()
    await b?.close()
  })

  const doc = (redisUrl: string, opts: { broken?: boolean; tenants?: string[] } = {}): Doc => ({
    workers: 1,
    redis: { url: redisUrl, keyPrefix: 'nack:' },
    tenants: Object.fromEntries((opts.tenants ?? ['acme']).map((t) => [t, {}])),
    routes: [
      { name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, redis: { l2: true } }] },
      // The persisted filter of this route cannot be built (no schema file): the version is refused.
      ...(opts.broken ? [{ name: 'est', upstream: backend.url, match: { pathPrefix: '/est' }, filters: [{ name: 'persisted', cost: { schemaFile: join(dir, 'missing.graphql') } }] }] : []),
    ] as never,
  })
  const full = (d: Doc) => validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, ...d })

  it('the refused URL\'s connection is closed and the running one is kept across the next reload', async () => {
    const p = await startTestProxy(doc(a.url))
    try {
      await expect.poll(() => clientIds(a.url), { timeout: 10_000 }).not.toEqual([])
      const running = await clientIds(a.url)

      const refused = await p.applyConfig(full(doc(b.url, { broken: true })))
      expect(refused.ok).toBe(false)
      expect(refused.error).toMatch(/schemaFile/)
      // The refused version's cache filter connected to B during its build; nothing may stay there.
      await sleep(500)
      await expect.poll(() => clientIds(b.url), { timeout: 10_000 }).toEqual([])
      await sleep(300)
      expect(await clientIds(b.url)).toEqual([])

      // A valid reload of the running Redis URL keeps the running connections (no second set).
      const ok = await p.applyConfig(full(doc(a.url, { tenants: ['acme', 'beta'] })))
      expect(ok.ok).toBe(true)
      await sleep(300)
      expect(await clientIds(a.url)).toEqual(running)

      const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'beta' }, body: '{"query":"{ hello }"}' })
      await res.body.text()
      expect(res.statusCode).toBe(200)
    } finally {
      await p.close()
    }
  })

  it('igw_redis_up stays 1 when a refused version named an unreachable Redis', async () => {
    const p = await startTestProxy(doc(a.url))
    try {
      await expect.poll(() => redisUp(p), { timeout: 10_000 }).toBe(1)
      const dead = `redis://127.0.0.1:${await freePort()}`
      const refused = await p.applyConfig(full(doc(dead, { broken: true })))
      expect(refused.ok).toBe(false)
      // A connection attempt to a closed loopback port fails within milliseconds.
      await sleep(1_000)
      expect(await redisUp(p)).toBe(1)
    } finally {
      await p.close()
    }
  })

  it('igw_redis_up follows the new connection after a redis.url change, not the retiring one', async () => {
    const p = await startTestProxy(doc(a.url))
    try {
      await expect.poll(() => redisUp(p), { timeout: 10_000 }).toBe(1)
      const ok = await p.applyConfig(full(doc(b.url)))
      expect(ok.ok).toBe(true)
      await expect.poll(() => clientIds(b.url), { timeout: 10_000 }).not.toEqual([])
      // The running version's connections to A close once it retires.
      await expect.poll(() => clientIds(a.url), { timeout: 10_000 }).toEqual([])
      await expect.poll(() => redisUp(p), { timeout: 10_000 }).toBe(1)
      await sleep(300)
      expect(await redisUp(p)).toBe(1)
    } finally {
      await p.close()
    }
  })
})
