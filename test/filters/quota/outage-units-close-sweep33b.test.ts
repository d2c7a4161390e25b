// Units admitted under the outage policy while Redis was unreachable are pushed to Redis when it
// answers again. A proxy that stopped before that (SIGTERM, or a reload dropping the quota
// filter) lost them: the thread's close gave them back to a table about to go away, so the
// tenant's daily quota and rolling budget in Redis never counted requests that were served. Now
// a closing thread pushes them (bounded), and saves what Redis did not take beside the state
// file, for the next start to push under the same tokens (applied once).
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber } from '../../../config/quota-usage.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { RECONCILE_LUA } from '../../../filters/quota/redis-script.ts'
import { RedisQuotaStore } from '../../../filters/quota/redis-store.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, spawnIgw, startTestProxy, writeTempConfig, type SpawnedIgw } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { graphqlUsageInRedis, owedFiles, sendInTurn } from '../../helpers/quota.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

/** `n` requests of `tenant`, one after the other: their status codes. */
const send = (url: string, tenant: string, n: number): Promise<number[]> => sendInTurn(url, tenant, n, QUERY)

const redisUsage = graphqlUsageInRedis

function quotaDoc(redisUrl: string, prefix: string, quotas: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: { enabled: false } },
    shutdown: { idleGraceMs: 0 },
    redis: { url: redisUrl, keyPrefix: prefix },
    tenants: { acme: {} },
    quotas: {
      tenants: { acme: { graphql: { limitPerDay: 1000 }, budget: { units: 100_000, window: '1d', bucket: '1h' } } },
      ...quotas,
      redis: { onOutage: 'fail-open', budgetMs: 200, breakerFailures: 1, breakerAfterMs: 0, ...(quotas.redis as object) },
    },
    routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    ...extra,
  }
}

async function redisUp(adminUrl: string): Promise<number> {
  return metricSum(await (await fetch(`${adminUrl}/metrics`)).text(), 'igw_redis_up')
}

