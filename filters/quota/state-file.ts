// Daily usage and budget rings to a small JSON file and back, so a proxy without Redis keeps
// `usedToday` (and budgets) across a restart. Written atomically (temp file + rename), by one
// worker thread at a time, periodically and when the last quota filter of a thread closes.
import { renameSync, writeFileSync } from 'node:fs'
import { rename, writeFile } from 'node:fs/promises'
import { threadId } from 'node:worker_threads'
import { QUOTA_KINDS, type QuotaKindName, type QuotaStateDocument, type QuotaStateTenant } from '../../config/quota-usage.ts'
import { MAX_THRESHOLDS, R_BUCKETS, R_BUCKET_MS, R_FIRED, R_HEAD, R_TOTAL, RING_HEADER } from './rolling-budget.ts'
import { K_DAY, K_USED, OVERFLOW_RING, S_RING, type QuotaTable } from './shared-table.ts'

export function snapshotState(table: QuotaTable, now: number): QuotaStateDocument {
  const tenants: QuotaStateTenant[] = []
  const f = table.f64
  table.forEachSlot((slot, tenant) => {
    const entry: QuotaStateTenant = { tenant, kinds: {} }
    let keep = false
    for (let k = 0; k < QUOTA_KINDS.length; k++) {
      table.lockKind(slot, k)
      const day = f[table.kf(slot, k, K_DAY)]!
      const used = f[table.kf(slot, k, K_USED)]!
      table.unlockKind(slot, k)
      if (day > 0 && used > 0) {
        entry.kinds[QUOTA_KINDS[k] as QuotaKindName] = { day, used }
        keep = true
      }
    }
    const ringPlus1 = Atomics.load(table.i32, table.si(slot, S_RING))
    if (ringPlus1 > 0 && ringPlus1 - 1 !== OVERFLOW_RING) {
      const ring = ringPlus1 - 1
      const o = table.ringBase(ring)
      table.lockRing(ring)
      const n = f[o + R_BUCKETS]!
      if (f[o + R_HEAD]! > 0 && n > 0) {
        const ringValues: [number, number][] = []
        for (let i = 0; i < n; i++) {
          const v = f[o + RING_HEADER + i]!
          if (v !== 0) ringValues.push([i, v])
        }
        const fired: number[] = []
        for (let i = 0; i < MAX_THRESHOLDS; i++) fired.push(f[o + R_FIRED + i]!)
        entry.budget = { bucketMs: f[o + R_BUCKET_MS]!, buckets: n, head: f[o + R_HEAD]!, total: f[o + R_TOTAL]!, fired, ring: ringValues }
        keep = true
      }
      table.unlockRing(ring)
    }
    if (keep) tenants.push(entry)
  })
  return { version: 1, savedAt: now, tenants }
}

/** Put a saved document back into a fresh table (called once per process, before any decision). */
export function restoreState(table: QuotaTable, doc: QuotaStateDocument): number {
  const f = table.f64
  let restored = 0
  for (const t of doc.tenants) {
    if (typeof t.tenant !== 'string') continue
    const slot = table.slotOf(t.tenant)
    if (slot === 0) continue
    for (let k = 0; k < QUOTA_KINDS.length; k++) {
      const e = t.kinds?.[QUOTA_KINDS[k] as QuotaKindName]
      if (e === undefined || !Number.isFinite(e.day) || !Number.isFinite(e.used)) continue
      f[table.kf(slot, k, K_DAY)] = e.day
      f[table.kf(slot, k, K_USED)] = e.used
    }
    const b = t.budget
    if (b !== undefined && b.buckets > 0 && b.buckets <= 744) {
      const ring = table.ringOf(slot)
      if (ring !== OVERFLOW_RING) {
        const o = table.ringBase(ring)
        f[o + R_HEAD] = b.head
        f[o + R_TOTAL] = b.total
        f[o + R_BUCKET_MS] = b.bucketMs
        f[o + R_BUCKETS] = b.buckets
        b.fired.forEach((v, i) => i < MAX_THRESHOLDS && (f[o + R_FIRED + i] = v))
        for (const [i, v] of b.ring) if (i >= 0 && i < b.buckets) f[o + RING_HEADER + i] = v
      }
    }
    restored++
  }
  return restored
}

function tempName(path: string): string {
  return `${path}.${process.pid}.${threadId}.tmp`
}

export async function writeStateFile(path: string, doc: QuotaStateDocument): Promise<void> {
  const tmp = tempName(path)
  await writeFile(tmp, JSON.stringify(doc))
  await rename(tmp, path)
}

/** At shutdown: synchronous, so it is on disk before the thread goes. */
export function writeStateFileSync(path: string, doc: QuotaStateDocument): void {
  const tmp = tempName(path)
  writeFileSync(tmp, JSON.stringify(doc))
  renameSync(tmp, path)
}
