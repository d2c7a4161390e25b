// Daily usage and budget rings to a small JSON file and back, so a proxy without Redis keeps
// `usedToday` (and budgets) across a restart. Written atomically (proxy/atomic-file.ts: temp file,
// fsync, rename, directory fsync), by one worker thread at a time, periodically and when the last
// quota filter of a thread closes.
import { readdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { readdir, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { threadId } from 'node:worker_threads'
import { atomicTempPath, processAlive, syncDir, syncDirSync, writeFileAtomicSync, writeTemp, writeTempSync } from '../../proxy/filter.ts'
import { QUOTA_KINDS, zoneCode, zoneOfCode, type QuotaKindName, type QuotaStateDocument, type QuotaStateTenant } from '../../config/quota-usage.ts'
import { MAX_THRESHOLDS, R_BUCKETS, R_BUCKET_MS, R_FIRED, R_FIRED_TH, R_HEAD, R_TOTAL, RING_HEADER, RING_SLOTS } from './rolling-budget.ts'
import { lock, unlock } from './shared-mutex.ts'
import { H_STATE_LANDED, H_STATE_LOCK, H_STATE_SEQ, K_DAY, K_USED, OVERFLOW_RING, S_ZONE, type QuotaTable } from './shared-table.ts'

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
      const zone = zoneOfCode(table.i32[table.si(slot, S_ZONE + k)]!)
      table.unlockKind(slot, k)
      if (day > 0 && used > 0) {
        // The zone the day is counted in: a restart with another `timezone` carries it over as a reload does.
        entry.kinds[QUOTA_KINDS[k] as QuotaKindName] = zone === undefined ? { day, used } : { day, used, zone }
        keep = true
      }
    }
    const ring = table.heldRing(slot)
    if (ring !== -1) {
      const o = table.ringBase(ring)
      const n = f[o + R_BUCKETS]!
      if (f[o + R_HEAD]! > 0 && n > 0) {
        const ringValues: [number, number][] = []
        for (let i = 0; i < n; i++) {
          const v = f[o + RING_HEADER + i]!
          if (v !== 0) ringValues.push([i, v])
        }
        const fired: number[] = []
        const firedFor: number[] = []
        for (let i = 0; i < MAX_THRESHOLDS; i++) {
          fired.push(f[o + R_FIRED + i]!)
          const owner = f[o + R_FIRED_TH + i]!
          firedFor.push(Number.isNaN(owner) ? -1 : owner) // -1: unknown (JSON has no NaN)
        }
        entry.budget = { bucketMs: f[o + R_BUCKET_MS]!, buckets: n, head: f[o + R_HEAD]!, total: f[o + R_TOTAL]!, fired, firedFor, ring: ringValues }
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

function knownZone(z: string): boolean {
  if (z.length > 64) return false
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: z })
    return true
  } catch {
    return false
  }
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
  /** The threshold each marker belongs to; NaN: not known (a file without `firedFor`). */
  firedFor: number[]
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
  const { bucketMs, buckets, head, fired, firedFor, ring } = b
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
  // Whose marker each is: a ratio in (0, 1], 0 for an unused position, anything else not known
  // (an older writer had none: its markers stay where they are until the thresholds are next checked).
  const owners: number[] = []
  for (let i = 0; i < marks.length; i++) {
    const v = Array.isArray(firedFor) ? (firedFor as unknown[])[i] : undefined
    owners.push(typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1 ? v : NaN)
  }
  return { bucketMs: bucketMs as number, buckets: buckets as number, head: head as number, total: sum, fired: marks, firedFor: owners, ring: sound }
}

/**
 * Put a saved document back into a fresh table (called once per process, before any decision).
 * The file is outside our control (a crash mid-write on a filesystem without atomic rename, an
 * older or newer writer, a hand edit): anything that is not sound is skipped and counted, never
 * thrown — a damaged file must not keep the proxy from starting.
 */