describe('outage units at shutdown (sweep 33b)', () => {
  let redis: TestRedis
  /** Every write synced (set again at each start: CONFIG SET is not kept): what Redis counted survives its kill. */
  async function synced(): Promise<void> {
    const admin = new Redis(redis.url)
    await admin.config('SET', 'appendfsync', 'always')
    admin.disconnect()
  }
  async function restartRedis(): Promise<void> {
    await redis.start()
    await synced()
  }
  beforeAll(async () => {
    redis = await startRedis({ persistent: true })
    await synced()
  })
  afterAll(async () => {
    await redis?.close()
  })

  it('Redis down at SIGTERM: the units are saved beside the state file, the next start pushes them once', async () => {
    const prefix = 'sw33b1:'
    const dir = mkdtempSync(join(tmpdir(), 'igw-owed-'))
    const stateFile = join(dir, 'quota-state.json')
    const config = writeTempConfig(quotaDoc(redis.url, prefix, { stateFile, flushIntervalMs: 200, redis: { heartbeatMs: 200, breakerOpenMs: 200 } }, { workers: 2 }))
    let igw: SpawnedIgw | undefined = await spawnIgw(['proxy', '--config', config])
    try {
      expect(await send(igw.url, 'acme', 5)).toEqual(Array(5).fill(200))
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 5, budget: 5 })
      await redis.stop()
      // Served by the outage policy, counted locally: owed to Redis.
      expect(await send(igw.url, 'acme', 7)).toEqual(Array(7).fill(200))
      expect(await igw.stop('SIGTERM')).toBe(0)
      const output = igw.output.join('\n')
      igw = undefined
      expect(owedFiles(dir).length).toBeGreaterThan(0)
      expect(output).toContain('saved, the next start reports it')

      await restartRedis()
      // Nothing reached Redis meanwhile.
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 5, budget: 5 })
      igw = await spawnIgw(['proxy', '--config', config])
      await waitUntil(async () => (await redisUsage(redis.url, prefix, 'acme')).used === 12, 10_000)
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 12, budget: 12 })
      await waitUntil(() => owedFiles(dir).length === 0, 5_000)
      expect(await igw.stop('SIGTERM')).toBe(0)
      igw = undefined

      // A third start finds nothing owed: nothing is pushed twice.
      igw = await spawnIgw(['proxy', '--config', config])
      await sleep(600)
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 12, budget: 12 })
      expect(await send(igw.url, 'acme', 1)).toEqual([200])
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 13, budget: 13 })
    } finally {
      await igw?.stop('SIGKILL')
    }
  }, 60_000)

  it('Redis back but not reconciled yet at SIGTERM: the close pushes the units (no state file needed)', async () => {
    const prefix = 'sw33b2:'
    // No heartbeat and no breaker probe before the SIGTERM: only the close can push them.
    const config = writeTempConfig(quotaDoc(redis.url, prefix, { redis: { heartbeatMs: 600_000, breakerOpenMs: 600_000 } }, { workers: 1 }))
    let igw: SpawnedIgw | undefined = await spawnIgw(['proxy', '--config', config])
    try {
      expect(await send(igw.url, 'acme', 3)).toEqual(Array(3).fill(200))
      await redis.stop()
      expect(await send(igw.url, 'acme', 4)).toEqual(Array(4).fill(200))
      await restartRedis()
      const proxy = igw
      await waitUntil(async () => (await redisUp(proxy.adminUrl)) === 1, 10_000)
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 3, budget: 3 })
      const t0 = Date.now()
      expect(await igw.stop('SIGTERM')).toBe(0)
      expect(Date.now() - t0).toBeLessThan(15_000)
      igw = undefined
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 7, budget: 7 })
    } finally {
      await igw?.stop('SIGKILL')
    }
  }, 60_000)

  it('Redis hung at SIGTERM: the close gives up after its bound, and a push Redis ran after all is not counted again', async () => {
    const prefix = 'sw33b3:'
    const dir = mkdtempSync(join(tmpdir(), 'igw-owed-'))
    const stateFile = join(dir, 'quota-state.json')
    const config = writeTempConfig(quotaDoc(redis.url, prefix, { stateFile, redis: { heartbeatMs: 600_000, breakerOpenMs: 600_000 } }, { workers: 1 }))
    let igw: SpawnedIgw | undefined = await spawnIgw(['proxy', '--config', config])
    try {
      expect(await send(igw.url, 'acme', 2)).toEqual([200, 200])
      await redis.stop()
      expect(await send(igw.url, 'acme', 6)).toEqual(Array(6).fill(200))
      await restartRedis()
      const proxy = igw
      await waitUntil(async () => (await redisUp(proxy.adminUrl)) === 1, 10_000)
      // The push's script is known to Redis (another proxy's push loaded it): its EVALSHA runs as it is.
      const admin = new Redis(redis.url)
      await admin.script('LOAD', RECONCILE_LUA)
      admin.disconnect()
      // Frozen: the connection stays up and nothing answers (the push is sent, its reply never comes).
      redis.pause()
      const t0 = Date.now()
      expect(await igw.stop('SIGTERM')).toBe(0)
      const took = Date.now() - t0
      igw = undefined
      expect(took).toBeLessThan(15_000)
      expect(owedFiles(dir).length).toBe(1)
      redis.resume()
      // Redis runs the push it had received before the proxy went: counted once here…
      await waitUntil(async () => (await redisUsage(redis.url, prefix, 'acme')).used === 8, 10_000)
      // …and the next start's push of the saved units, under the same token, is not counted again.
      igw = await spawnIgw(['proxy', '--config', config])
      await waitUntil(() => owedFiles(dir).length === 0, 10_000)
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 8, budget: 8 })
      expect(existsSync(stateFile)).toBe(true)
    } finally {
      redis.resume()
      await igw?.stop('SIGKILL')
    }
  }, 60_000)

  it('Redis down at SIGTERM without a state file: the lost units are logged with the hint', async () => {
    const prefix = 'sw33b4:'
    const config = writeTempConfig(quotaDoc(redis.url, prefix, { redis: { heartbeatMs: 200, breakerOpenMs: 200 } }, { workers: 1 }))
    let igw: SpawnedIgw | undefined = await spawnIgw(['proxy', '--config', config])
    try {
      await redis.stop()
      expect(await send(igw.url, 'acme', 3)).toEqual(Array(3).fill(200))
      expect(await igw.stop('SIGTERM')).toBe(0)
      const lines = igw.output.flatMap((l) => {
        try {
          return [JSON.parse(l) as { msg?: string; units?: number; hint?: string }]
        } catch {
          return []
        }
      })
      igw = undefined
      const lost = lines.filter((l) => l.msg?.startsWith('usage admitted during the Redis outage neither reported to Redis nor saved'))
      expect(lost.reduce((n, l) => n + l.units!, 0)).toBe(3)
      expect(lost[0]!.hint).toContain('quotas.stateFile')
    } finally {
      await restartRedis()
      await igw?.stop('SIGKILL')
    }
  }, 60_000)
})

