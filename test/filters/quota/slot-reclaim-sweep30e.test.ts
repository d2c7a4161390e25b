// Tenant slots of unlisted tenants are reclaimed. Before, the shared table never gave a slot
// back: once 3072 distinct unlisted ids had been seen (a long-running ingress with allowUnlisted),
// every new unlisted tenant shared the overflow slot's limits until the process restarted.
// Real quota filters on one shared buffer, one of them in a real worker thread whose cached slot
// is reclaimed under it. "Not used for a while" and "bucket full again" are reached by writing the
// slot's last use back in time through the table (no 60 s sleep).
import type { IncomingMessage } from 'node:http'
import { Worker } from 'node:worker_threads'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber } from '../../../config/quota-usage.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { clockSec, H_SLOTS_USED, HF_SLOT_SCAN_AT, K_DAY, K_USED, OVERFLOW_SLOT, QUOTA_SHARED_BYTES, QuotaTable, S_CONCURRENT, S_FULL_AT, S_TOUCH, SLOT_IDLE_S, TENANT_CAPACITY } from '../../../filters/quota/shared-table.ts'
import { RequestContext } from '../../../proxy/context.ts'
import type { Filter } from '../../../proxy/filter.ts'
import type { RouteRuntime } from '../../../proxy/runtime.ts'

