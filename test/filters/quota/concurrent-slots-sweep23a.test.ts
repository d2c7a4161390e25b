// Concurrency slots (maxConcurrent) are shared by the worker threads of a process. A slot was
// taken by adding first and giving it back when over: every refused attempt in one thread raised
// the count for a moment, and another thread asking then for the last free slot saw it taken and
// was refused (two threads racing for it both refused). A slot is now taken only while one is
// free (compare-and-swap): the count never goes over maxConcurrent. Real quota filters in real
// worker threads on one shared buffer; the main thread holds one of the two slots and watches the
// count while three threads race for the other.
import type { IncomingMessage } from 'node:http'
import { Worker } from 'node:worker_threads'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { QUOTA_SHARED_BYTES, QuotaTable, S_CONCURRENT } from '../../../filters/quota/shared-table.ts'
import { RequestContext } from '../../../proxy/context.ts'
import type { Filter } from '../../../proxy/filter.ts'
import type { RouteRuntime } from '../../../proxy/runtime.ts'

const MAX = 2
const THREADS = 3
const ATTEMPTS = 100_000

describe('concurrency slots across worker threads', () => {
  it('are taken only while free: the shared count never exceeds maxConcurrent', async () => {
    const doc = {
      tenants: { t: {} },
      quotas: { tenants: { t: { graphql: { maxConcurrent: MAX } } } },
      routes: [{ name: 'api', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    }
    const config = validateConfig(doc)
    const shared = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const sync = new SharedArrayBuffer(8)
    const flags = new Int32Array(sync)
    const logger = pino({ level: 'silent' })
    const filter = (await quotaFilter.create(config.routes[0]!.filters[1] as never, { routeName: 'api', workerId: 0, config, logger, registry: new Registry(), shared, redis: undefined })) as Filter
    const table = new QuotaTable(shared)
    const count = table.si(table.slotOf('t'), S_CONCURRENT + 0) // kind graphql
    const req = { method: 'POST', url: '/graphql', headers: {}, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage
    const held = new RequestContext(req, undefined, { name: 'api', timeouts: { totalMs: 0 } } as unknown as RouteRuntime, logger, 0, 'held')
    held.tenant = 't'
    held.tier = 'silver'
    const workers: Worker[] = []
    try {
      expect(filter.onRequest!(held)).toBeUndefined()
      expect(Atomics.load(table.i32, count)).toBe(1)
      for (let i = 1; i <= THREADS; i++) {
        workers.push(new Worker(new URL('./concurrent-slots-worker-sweep23a.ts', import.meta.url), { workerData: { shared, doc, workerId: i, attempts: ATTEMPTS, sync } }))
      }
      const results = workers.map(
        (w) =>
          new Promise<{ admitted: number; refused: number }>((resolve, reject) => {
            w.on('message', (m: 'ready' | { admitted: number; refused: number }) => m !== 'ready' && resolve(m))
            w.on('error', reject)
          }),
      )
      await Promise.all(workers.map((w) => new Promise<void>((resolve) => w.once('message', () => resolve()))))
      Atomics.store(flags, 0, 1)
      Atomics.notify(flags, 0)
      // Watch the count while they race (bounded: the threads finish in well under a second).
      let highest = 0
      const deadline = performance.now() + 8_000
      while (Atomics.load(flags, 1) < THREADS && performance.now() < deadline) {
        const n = Atomics.load(table.i32, count)
        if (n > highest) highest = n
      }
      const out = await Promise.all(results)
      expect(highest).toBeLessThanOrEqual(MAX)
      // Every attempt was decided, and the free slot was really taken and given back.
      for (const r of out) expect(r.admitted + r.refused).toBe(ATTEMPTS)
      expect(out.reduce((s, r) => s + r.admitted, 0)).toBeGreaterThan(0)
      expect(Atomics.load(table.i32, count)).toBe(1)
      held.runCleanups()
      expect(Atomics.load(table.i32, count)).toBe(0)
    } finally {
      await Promise.all(workers.map((w) => w.terminate()))
      await filter.close?.()
    }
  })
})