describe('outage units at a reload that drops the quota filter (sweep 33b)', () => {
  let redis: TestRedis
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.close()
  })

  it('the closing filter pushes what it owes once Redis answers', async () => {
    const prefix = 'sw33b5:'
    let withQuota = true
    const doc = () => {
      const d = quotaDoc(redis.url, prefix, { redis: { heartbeatMs: 600_000, breakerOpenMs: 600_000 } }, { workers: 1 })
      if (!withQuota) d.routes = [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }] }]
      return d
    }
    const p = await startTestProxy(doc() as never, { loadConfig: () => validateConfig(doc()) })
    try {
      expect(await send(p.url, 'acme', 2)).toEqual([200, 200])
      await redis.stop()
      expect(await send(p.url, 'acme', 5)).toEqual(Array(5).fill(200))
      await redis.start()
      await waitUntil(async () => (await redisUp(p.adminUrl)) === 1, 10_000)
      withQuota = false
      expect(await p.reload()).toMatchObject({ ok: true })
      // (Redis restarted empty: the 2 from before the outage are gone with it.)
      await waitUntil(async () => (await redisUsage(redis.url, prefix, 'acme')).used === 5, 5_000)
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 5, budget: 5 })
    } finally {
      await p.close()
    }
  }, 60_000)
})

describe('owed-units files at start (sweep 33b)', () => {
  let redis: TestRedis
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.close()
  })

  it('damaged files and entries are logged, counted and skipped; the sound entries are pushed once and their file removed', async () => {
    const prefix = 'sw33b6:'
    const dir = mkdtempSync(join(tmpdir(), 'igw-owed-'))
    const stateFile = join(dir, 'quota-state.json')
    const day = localDayNumber('UTC', Date.now())
    const good = { tenant: 'acme', kind: 'graphql', units: 4, day, token: 'tok-good' }
    const mixed = join(dir, 'quota-state.json.owed.1.1.json')
    writeFileSync(mixed, JSON.stringify({ version: 1, savedAt: Date.now(), proxy: 'p', owed: [good, { ...good, kind: 'nope' }] }))
    // The same push saved twice (a later close's file, the earlier one not removed yet): one push.
    const again = join(dir, 'quota-state.json.owed.2.1.json')
    writeFileSync(again, JSON.stringify({ version: 1, savedAt: Date.now(), proxy: 'p', owed: [good] }))
    const garbage = join(dir, 'quota-state.json.owed.3.1.json')
    writeFileSync(garbage, '{"version": 1, "owed": [')
    const config = validateConfig({
      routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
      tenants: { acme: {} },
      quotas: { defaults: { graphql: { limitPerDay: 1000 }, budget: { units: 100_000, window: '1d', bucket: '1h' } }, stateFile },
    })
    const logs: { msg: string; level: number }[] = []
    const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as { msg: string; level: number }) })
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, logger)
    const registry = new Registry()
    const a = rt.attach(config, registry, undefined)
    const provider = new SharedRedis(redis.url, prefix, pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [new Registry()] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [new Registry()] }),
    })
    try {
      expect(logs.some((l) => l.msg.startsWith('quota owed-units file unreadable') && l.level === 50)).toBe(true)
      expect(logs.some((l) => l.msg === 'quota owed-units file entries skipped as damaged')).toBe(true)
      expect(metricSum(await registry.metrics(), 'igw_quota_state_file_errors_total', 'op="read"')).toBe(2)
      const store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
      expect(await store.warmUp(2_000)).toBe(true)
      await rt.reconcile(store)
      await rt.reconcile(store)
      expect(await redisUsage(redis.url, prefix, 'acme')).toEqual({ used: 4, budget: 4 })
      expect([existsSync(mixed), existsSync(again), existsSync(garbage)]).toEqual([false, false, true])
    } finally {
      await rt.detach(a)
      await provider.close()
    }
  })
})
