// A tenant's `timezone` changed by a config reload (or across a restart). Day numbers of two zones
// differ by one or two at any instant, and the daily quota only started a new day when the number
// grew: moving a tenant west kept the old zone's usage in force for up to two days (requests
// refused while igw_quota_used_today, which looks for today's number, said 0); moving it east gave
// it a fresh day's quota at once. Now the units of the old zone's running day are carried into the
// new zone's day, which ends at the new zone's midnight (local limiter, Redis script, state file).
// Also: a writer killed in the middle of a state-file write left its temporary file behind for good.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { localDayNumber, quotaKeys, usedTodayFromRedis, usedTodayFromState, zoneCode } from '../../config/quota-usage.ts'
import { dayStart } from '../../filters/quota/calendar.ts'
import { decideLocal, Verdict } from '../../filters/quota/local-limiter.ts'
import { RedisQuotaStore } from '../../filters/quota/redis-store.ts'
import { resolveRule } from '../../filters/quota/rules.ts'
import { QUOTA_SHARED_BYTES, QuotaTable } from '../../filters/quota/shared-table.ts'
import { restoreState, snapshotState, writeStateFile } from '../../filters/quota/state-file.ts'
import { SharedRedis } from '../../proxy/redis.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'

// UTC-12 and UTC+14, neither with DST: their day numbers always differ (by 1 or 2).
const WEST = 'Etc/GMT+12'
const EAST = 'Pacific/Kiritimati'

let backend: DemoBackend
let redis: TestRedis
beforeAll(async () => {
  backend = await startDemoBackend()
  redis = await startRedis()
})
afterAll(async () => {
  await backend?.close()
  await redis?.close()
})

async function gql(url: string, tenant: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query: '{ hello }' }) })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(text) as { errors?: { extensions: Record<string, unknown> }[] } }
}

function secondsToMidnight(tz: string, now = Date.now()): number {
  return Math.ceil((dayStart(tz, localDayNumber(tz, now) + 1) - now) / 1000)
}

function doc(tz: string, withRedis: string | undefined) {
  return {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    workers: 2,
    ...(withRedis !== undefined ? { redis: { url: redis.url, keyPrefix: withRedis } } : {}),
    routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    tenants: { tz: { timezone: tz } },
    quotas: { tenants: { tz: { graphql: { limitPerDay: 3 } } }, ...(withRedis !== undefined ? { redis: { budgetMs: 1000 } } : {}) },
  }
}

describe('a reload that changes the tenant time zone (sweep 17)', () => {
  for (const mode of ['shared memory', 'Redis'] as const) {
    it(`${mode}: the day's usage moves with the tenant, east and back west; the gauge shows it and Retry-After is the new zone's midnight`, async () => {
      const prefix = mode === 'Redis' ? `tz17${Date.now()}:` : undefined
      const p = await startTestProxy(doc(WEST, prefix) as never)
      try {
        for (let i = 0; i < 3; i++) expect((await gql(p.url, 'tz')).status).toBe(200)
        expect((await gql(p.url, 'tz')).status).toBe(429)

        // East: the new zone's day number is higher. No fresh quota from a time zone edit.
        expect((await p.applyConfig(validateConfig(doc(EAST, prefix)))).ok).toBe(true)
        const east = await gql(p.url, 'tz')
        expect(east.status).toBe(429)
        expect(east.json.errors![0]!.extensions).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily' })
        expect(Math.abs(Number(east.headers['retry-after']) - secondsToMidnight(EAST))).toBeLessThanOrEqual(5)
        expect(metricSum(await p.metricsText(), 'igw_quota_used_today', 'tenant="tz"')).toBe(3)

        // Back west: the day number is lower. Still refused, and the gauge still says what refuses.
        expect((await p.applyConfig(validateConfig(doc(WEST, prefix)))).ok).toBe(true)
        const west = await gql(p.url, 'tz')
        expect(west.status).toBe(429)
        expect(Math.abs(Number(west.headers['retry-after']) - secondsToMidnight(WEST))).toBeLessThanOrEqual(5)
        expect(metricSum(await p.metricsText(), 'igw_quota_used_today', 'tenant="tz"')).toBe(3)
        if (prefix !== undefined) {
          const admin = new Redis(redis.url)
          try {
            expect(await usedTodayFromRedis(admin, prefix, 'tz', 'graphql', WEST)).toBe(3)
            expect(Number(await admin.hget(quotaKeys.kind(prefix, 'tz', 'graphql'), 'd'))).toBe(localDayNumber(WEST, Date.now()))
          } finally {
            admin.disconnect()
          }
        }
      } finally {
        await p.close()
      }
    })
  }
})

