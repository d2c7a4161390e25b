// The shared table under real worker threads: one limit for all of them (not N × limit), and
// tenant slots every thread agrees on.
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber } from '../../../config/quota-usage.ts'
import { resolveRule } from '../../../filters/quota/rules.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'

describe('shared table across worker threads', () => {
  it('4 threads × 40k decisions against a bucket of 50k admit exactly 50k', async () => {
    const quotas = validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }], quotas: { defaults: { graphql: { rate: 0.001, burst: 50_000 } } } }).quotas
    const rule = resolveRule(quotas, 'acme', 'graphql', 'silver', 'UTC', false)
    const buffer = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const go = new SharedArrayBuffer(4)
    const now = Date.now()
    const tenants = ['acme', ...Array.from({ length: 300 }, (_, i) => `t${i}`)]
    const workers = Array.from({ length: 4 }, () => new Worker(new URL('./table-race-worker.ts', import.meta.url), { workerData: { buffer, rule, tenants, decisions: 40_000, now, day: localDayNumber('UTC', now), go } }))
    const results = workers.map(
      (w) =>
        new Promise<{ admitted: number; slots: number[] }>((resolve, reject) => {
          w.on('message', (m: { ready?: boolean; admitted: number; slots: number[] }) => m.ready || resolve(m))
          w.on('error', reject)
        }),
    )
    await new Promise((r) => setTimeout(r, 300))
    Atomics.store(new Int32Array(go), 0, 1)
    Atomics.notify(new Int32Array(go), 0)
    const out = await Promise.all(results)
    await Promise.all(workers.map((w) => w.terminate()))
    expect(out.reduce((s, r) => s + r.admitted, 0)).toBe(50_000)
    for (const r of out) expect(r.slots).toEqual(out[0]!.slots)
    expect(new Set(out[0]!.slots).size).toBe(tenants.length)
  })
})