export function restoreState(table: QuotaTable, doc: QuotaStateDocument, now = Date.now(), isListed: (tenant: string) => boolean = () => true): RestoreReport {
  const f = table.f64
  const report: RestoreReport = { restored: 0, skipped: 0 }
  const tenants: unknown = doc.tenants
  if (!Array.isArray(tenants)) return report
  for (const t of tenants as unknown[]) {
    if (!isRecord(t) || typeof t.tenant !== 'string' || !table.storable(t.tenant)) {
      report.skipped++
      continue
    }
    // An unlisted tenant's saved usage comes back under the unlisted caps (slots and rings), or a
    // large file would take the room the config's tenants are promised.
    const listed = isListed(t.tenant)
    const slot = table.slotOf(t.tenant, listed)
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
      const zone = (e as { zone?: unknown }).zone
      if (typeof zone === 'string' && knownZone(zone)) table.i32[table.si(slot, S_ZONE + k)] = zoneCode(zone)
      any = true
    }
    if (t.budget !== undefined) {
      const b = soundBudget(t.budget, now)
      if (b === undefined) bad = true
      else {
        const ring = table.ringOf(slot, listed)
        if (ring !== OVERFLOW_RING) {
          const o = table.ringBase(ring)
          f.fill(0, o, o + RING_HEADER + RING_SLOTS)
          f[o + R_HEAD] = b.head
          f[o + R_TOTAL] = b.total
          f[o + R_BUCKET_MS] = b.bucketMs
          f[o + R_BUCKETS] = b.buckets
          b.fired.forEach((v, i) => i < MAX_THRESHOLDS && (f[o + R_FIRED + i] = v))
          b.firedFor.forEach((v, i) => i < MAX_THRESHOLDS && (f[o + R_FIRED_TH + i] = v))
          // Summed: an index listed twice (a hand edit, a merge) must leave the buckets adding up
          // to the total, or the difference never left the window.
          for (const [i, v] of b.ring) f[o + RING_HEADER + i] = f[o + RING_HEADER + i]! + v
          any = true
        }
      }
    }
    if (bad) report.skipped++
    if (any) report.restored++
  }
  return report
}

// Writers. Each write goes to a temporary file of its own and is renamed over the state file.
// One temporary name per thread would be shared by a periodic (async) write still in progress and
// the shutdown (sync) write SIGTERM starts meanwhile: the older snapshot's bytes then land in the
// newer one's file (a torn, unreadable document: usage lost at the next start) or the older
// snapshot is renamed over the newer one. So every write has its own name, and a write renames
// only when no later write has landed already. The worker threads of a process share one table
// and one file: the order is kept in the table (a write's number, taken before its snapshot, and
// the newest number on disk, checked and renamed under one lock), or an older periodic snapshot of
// one thread, finishing late, was renamed over another thread's shutdown snapshot. Without a
// table (tools, tests), per thread.
let writes = 0
/** Per state file: the number of the newest write of this thread that is on disk (without a table). */
const landed = new Map<string, number>()

/** `<file>.<pid>.<thread>.<n>.tmp` (atomicTempPath): the sweep below reads the pid and the write's number from it. */
function tempName(path: string, n: number): string {
  return atomicTempPath(path, n)
}

/** The state and owed files hold usage, not secrets: readable as a plain write made them (before the umask). */
const FILE_MODE = 0o666

/**
 * The number of the next write, shared by the table's threads: take it before the snapshot, so
 * a later snapshot always has a higher number.
 */
export function nextStateWrite(table: QuotaTable): number {
  return Atomics.add(table.i32, H_STATE_SEQ, 1) + 1
}

function land(path: string, tmp: string, n: number, table: QuotaTable | undefined): void {
  if (table === undefined) {
    if ((landed.get(path) ?? 0) > n) {
      // A later snapshot is on disk: this one is stale.
      rmSync(tmp, { force: true })
      return
    }
    renameSync(tmp, path)
    landed.set(path, n)
    return
  }
  const i32 = table.i32
  lock(i32, H_STATE_LOCK)
  try {
    if (Atomics.load(i32, H_STATE_LANDED) > n) {
      rmSync(tmp, { force: true })
      return
    }
    renameSync(tmp, path)
    Atomics.store(i32, H_STATE_LANDED, n)
  } finally {
    unlock(i32, H_STATE_LOCK)
  }
}

const SWEEP_EVERY_MS = 60_000
const swept = new Map<string, number>()

/**
 * Remove temporary files of writes that will never land: a proxy or worker thread killed in the
 * middle of a write (SIGKILL, OOM, the watchdog) leaves its `<file>.<pid>.<thread>.<n>.tmp`
 * behind, and every crash added one (a full state file's worth of bytes each). Gone: files from
 * before this process started (no write of ours; a container's pid 1 is every restart's pid), files of
 * a process that no longer exists (or ten minutes old), and this process's writes older than the one on disk (they are
 * never renamed). Another live proxy's write to a shared file is left alone. The owed files' temps
 * (beside the state file) go by the same rule. Runs at start, after the first periodic write of a
 * thread and then at most once a minute; never fails a write.
 */
