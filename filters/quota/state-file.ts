// Daily usage and budget rings to a small JSON file and back, so a proxy without Redis keeps
// `usedToday` (and budgets) across a restart. Written atomically (temp file + rename), by one
// worker thread at a time, periodically and when the last quota filter of a thread closes.
import { renameSync, writeFileSync } from 'node:fs'
import { rename, writeFile } from 'node:fs/promises'
import { threadId } from 'node:worker_threads'
import { QUOTA_KINDS, type QuotaKindName, type QuotaStateDocument, type QuotaStateTenant } from '../../config/quota-usage.ts'
import { MAX_THRESHOLDS, R_BUCKETS, R_BUCKET_MS, R_FIRED, R_HEAD, R_TOTAL, RING_HEADER, RING_SLOTS } from './rolling-budget.ts'
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

/** What restoring a document did: tenants restored, and entries skipped as damaged. */
export interface RestoreReport {
  restored: number
  skipped: number
}

const DAY_MS = 86_400_000

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** A non-negative finite number (usage, totals, markers). */
function units(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
}

/** A day entry that can be believed: a day no later than tomorrow in UTC (the easternmost zone's today) and sane usage. */
function soundDay(e: unknown, now: number): e is { day: number; used: number } {
  if (!isRecord(e)) return false
  const { day, used } = e
  return Number.isSafeInteger(day) && (day as number) > 0 && (day as number) <= Math.floor(now / DAY_MS) + 1 && units(used)
}

interface SoundBudget {
  bucketMs: number
  buckets: number
  head: number
  total: number
  fired: number[]
  ring: [number, number][]
}

/**
 * A budget ring that can be believed: its shape within the configurable range, its newest bucket
 * not in the future (a head ahead of the clock would freeze the window: nothing would ever leave
 * it), and every number a non-negative finite one. The total is recomputed from the buckets, so a
 * total the buckets do not account for cannot stay in the window forever.
 */
function soundBudget(b: unknown, now: number): SoundBudget | undefined {
  if (!isRecord(b)) return undefined
  const { bucketMs, buckets, head, fired, ring } = b
  if (!Number.isSafeInteger(bucketMs) || (bucketMs as number) <= 0) return undefined
  if (!Number.isSafeInteger(buckets) || (buckets as number) < 1 || (buckets as number) > RING_SLOTS) return undefined
  if (!Number.isSafeInteger(head) || (head as number) <= 0 || (head as number) > Math.floor(now / (bucketMs as number))) return undefined
  if (!Array.isArray(ring)) return undefined
  const sound: [number, number][] = []
  let sum = 0
  for (const pair of ring as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return undefined
    const [i, v] = pair as unknown[]
    if (!Number.isSafeInteger(i) || (i as number) < 0 || (i as number) >= (buckets as number) || !units(v)) return undefined
    sound.push([i as number, v as number])
    sum += v as number
  }
  // Markers are optional (a writer may not have had them); a marker from the future is no marker.
  const marks: number[] = []
  if (fired !== undefined) {
    if (!Array.isArray(fired)) return undefined
    for (const m of fired as unknown[]) marks.push(units(m) && m <= now ? m : 0)
  }
  return { bucketMs: bucketMs as number, buckets: buckets as number, head: head as number, total: sum, fired: marks, ring: sound }
}

/**
 * Put a saved document back into a fresh table (called once per process, before any decision).
 * The file is outside our control (a crash mid-write on a filesystem without atomic rename, an
 * older or newer writer, a hand edit): anything that is not sound is skipped and counted, never
 * thrown — a damaged file must not keep the proxy from starting.
 */
export function restoreState(table: QuotaTable, doc: QuotaStateDocument, now = Date.now()): RestoreReport {
  const f = table.f64
  const report: RestoreReport = { restored: 0, skipped: 0 }
  const tenants: unknown = doc.tenants
  if (!Array.isArray(tenants)) return report
  for (const t of tenants as unknown[]) {
    if (!isRecord(t) || typeof t.tenant !== 'string' || !table.storable(t.tenant)) {
      report.skipped++
      continue
    }
    const slot = table.slotOf(t.tenant)
    if (slot === 0) {
      report.skipped++
      continue
    }
    let any = false
    let bad = false
    const kinds = t.kinds
    if (kinds !== undefined && !isRecord(kinds)) bad = true
    for (let k = 0; k < QUOTA_KINDS.length && isRecord(kinds); k++) {
      const e = kinds[QUOTA_KINDS[k] as QuotaKindName]
      if (e === undefined) continue
      if (!soundDay(e, now)) {
        bad = true
        continue
      }
      f[table.kf(slot, k, K_DAY)] = e.day
      f[table.kf(slot, k, K_USED)] = e.used
      any = true
    }
    if (t.budget !== undefined) {
      const b = soundBudget(t.budget, now)
      if (b === undefined) bad = true
      else {
        const ring = table.ringOf(slot)
        if (ring !== OVERFLOW_RING) {
          const o = table.ringBase(ring)
          f.fill(0, o, o + RING_HEADER + RING_SLOTS)
          f[o + R_HEAD] = b.head
          f[o + R_TOTAL] = b.total
          f[o + R_BUCKET_MS] = b.bucketMs
          f[o + R_BUCKETS] = b.buckets
          b.fired.forEach((v, i) => i < MAX_THRESHOLDS && (f[o + R_FIRED + i] = v))
          for (const [i, v] of b.ring) f[o + RING_HEADER + i] = v
          any = true
        }
      }
    }
    if (bad) report.skipped++
    if (any) report.restored++
  }
  return report
}

/** Reading the file: the document, or why there is none ('missing' is the normal first start). */
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
