// The quota usage contract between the data plane (filters/quota) and the control plane: how a
// tenant's day is numbered, where usage lives in Redis, the local state file's shape, and the
// pure readers of `usedToday`. Zod-free so worker threads and the control plane can import it.
import { readFileSync } from 'node:fs'

export const QUOTA_KINDS = ['graphql', 'ingest', 'embeddings', 'subscriptions'] as const
export type QuotaKindName = (typeof QUOTA_KINDS)[number]

const DAY_MS = 86_400_000
const dayFormatters = new Map<string, Intl.DateTimeFormat>()

function dayFormatter(timeZone: string): Intl.DateTimeFormat {
  let f = dayFormatters.get(timeZone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: 'numeric', day: 'numeric' })
    dayFormatters.set(timeZone, f)
  }
  return f
}

/**
 * The tenant's calendar date at `nowMs`, as days since 1970-01-01 (the date, not 24 h periods:
 * DST days are 23 or 25 h long). Daily quotas are keyed by this number.
 */
export function localDayNumber(timeZone: string, nowMs: number): number {
  let y = 0
  let m = 0
  let d = 0
  for (const p of dayFormatter(timeZone).formatToParts(nowMs)) {
    if (p.type === 'year') y = Number(p.value)
    else if (p.type === 'month') m = Number(p.value)
    else if (p.type === 'day') d = Number(p.value)
  }
  return Date.UTC(y, m - 1, d) / DAY_MS
}

const zoneNames = new Map<number, string>()

/**
 * A time zone's number (32-bit FNV-1a of its name, never 0): what the quota state stores next to a
 * day number, so that a day counted in one zone is recognised after a reload moves the tenant to
 * another (the day numbers of two zones differ by up to two). Remembered per thread, so the zone
 * can be found again from its number.
 */
export function zoneCode(timeZone: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < timeZone.length; i++) {
    h ^= timeZone.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h |= 0
  if (h === 0) h = 1
  if (!zoneNames.has(h)) zoneNames.set(h, timeZone)
  return h
}

/** The zone of a number from zoneCode (undefined: not seen by this thread). */
export function zoneOfCode(code: number): string | undefined {
  return zoneNames.get(code)
}

/** The ISO date (YYYY-MM-DD) of a day number, for logs and the control plane. */
export function dayNumberToDate(day: number): string {
  return new Date(day * DAY_MS).toISOString().slice(0, 10)
}

/**
 * Redis keys. `{tenant}` is a hash tag: every key of one tenant lands in one Redis Cluster slot,
 * so one Lua script can touch them all atomically.
 */
export const quotaKeys = {
  /**
   * Hash: tk (bucket tokens, micro-units), ts (refill time, ms), d (day number), u (used that day),
   * z (zoneCode of the zone `d` is counted in) and e (when that day ends, ms).
   */
  kind: (prefix: string, tenant: string, kind: string) => `${prefix}q:{${tenant}}:${kind}`,
  /** Hash: rolling budget ring (h head bucket, tot total, b<i> buckets, m<ppm> when threshold ppm/10^6 last fired). */
  budget: (prefix: string, tenant: string) => `${prefix}q:{${tenant}}:budget`,
  /** String with a TTL: an anomaly alert for this tenant already went out (across proxies). */
  anomaly: (prefix: string, tenant: string) => `${prefix}q:{${tenant}}:anomaly`,
  /** Sorted set: proxy id → last heartbeat (ms). Its live size divides limits under local-share. */
  proxies: (prefix: string) => `${prefix}q:proxies`,
}

/** What a proxy without Redis writes to `quotas.stateFile` (and restores at start). */
export interface QuotaStateDocument {
  version: 1
  savedAt: number
  tenants: QuotaStateTenant[]
}