export async function sweepStaleTemps(path: string, table?: QuotaTable, now = Date.now()): Promise<number> {
  const dir = dirname(path)
  const prefix = `${basename(path)}.`
  const owedPrefix = `${basename(path)}${OWED_INFIX}`
  const started = now - process.uptime() * 1000
  const landedSeq = table !== undefined ? Atomics.load(table.i32, H_STATE_LANDED) : (landed.get(path) ?? 0)
  let removed = 0
  let names: string[]
  try {
    names = await readdir(dir)
  } catch {
    return 0
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue
    const file = join(dir, name)
    // An owed file's temps (`<file>.owed.<epoch>.<thread>.json.<pid>.<thread>.<n>.tmp`): numbered per
    // thread, not in the state writes' order, so only their pid and age tell.
    const owed = name.startsWith(owedPrefix) ? /^\d+\.\d+\.json\.(.*)$/.exec(name.slice(owedPrefix.length)) : null
    if (name.startsWith(owedPrefix) && owed === null) continue
    if (owed?.[1] === 'tmp') {
      // An older writer's `<owed file>.tmp` (no pid): one from before this process started is no write of ours.
      try {
        if ((await stat(file)).mtimeMs >= started - 1000) continue
        await rm(file, { force: true })
        removed++
      } catch {
        // gone already, or not ours to remove
      }
      continue
    }
    const m = /^(\d+)\.(\d+)\.(\d+)\.tmp$/.exec(owed !== null ? owed[1]! : name.slice(prefix.length))
    if (m === null) continue
    const pid = Number(m[1])
    const seq = Number(m[3])
    let stale: boolean
    if (pid === process.pid) {
      stale = owed === null && seq < landedSeq
      if (!stale) {
        try {
          stale = (await stat(file)).mtimeMs < started - 1000
        } catch {
          continue
        }
      }
    } else {
      stale = !processAlive(pid)
      // a pid reused by another program: no write takes ten minutes
      if (!stale) {
        try {
          stale = (await stat(file)).mtimeMs < now - 600_000
        } catch {
          continue
        }
      }
    }
    if (!stale) continue
    try {
      await rm(file, { force: true })
      removed++
    } catch {
      // another sweeper, or a directory we may not write: the write itself reports that
    }
  }
  return removed
}

/** `table`: the shared table the snapshot came from; `n`: its number (nextStateWrite, before the snapshot). */
export async function writeStateFile(path: string, doc: QuotaStateDocument, table?: QuotaTable, n?: number): Promise<void> {
  const seq = n ?? (table !== undefined ? nextStateWrite(table) : ++writes)
  const tmp = tempName(path, seq)
  try {
    // fsynced before the rename, so a power cut leaves the old file or the new one, not an empty one.
    await writeTemp(tmp, JSON.stringify(doc), FILE_MODE)
    land(path, tmp, seq, table)
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined)
    throw err
  }
  await syncDir(dirname(path))
  // After the write (its number is taken first: order between writes stays as it was).
  const last = swept.get(path)
  const t = Date.now()
  if (last === undefined || t - last >= SWEEP_EVERY_MS) {
    swept.set(path, t)
    await sweepStaleTemps(path, table, t).catch(() => 0)
  }
}

/** At shutdown: synchronous, so it is on disk before the thread goes. */
export function writeStateFileSync(path: string, doc: QuotaStateDocument, table?: QuotaTable, n?: number): void {
  const seq = n ?? (table !== undefined ? nextStateWrite(table) : ++writes)
  const tmp = tempName(path, seq)
  try {
    writeTempSync(tmp, JSON.stringify(doc), FILE_MODE)
    land(path, tmp, seq, table)
  } catch (err) {
    try {
      rmSync(tmp, { force: true })
    } catch {
      // the write's own error is the one to report
    }
    throw err
  }
  syncDirSync(dirname(path))
}

// --- outage units owed to Redis ---------------------------------------------------------------
//
// Units admitted while Redis was unreachable and not yet pushed to it when a worker thread's last
// quota filter closes (SIGTERM, or a reload without the quota filter) are saved beside the state
// file, one file per thread, and pushed by the next start. Not in the state document itself: that
// is a snapshot any thread's later write replaces (the periodic one too), while these entries
// belong to one thread and must stay on disk until Redis has taken them. Each keeps its push token,
// so a push Redis ran without a reply reaching us (or whose file outlived its push) is applied once.

