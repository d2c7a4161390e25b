// Units the outage policy admitted while Redis was down lived only in memory until a clean close
// saved them: a SIGKILL (or an OOM kill) during the outage lost every one, and Redis's daily usage
// and budget never counted requests that were served. They are now saved beside the state file
// every flushIntervalMs while any are owed (under the tokens they are pushed with), so a kill loses
// at most one interval, and the next start pushes them once.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { spawnIgw, writeTempConfig, type SpawnedIgw } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { graphqlUsageInRedis, owedFiles, sendInTurn } from '../../helpers/quota.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })

let backend: DemoBackend
let redis: TestRedis
/** Every write synced (CONFIG SET is not kept across a restart): what Redis counted survives its stop. */
async function synced(): Promise<void> {
  const admin = new Redis(redis.url)
  await admin.config('SET', 'appendfsync', 'always')
  admin.disconnect()
}
beforeAll(async () => {
  backend = await startDemoBackend()
  redis = await startRedis({ persistent: true })
  await synced()
})
afterAll(async () => {
  await redis?.close()
  await backend?.close()
})

/** `n` requests of `tenant`, one after the other: their status codes. */
const send = (url: string, tenant: string, n: number): Promise<number[]> => sendInTurn(url, tenant, n, QUERY)

const redisUsage = (prefix: string, tenant: string) => graphqlUsageInRedis(redis.url, prefix, tenant)

/** The units the owed files in `dir` hold (a file being replaced may be unreadable for a moment: 0). */
function owedUnits(dir: string): number {
  let n = 0
  for (const f of owedFiles(dir)) {
    try {
      for (const e of (JSON.parse(readFileSync(join(dir, f), 'utf8')) as { owed: { units: number }[] }).owed) n += e.units
    } catch {
      return 0
    }
  }
  return n
}

describe('outage units and a kill (sweep 34b)', () => {
  it('SIGKILL during a Redis outage: the units saved meanwhile reach Redis at the next start, once', async () => {
    const prefix = 'sw34b1:'
    const dir = mkdtempSync(join(tmpdir(), 'igw-owed-kill-'))
    const stateFile = join(dir, 'quota-state.json')
    const config = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      log: { level: 'info', access: { enabled: false } },
      shutdown: { idleGraceMs: 0 },
      workers: 2,
      redis: { url: redis.url, keyPrefix: prefix },
      tenants: { acme: {} },
      quotas: {
        tenants: { acme: { graphql: { limitPerDay: 1000 }, budget: { units: 100_000, window: '1d', bucket: '1h' } } },
        stateFile,
        flushIntervalMs: 200,
        redis: { onOutage: 'fail-open', budgetMs: 200, breakerFailures: 1, breakerAfterMs: 0, heartbeatMs: 200, breakerOpenMs: 200 },
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    let igw: SpawnedIgw | undefined = await spawnIgw(['proxy', '--config', config])
    try {
      expect(await send(igw.url, 'acme', 5)).toEqual(Array(5).fill(200))
      expect(await redisUsage(prefix, 'acme')).toEqual({ used: 5, budget: 5 })
      await redis.stop()
      expect(await send(igw.url, 'acme', 7)).toEqual(Array(7).fill(200))
      // Saved while serving (old code: only a clean close wrote them).
      await waitUntil(() => owedUnits(dir) === 7, 5_000)
      await igw.stop('SIGKILL')
      igw = undefined
      const saved = new Map(owedFiles(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]))

      await redis.start()
      await synced()
      expect(await redisUsage(prefix, 'acme')).toEqual({ used: 5, budget: 5 })
      igw = await spawnIgw(['proxy', '--config', config])
      await waitUntil(async () => (await redisUsage(prefix, 'acme')).used === 12, 10_000)
      await waitUntil(() => owedFiles(dir).length === 0, 5_000)
      expect(await redisUsage(prefix, 'acme')).toEqual({ used: 12, budget: 12 })
      expect(await igw.stop('SIGTERM')).toBe(0)
      igw = undefined

      // Killed after the push and before its file went: the next start pushes the same tokens again,
      // which Redis does not count twice.
      for (const [f, text] of saved) writeFileSync(join(dir, f), text)
      igw = await spawnIgw(['proxy', '--config', config])
      await waitUntil(() => owedFiles(dir).length === 0, 10_000)
      expect(igw.output.join('\n')).toContain('usage admitted during an earlier Redis outage restored')
      await sleep(300)
      expect(await redisUsage(prefix, 'acme')).toEqual({ used: 12, budget: 12 })
      expect(await send(igw.url, 'acme', 1)).toEqual([200])
      expect(await redisUsage(prefix, 'acme')).toEqual({ used: 13, budget: 13 })
    } finally {
      await igw?.stop('SIGKILL')
    }
  }, 90_000)
})