export interface QuotaStateTenant {
  tenant: string
  /** `zone`: the time zone `day` is counted in (absent in files of older proxies). */
  kinds: Partial<Record<QuotaKindName, { day: number; used: number; zone?: string }>>
  /** `fired[i]`: when the threshold `firedFor[i]` last fired (ms; 0 never); `firedFor[i]` -1: not known. */
  budget?: { bucketMs: number; buckets: number; head: number; total: number; fired: number[]; firedFor?: number[]; ring: [number, number][] }
}

/** usedToday from a state document: the day's figure when it is today's in the tenant's zone, else 0. */
export function usedTodayFromState(doc: QuotaStateDocument, tenant: string, kind: QuotaKindName, timeZone = 'UTC', nowMs = Date.now()): number {
  // The file is the proxy's, but read here as found: a damaged entry counts as no usage, never a throw.
  const found = doc.tenants.find((t) => t !== null && typeof t === 'object' && t.tenant === tenant)
  const entry = found?.kinds !== null && typeof found?.kinds === 'object' ? (found.kinds as Record<string, { day?: unknown; used?: unknown; zone?: unknown } | null>)[kind] : undefined
  if (entry === undefined || entry === null || typeof entry.used !== 'number' || !Number.isFinite(entry.used) || entry.used < 0) return 0
  if (entry.day === localDayNumber(timeZone, nowMs)) return entry.used
  // Counted in the tenant's previous zone (its timezone was changed): the units of that zone's
  // day still running are carried into today in the new zone (the proxy does the same).
  if (typeof entry.zone === 'string' && entry.zone !== timeZone && validZone(entry.zone) && entry.day === localDayNumber(entry.zone, nowMs)) return entry.used
  return 0
}

function validZone(z: string): boolean {
  try {
    dayFormatter(z)
    return true
  } catch {
    return false
  }
}

/** A state file as read: the document, or why there is none (`missing`: no file, a first start). */
export type StateFileRead = { doc: QuotaStateDocument; problem?: undefined } | { doc?: undefined; problem: string; missing: boolean }

/** Reads a state file, saying why it cannot be used (the quota filter logs and counts that). */
export function readStateFile(path: string): StateFileRead {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return { problem: code === 'ENOENT' ? 'missing' : (err as Error).message, missing: code === 'ENOENT' }
  }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    return { problem: `not JSON (${(err as Error).message}; ${text.length} bytes)`, missing: false }
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return { problem: 'not a quota state document', missing: false }
  const d = doc as { version?: unknown; tenants?: unknown }
  if (d.version !== 1) return { problem: `unsupported version ${JSON.stringify(d.version)} (this proxy reads version 1)`, missing: false }
  if (!Array.isArray(d.tenants)) return { problem: 'no tenants list', missing: false }
  return { doc: doc as QuotaStateDocument }
}

/** Reads a state file; undefined when missing or not a state document. */
export function readQuotaStateFile(path: string): QuotaStateDocument | undefined {
  return readStateFile(path).doc
}

/** The minimal Redis surface the reader needs (an ioredis client satisfies it). */
export interface HashReader {
  hmget(key: string, ...fields: string[]): Promise<(string | null)[]>
}

/** usedToday from Redis (the authority when proxies share one): what the control plane shows. */
export async function usedTodayFromRedis(redis: HashReader, keyPrefix: string, tenant: string, kind: QuotaKindName, timeZone = 'UTC', nowMs = Date.now()): Promise<number> {
  const [d, u, z, e] = await redis.hmget(quotaKeys.kind(keyPrefix, tenant, kind), 'd', 'u', 'z', 'e')
  if (d === null || d === undefined) return 0
  if (Number(d) === localDayNumber(timeZone, nowMs)) return Number(u ?? 0)
  // Counted in another zone (the tenant's timezone was changed) on a day that has not ended: the
  // next decision carries these units into today (redis-script.ts).
  if (z !== null && z !== undefined && e !== null && e !== undefined && Number(z) !== zoneCode(timeZone) && Number(e) > nowMs) return Number(u ?? 0)
  return 0
}