const doc = {
  tenants: { listed: {} },
  // A tiny refill: a bucket's remaining tokens tell whose bucket it is (nothing refills during the test).
  quotas: { defaults: { graphql: { rate: 0.001, burst: 5, limitPerDay: 1000, maxConcurrent: 3 } } },
  routes: [{ name: 'api', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant', allowUnlisted: true }, { name: 'quota' }] }],
}

// The worker thread: a real quota filter (worker id 1) that serves one request per message.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { pino } = require('pino')
const { Registry } = require('prom-client')
;(async () => {
  const { validateConfig } = await import(workerData.root + 'config/load.ts')
  const { quotaFilter } = await import(workerData.root + 'filters/quota/index.ts')
  const { RequestContext } = await import(workerData.root + 'proxy/context.ts')
  const config = validateConfig(workerData.doc)
  const logger = pino({ level: 'silent' })
  const filter = await quotaFilter.create(config.routes[0].filters[1], { routeName: 'api', workerId: 1, config, logger, registry: new Registry(), shared: workerData.shared, redis: undefined })
  const req = { method: 'POST', url: '/graphql', headers: {}, socket: { remoteAddress: '127.0.0.1' } }
  parentPort.on('message', async (m) => {
    const ctx = new RequestContext(req, undefined, { name: 'api', timeouts: { totalMs: 0 } }, logger, 0, 'w')
    ctx.tenant = m
    ctx.tier = 'silver'
    const d = await filter.onRequest(ctx)
    ctx.runCleanups()
    parentPort.postMessage(d === undefined)
  })
  parentPort.postMessage('ready')
})()
`

/** An id whose probe sequence starts at `slot` (shared-table.ts's hash: FNV-1a over slots 1…4095). */
function idStartingAt(slot: number): string {
  for (let i = 0; i < 10_000_000; i++) {
    const id = `new${i}`
    let h = 0x811c9dc5
    for (let j = 0; j < id.length; j++) h = Math.imul(h ^ id.charCodeAt(j), 0x01000193)
    if (((h >>> 0) % (TENANT_CAPACITY - 1)) + 1 === slot) return id
  }
  throw new Error(`no id found for slot ${slot}`)
}

describe('tenant slots of unlisted tenants', () => {
  it('are reclaimed once nothing of them counts, and a thread holding a reclaimed slot looks its tenant up again', async () => {
    const config = validateConfig(doc)
    const shared = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const logger = pino({ level: 'silent' })
    const filter = (await quotaFilter.create(config.routes[0]!.filters[1] as never, { routeName: 'api', workerId: 0, config, logger, registry: new Registry(), shared, redis: undefined })) as Filter
    const table = new QuotaTable(shared)
    const req = { method: 'POST', url: '/graphql', headers: {}, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage
    const route = { name: 'api', timeouts: { totalMs: 0 } } as unknown as RouteRuntime
    let n = 0
    const request = (tenant: string): { admitted: boolean; ctx: RequestContext } => {
      const ctx = new RequestContext(req, undefined, route, logger, 0, `r${n++}`)
      ctx.tenant = tenant
      ctx.tier = 'silver'
      return { admitted: filter.onRequest!(ctx) === undefined, ctx }
    }
    const served = (tenant: string, times = 1): number => {
      let admitted = 0
      for (let i = 0; i < times; i++) {
        const r = request(tenant)
        r.ctx.runCleanups()
        if (r.admitted) admitted++
      }
      return admitted
    }
    const used = (slot: number) => table.f64[table.kf(slot, 0, K_USED)]! // kind graphql
    const worker = new Worker(WORKER, { eval: true, workerData: { root: new URL('../../../', import.meta.url).href, doc, shared } })
    const replies: unknown[] = []
    worker.on('message', (m) => replies.push(m))
    const ask = async (tenant: string): Promise<unknown> => {
      const before = replies.length
      worker.postMessage(tenant)
      await expect.poll(() => replies.length, { timeout: 4_000, interval: 5 }).toBeGreaterThan(before)
      return replies[before]
    }
    let busy: RequestContext | undefined
    try {
      await expect.poll(() => replies.includes('ready'), { timeout: 4_000, interval: 10 }).toBe(true)
      replies.length = 0
      // The worker thread serves "victim" (3 of its 5 tokens) and keeps its slot in its cache.
      for (let i = 0; i < 3; i++) expect(await ask('victim')).toBe(true)
      const victim = table.peekSlot('victim')
      expect(victim).toBeGreaterThan(OVERFLOW_SLOT)
      const victimGen = table.genOf(victim)
      // "busy" holds a concurrency slot; "today" has usage today; "drained" an empty bucket; the
      // rest fill the table.
      const held = request('busy')
      expect(held.admitted).toBe(true)
      busy = held.ctx
      const busySlot = table.peekSlot('busy')
      expect(served('today')).toBe(1)
      const todaySlot = table.peekSlot('today')
      expect(served('drained', 5)).toBe(5)
      const drainedSlot = table.peekSlot('drained')
      let filled = 0
      for (; filled < TENANT_CAPACITY; filled++) {
        served(`u${filled}`)
        if (table.peekSlot(`u${filled}`) === -1) break // the unlisted share is full: the overflow slot
      }
      expect(Atomics.load(table.i32, H_SLOTS_USED)).toBe(Math.floor(TENANT_CAPACITY * 0.75))
      // Long unused and full again (drained's bucket is not); their day is over, but today's.
      const now = Date.now()
      const day = localDayNumber('UTC', now)
      for (const s of [victim, busySlot, todaySlot, drainedSlot]) {
        table.i32[table.si(s, S_TOUCH)] = clockSec(now) - 2 * SLOT_IDLE_S
        if (s !== drainedSlot) table.i32[table.si(s, S_FULL_AT)] = 0
        if (s !== todaySlot) table.f64[table.kf(s, 0, K_DAY)] = day - 2
      }
      table.f64[HF_SLOT_SCAN_AT] = 0 // the filling's last insert searched in vain: no pause
      // A new unlisted tenant (one whose probe starts at the victim's slot) gets that slot, with
      // limits of its own: a full bucket of 5 (the victim had 2 tokens left, the overflow slot
      // fewer) and its own day's usage.
      const newcomer = idStartingAt(victim)
      expect(served(newcomer, 6)).toBe(5)
      const fresh = table.peekSlot(newcomer)
      expect(fresh).toBe(victim)
      expect(table.keyOf(fresh)).toBe(newcomer)
      expect(used(fresh)).toBe(5)
      expect(table.genOf(fresh)).not.toBe(victimGen)
      expect(table.peekSlot('victim')).toBe(-1)
      // The worker thread's cache still points at the victim's slot: it looks the tenant up again
      // (the table is full: the overflow slot) instead of charging the new occupant.
      const overflowUsed = used(OVERFLOW_SLOT)
      expect(await ask('victim')).toBe(true)
      expect(used(fresh)).toBe(5)
      expect(used(OVERFLOW_SLOT)).toBe(overflowUsed + 1)
      // Usage today, a concurrency slot in use and a bucket not full yet kept theirs.
      expect(table.peekSlot('busy')).toBe(busySlot)
      expect(table.peekSlot('today')).toBe(todaySlot)
      expect(table.peekSlot('drained')).toBe(drainedSlot)
      expect(Atomics.load(table.i32, table.si(busySlot, S_CONCURRENT + 0))).toBe(1)
      // The request ends: nothing of "busy" counts any more, and its slot goes to the next newcomer.
      busy.runCleanups()
      busy = undefined
      table.f64[HF_SLOT_SCAN_AT] = 0
      const next = idStartingAt(busySlot)
      expect(served(next)).toBe(1)
      expect(table.peekSlot(next)).toBe(busySlot)
      expect(table.peekSlot('today')).toBe(todaySlot)
      expect(table.peekSlot('drained')).toBe(drainedSlot)
    } finally {
      busy?.runCleanups()
      await worker.terminate()
      await filter.close?.()
    }
  })
})