/** One push owed to Redis, as saved. `unlessRan`: the lost decision call whose requests these are (charged only if it never ran). */
export interface OwedEntry {
  tenant: string
  kind: QuotaKindName
  units: number
  day: number
  token: string
  unlessRan?: { marker: string; seq: number }
}

export interface OwedDocument {
  version: 1
  savedAt: number
  proxy: string
  owed: OwedEntry[]
}

const OWED_INFIX = '.owed.'

/** The file this worker thread saves its owed pushes in (`epoch`: the process's, shared by its threads). */
export function owedFilePath(stateFile: string, epoch: number, thread = threadId): string {
  return `${stateFile}${OWED_INFIX}${epoch}.${thread}.json`
}

let owedWrites = 0

/**
 * Synchronous (a close's thread is going away; a periodic save is small), atomic (temporary file,
 * fsync, rename). The temporary file is named as the state file's are (pid, thread, number), so
 * the one sweep (sweepStaleTemps) removes what a killed writer left: a fixed `<file>.tmp` was
 * never removed by anyone.
 */
export function writeOwedFile(path: string, doc: OwedDocument): void {
  writeFileAtomicSync(path, JSON.stringify(doc), { mode: FILE_MODE, tmp: tempName(path, ++owedWrites) })
}

const TOKEN = /^[A-Za-z0-9._-]{1,120}$/

function owedEntry(e: unknown, now: number): OwedEntry | undefined {
  if (!isRecord(e)) return undefined
  const { tenant, kind, units: n, day, token, unlessRan } = e
  if (typeof tenant !== 'string' || tenant.length === 0 || tenant.length > 256 || !/^[\x20-\x7e]+$/.test(tenant)) return undefined
  if (typeof kind !== 'string' || !(QUOTA_KINDS as readonly string[]).includes(kind)) return undefined
  // Negative: a late reply's correction of units already pushed (a reclaimed slot's, see QuotaRuntime.owe).
  if (!Number.isSafeInteger(n) || n === 0) return undefined
  if (!soundDay({ day, used: 0 }, now)) return undefined
  if (typeof token !== 'string' || !TOKEN.test(token)) return undefined
  const entry: OwedEntry = { tenant, kind: kind as QuotaKindName, units: n as number, day: day as number, token }
  if (unlessRan !== undefined) {
    if (!isRecord(unlessRan) || typeof unlessRan.marker !== 'string' || unlessRan.marker.length > 512 || !Number.isSafeInteger(unlessRan.seq)) return undefined
    entry.unlessRan = { marker: unlessRan.marker, seq: unlessRan.seq as number }
  }
  return entry
}

/** One saved file as read: its entries and the count of damaged ones skipped, or why it cannot be used. */
export type OwedFileRead = { file: string; entries: OwedEntry[]; skipped: number; problem?: undefined } | { file: string; problem: string }

/**
 * Every owed file saved beside `stateFile` (by any earlier process or thread). A file that cannot
 * be read or is not such a document is reported, never thrown, and left where it is.
 */
export function readOwedFiles(stateFile: string, now = Date.now()): OwedFileRead[] {
  const dir = dirname(stateFile)
  const prefix = basename(stateFile) + OWED_INFIX
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    return []
  }
  const out: OwedFileRead[] = []
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^\d+\.\d+\.json$/.test(name.slice(prefix.length))) continue
    out.push(readOwedFile(join(dir, name), now))
  }
  return out
}

/** Is `file` an owed file of `stateFile` (as owedFilePath names them)? */
export function isOwedFileOf(stateFile: string, file: string): boolean {
  const prefix = basename(stateFile) + OWED_INFIX
  const name = basename(file)
  return dirname(file) === dirname(stateFile) && name.startsWith(prefix) && /^\d+\.\d+\.json$/.test(name.slice(prefix.length))
}

/** One owed file: its entries and the count of damaged ones, or why it cannot be used (never thrown). */
export function readOwedFile(file: string, now = Date.now()): OwedFileRead {
  let doc: unknown
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    return { file, problem: (err as Error).message }
  }
  if (!isRecord(doc) || doc.version !== 1 || !Array.isArray(doc.owed)) return { file, problem: 'not an owed-units document (version 1)' }
  const entries: OwedEntry[] = []
  let skipped = 0
  for (const e of doc.owed as unknown[]) {
    const entry = owedEntry(e, now)
    if (entry === undefined) skipped++
    else entries.push(entry)
  }
  return { file, entries, skipped }
}