describe('the new zone midnight resets the carried usage (simulated clock) (sweep 17)', () => {
  const q = validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }], quotas: { defaults: { graphql: { limitPerDay: 3 } } } }).quotas
  const west = resolveRule(q, 't', 'graphql', 'silver', WEST, false)
  const east = resolveRule(q, 't', 'graphql', 'silver', EAST, false)
  // 05:00 UTC: Kiritimati is at 19:00 of day D+1, GMT-12 at 17:00 of day D.
  const now = Date.UTC(2026, 10, 26, 5, 0, 0)

  it('local limiter: moved west, the tenant is free again at the west midnight, not two days later', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = table.slotOf('t')
    const v = new Verdict()
    const dE = localDayNumber(EAST, now)
    for (let i = 0; i < 3; i++) expect(decideLocal(table, slot, east, 1, now, dE, false, 1, v).allowed).toBe(true)
    const dW = localDayNumber(WEST, now)
    expect(dW).toBe(dE - 1)
    expect(decideLocal(table, slot, west, 1, now, dW, false, 1, v).allowed).toBe(false) // carried
    expect(v.used).toBe(3)
    const westMidnight = dayStart(WEST, dW + 1)
    expect(decideLocal(table, slot, west, 1, westMidnight - 1000, dW, false, 1, v).allowed).toBe(false)
    expect(decideLocal(table, slot, west, 1, westMidnight + 1000, dW + 1, false, 1, v).allowed).toBe(true)
    expect(v.used).toBe(1)
  })

  it('local limiter: moved east, the units stay (no fresh quota) until the east midnight', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = table.slotOf('t')
    const v = new Verdict()
    const dW = localDayNumber(WEST, now)
    for (let i = 0; i < 3; i++) expect(decideLocal(table, slot, west, 1, now, dW, false, 1, v).allowed).toBe(true)
    const dE = localDayNumber(EAST, now)
    expect(decideLocal(table, slot, east, 1, now, dE, false, 1, v).allowed).toBe(false)
    const eastMidnight = dayStart(EAST, dE + 1)
    expect(decideLocal(table, slot, east, 1, eastMidnight + 1000, dE + 1, false, 1, v).allowed).toBe(true)
  })

  it('local limiter: a day that is over in the old zone is not carried (the tenant idle since before its midnight)', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = table.slotOf('t')
    const v = new Verdict()
    const dE = localDayNumber(EAST, now)
    for (let i = 0; i < 3; i++) expect(decideLocal(table, slot, east, 1, now, dE, false, 1, v).allowed).toBe(true)
    // One hour after the east midnight: the west day number is still at most dE.
    const later = dayStart(EAST, dE + 1) + 3_600_000
    const dW = localDayNumber(WEST, later)
    expect(dW).toBeLessThanOrEqual(dE)
    expect(decideLocal(table, slot, west, 1, later, dW, false, 1, v).allowed).toBe(true)
    expect(v.used).toBe(1)
  })

  it('state file: a restart with another time zone carries the day as a reload does', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const v = new Verdict()
    const dW = localDayNumber(WEST, now)
    for (let i = 0; i < 3; i++) expect(decideLocal(table, table.slotOf('t'), west, 1, now, dW, false, 1, v).allowed).toBe(true)
    const saved = JSON.parse(JSON.stringify(snapshotState(table, now))) as ReturnType<typeof snapshotState>
    expect(saved.tenants[0]!.kinds.graphql).toEqual({ day: dW, used: 3, zone: WEST })
    expect(usedTodayFromState(saved, 't', 'graphql', EAST, now)).toBe(3)
    const fresh = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    expect(restoreState(fresh, saved, now).restored).toBe(1)
    const dE = localDayNumber(EAST, now)
    expect(decideLocal(fresh, fresh.slotOf('t'), east, 1, now, dE, false, 1, v).allowed).toBe(false)
    expect(v.used).toBe(3)
  })

  it('Redis script: moved west, the carried usage ends at the west midnight (the old day number is not waited for)', async () => {
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, 'tzs17:', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
    try {
      await store.warmUp(2_000)
      const t = Date.now()
      const k = quotaKeys.kind('tzs17:', 'w', 'graphql')
      const b = quotaKeys.budget('tzs17:', 'w')
      const args = (day: number, tz: string) => [1, day, 0, 0, 0, 3, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, zoneCode(tz)]
      const decide = async (tz: string, day: number) => {
        const r = await store.decide(k, b, args(day, tz), undefined, dayStart(tz, day + 1))
        if (!Array.isArray(r)) throw new Error(`redis: ${r}`)
        return r
      }
      const dE = localDayNumber(EAST, t)
      for (let i = 0; i < 3; i++) expect((await decide(EAST, dE))[0]).toBe(1)
      const dW = localDayNumber(WEST, t)
      expect(dW).toBeLessThan(dE)
      // The control plane's reading before the next decision: the units that will be carried.
      const admin = new Redis(redis.url)
      try {
        expect(await usedTodayFromRedis(admin, 'tzs17:', 'w', 'graphql', WEST)).toBe(3)
      } finally {
        admin.disconnect()
      }
      const carried = await decide(WEST, dW)
      expect(carried[0]).toBe(0)
      expect(carried[3]).toBe(3)
      // The proxy's next west day (its clock passed the west midnight): a new day, whatever the old number.
      const next = await decide(WEST, dW + 1)
      expect(next[0]).toBe(1)
      expect(next[3]).toBe(1)
    } finally {
      await provider.close()
    }
  })
})

describe('state file temporary files (sweep 17)', () => {
  it('a writer killed in the middle of a write does not leave its temporary file for good', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-state17-'))
    const path = join(dir, 'quota-state.json')
    // A process that started a write and died (SIGKILL) before its rename.
    const child = spawnSync(process.execPath, ['-e', `require('fs').writeFileSync(${JSON.stringify(path)} + '.' + process.pid + '.3.7.tmp', '{"version":1,"sav'); process.kill(process.pid, 'SIGKILL')`])
    expect(child.signal).toBe('SIGKILL')
    // This process's own leftover from before it started (a container restart reuses the pid).
    const old = `${path}.${process.pid}.5.999999.tmp`
    writeFileSync(old, '{')
    utimesSync(old, new Date(Date.now() - 86_400_000), new Date(Date.now() - 86_400_000))
    // A live writer's file (another proxy sharing the state file, mid-write) stays.
    const live = `${path}.${process.ppid}.1.1.tmp`
    writeFileSync(live, '{')
    expect(readdirSync(dir)).toHaveLength(3)
    await writeStateFile(path, { version: 1, savedAt: Date.now(), tenants: [] })
    expect(readdirSync(dir).sort()).toEqual(['quota-state.json', `quota-state.json.${process.ppid}.1.1.tmp`])
    expect(existsSync(old)).toBe(false)
  })
})
