// Usage: proxies post per-tenant counters every few seconds (deltas, numbered per proxy boot so
// a retried post is counted once). They are added to per-day totals in the tenant's own time
// zone (the day its quotas reset), from which statements, `usedToday` and alerts are computed.
import { addCounters, addTo, emptyCounters, type TenantCounters } from '../config/usage-report.ts'
import { canonicalJson } from '../config/canonical-json.ts'
import { num, type Db, type SqlValue, type Tx } from './db.ts'
import { QUOTA_KINDS, type DailyLimits, type QuotaKind } from './quota-section.ts'
import { hasNul, parseDateTime, parseInteger } from './request-values.ts'
import type { SigningKey } from './signing.ts'

/**
 * One tenant's counters over a report interval. Only `requests` is always present; the others
 * are filled by whichever parts of the proxy produce them (see docs/control-plane.md).
 */
export interface TenantUsage {
  requests: number
  /** Responses with status >= 500. */
  errors?: number
  /** Sum of ctx.cost (cost units set by the cost-hint/estimate filters; 1 per request otherwise). */
  costUnits?: number
  /** Requests answered with an error code of the gateway's own (RATE_LIMITED, QUOTA_EXCEEDED, …). */
  rejections?: Record<string, number>
  /** Response bytes sent on `type: http` routes (exports). */
  bytesExported?: number
  /** DLP actions, keyed "type:action" (e.g. "email:mask"). */
  dlpActions?: Record<string, number>
  /** Units per quota kind (graphql requests, subscriptions started, …). */
  byKind?: Partial<Record<QuotaKind, number>>
}

export interface UsageReport {
  proxyId: string
  /** Changes every time the proxy process starts; seq restarts at 1 with it. */
  bootId: string
  seq: number
  /** End of the interval (ISO time); decides the day the counts belong to. */
  at: string
  tenants: Record<string, TenantUsage>
}

export interface Alert {
  id: string
  at: string
  tenant: string | null
  kind: 'budget.80' | 'budget.100' | 'anomaly.rejections' | 'anomaly.volume'
  severity: 'info' | 'warning' | 'critical'
  message: string
  detail: Record<string, unknown>
}

/** One formatter per time zone: building one costs far more than formatting (a report names thousands of tenants). */
const dayFormats = new Map<string, Intl.DateTimeFormat>()

/** The calendar day (YYYY-MM-DD) of an instant in a time zone. */
export function localDay(at: Date, timeZone: string): string {
  let format = dayFormats.get(timeZone)
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' })
    if (dayFormats.size < 1000) dayFormats.set(timeZone, format)
  }
  const parts = format.formatToParts(at)
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '00'
  return `${get('year')}-${get('month')}-${get('day')}`
}

/**
 * The largest value a usage_daily counter holds: Number.MAX_SAFE_INTEGER (2^53 - 1). Additions
 * saturate there instead of overflowing. One report may carry up to this much per counter, so a
 * caller with a proxy token could otherwise push a sum past 2^63 - 1 in ~1000 reports (PostgreSQL:
 * `bigint out of range`, every later report for that tenant and day a 500) — and SQLite fails
 * sooner: node:sqlite refuses to read an integer above 2^53 - 1 (statements a 500 after two such
 * reports), and past 2^63 - 1 SQLite turns the sum into an inexact REAL. Below the BIGINT maximum,
 * this is the largest limit both engines store and JavaScript reads back exactly.
 */
export const USAGE_COUNTER_MAX = Number.MAX_SAFE_INTEGER

/**
 * `value = min(stored + added, USAGE_COUNTER_MAX)`, written so that no intermediate overflows
 * (PostgreSQL raises on `stored + added` past 2^63 - 1 before LEAST could see it): compare against
 * `max - added` first. Both operands are in [0, max], so `max - added` is too. A stored value
 * already above the limit (written by older code) comes down to it.
 */
const SATURATING_SUM = `CASE WHEN usage_daily.value >= ${USAGE_COUNTER_MAX} - excluded.value THEN ${USAGE_COUNTER_MAX} ELSE usage_daily.value + excluded.value END`

/** A usage_daily counter that stands at USAGE_COUNTER_MAX after a report added to it. */
export interface SaturatedCounter {
  tenant: string
  day: string
  metric: string
}

/** Counter name → value, the rows a tenant's interval adds to usage_daily. */
export function flattenUsage(u: TenantUsage): [string, number][] {
  const out: [string, number][] = []
  const add = (k: string, v: unknown) => {
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) out.push([k, Math.min(Math.round(v), USAGE_COUNTER_MAX)])
  }
  add('requests', u.requests)
  add('errors', u.errors)
  add('cost_units', u.costUnits)
  add('bytes_exported', u.bytesExported)
  for (const [k, v] of Object.entries(u.rejections ?? {})) add(`rejections.${k}`, v)
  for (const [k, v] of Object.entries(u.dlpActions ?? {})) add(`dlp.${k}`, v)
  for (const [k, v] of Object.entries(u.byKind ?? {})) if ((QUOTA_KINDS as readonly string[]).includes(k)) add(`kind.${k}`, v)
  return out
}

/**
 * A counter of one interval: a non-negative number up to MAX_SAFE_INTEGER (cost units may be
 * fractional; stored rounded). Larger values are no real interval's count, and would overflow the
 * BIGINT sums; they are refused rather than turned into a database error.
 */
function counterProblem(path: string, v: unknown): string | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER) return undefined
  return `${path}: expected a non-negative number up to ${Number.MAX_SAFE_INTEGER}, got ${JSON.stringify(v) ?? String(v)}`
}

/** Ids and keys become text columns (usage_daily.tenant, .metric; proxies.id, .boot_id): no NUL. */
function textProblem(path: string, v: string): string | undefined {
  return hasNul(v) ? `${path}: must not contain a NUL character (U+0000)` : undefined
}

/**
 * A tenant or counter name: no NUL, and not `__proto__` — stored, it could never be read back
 * (the statement's maps took it for their prototype and dropped it: a signed statement short of
 * what usage_daily held). As in the config document, it is no name anywhere.
 */
function keyProblem(path: string, k: string): string | undefined {
  return textProblem(path, k) ?? (k === '__proto__' ? `${path}: "__proto__" is not a tenant or counter name` : undefined)
}

export function validateReport(body: unknown): UsageReport | string {
  const r = body as Partial<UsageReport> | null
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return '(root): expected an object'
  if (typeof r.proxyId !== 'string' || r.proxyId === '') return 'proxyId: required (string)'
  if (typeof r.bootId !== 'string' || r.bootId === '') return 'bootId: required (string)'
  const idProblem = textProblem('proxyId', r.proxyId) ?? textProblem('bootId', r.bootId)
  if (idProblem) return idProblem
  if (r.bootId.length > MAX_BOOT_ID_LENGTH) return `bootId: at most ${MAX_BOOT_ID_LENGTH} characters, got ${r.bootId.length}`
  if (parseInteger(r.seq, { min: 1, json: true }) === undefined) {
    return Number.isInteger(r.seq) && (r.seq as number) > 0 ? `seq: expected a positive integer, at most ${Number.MAX_SAFE_INTEGER}` : 'seq: expected a positive integer'
  }
  if (typeof r.at !== 'string' || Number.isNaN(parseDateTime(r.at))) return 'at: expected an RFC 3339 date-time'
  if (r.tenants === null || typeof r.tenants !== 'object' || Array.isArray(r.tenants)) return 'tenants: expected an object of tenant → counters'
  for (const [t, u] of Object.entries(r.tenants)) {
    const tenantProblem = keyProblem(`tenants[${JSON.stringify(t)}]`, t)
    if (tenantProblem) return tenantProblem
    if (u === null || typeof u !== 'object' || typeof (u as TenantUsage).requests !== 'number' || (u as TenantUsage).requests < 0) return `tenants.${t}.requests: expected a non-negative number`
    const c = u as TenantUsage
    for (const field of ['requests', 'errors', 'costUnits', 'bytesExported'] as const) {
      const p = c[field] === undefined ? undefined : counterProblem(`tenants.${t}.${field}`, c[field])
      if (p) return p
    }
    for (const field of ['rejections', 'dlpActions', 'byKind'] as const) {
      const m = c[field]
      if (m === undefined) continue
      if (m === null || typeof m !== 'object' || Array.isArray(m)) return `tenants.${t}.${field}: expected an object of name → count`
      for (const [k, v] of Object.entries(m)) {
        const p = keyProblem(`tenants.${t}.${field}[${JSON.stringify(k)}]`, k) ?? counterProblem(`tenants.${t}.${field}.${k}`, v)
        if (p) return p
      }
    }
  }
  return r as UsageReport
}

export interface DayTotals extends TenantCounters {
  day: string
}

function emptyDay(day: string): DayTotals {
  return { day, ...emptyCounters() }
}

function addMetric(d: DayTotals, metric: string, value: number): void {
  if (metric === 'requests') d.requests += value
  else if (metric === 'errors') d.errors += value
  else if (metric === 'cost_units') d.costUnits += value
  else if (metric === 'bytes_exported') d.bytesExported += value
  else if (metric.startsWith('rejections.')) addTo(d.rejections, metric.slice(11), value)
  else if (metric.startsWith('dlp.')) addTo(d.dlpActions, metric.slice(4), value)
  else if (metric.startsWith('kind.')) addTo(d.byKind, metric.slice(5), value)
}

/** A tenant's counters in one report, and the local day they count on. */
interface ReportedTenant {
  tenant: string
  u: TenantUsage
  day: string
}

/**
 * The fewest requests in a day that can raise `anomaly.volume`. Without a floor, a tenant that
 * barely uses the gateway (2 requests a day: a staging tenant, a nightly probe) alerted on its
 * 7th request — "over 3×" of nothing is noise. 20 is the same floor as `anomaly.rejections` and the
 * proxy detector's `minRequests`; above an average of ~7 a day, 3× is the larger bar anyway (and
 * no Poisson-like noise reaches it: P(X ≥ 20 | mean 6.7) ≈ 1e-5).
 */
export const MIN_VOLUME_ALERT_REQUESTS = 20

/** Rows per multi-row statement (4 parameters each: far under SQLite's 32766 and PostgreSQL's 65535). */
const BATCH_ROWS = 500

/** "($1, $2), ($3, $4)" for `rows` rows of `width` parameters, numbered from `first`. */
function placeholders(rows: number, width: number, first = 1): string {
  const out: string[] = []
  for (let r = 0; r < rows; r++) {
    const cols: string[] = []
    for (let c = 0; c < width; c++) cols.push(`$${first + r * width + c}`)
    out.push(width === 1 ? cols[0]! : `(${cols.join(', ')})`)
  }
  return out.join(', ')
}

/** The calendar day `n` days before `day` (both YYYY-MM-DD; local days are dates, so UTC arithmetic is exact). */
export function daysBefore(day: string, n: number): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) - n * 86_400_000).toISOString().slice(0, 10)
}

/** Let timers and sockets run (SQLite statements are synchronous: a long report would hold the event loop). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/**
 * How many boots of one proxy id keep their usage high-water. A high-water for the latest boot
 * only counted a retry twice once another boot had reported in between: a report of boot A
 * committed after its proxy had given up waiting, boot B reported (a restart; or two proxies
 * sharing one id), and A's retry of the same seq then looked new. A boot's late retries come
 * within seconds to minutes of it, while the next few boots report; 16 covers far more than that.
 */
export const REMEMBERED_BOOTS = 16

/** The longest bootId a report may carry (the proxy sends a UUID): REMEMBERED_BOOTS of them share one row. */
export const MAX_BOOT_ID_LENGTH = 200

/**
 * `proxies.boot_id` holds the remembered boots, most recently reported first, as
 * `{"usageBoots":[[bootId, seq], …]}`; `usage_seq` the seq of the first. A plain id there (written
 * by the config stream when a proxy first connects, or by an older control plane) is that one boot
 * at `usage_seq`.
 */
export function readUsageBoots(stored: string | null, seq: number): [string, number][] {
  if (stored === null) return []
  if (stored.startsWith('{"usageBoots":')) {
    try {
      const list = (JSON.parse(stored) as { usageBoots?: unknown }).usageBoots
      if (Array.isArray(list)) return list.filter((b): b is [string, number] => Array.isArray(b) && typeof b[0] === 'string' && typeof b[1] === 'number')
    } catch {
      // not ours after all: a boot id that happens to look like it
    }
  }
  return [[stored, seq]]
}

function writeUsageBoots(boots: [string, number][], bootId: string, seq: number): string {
  const next: [string, number][] = [[bootId, seq]]
  for (const b of boots) if (b[0] !== bootId && next.length < REMEMBERED_BOOTS) next.push(b)
  return JSON.stringify({ usageBoots: next })
}

export class UsageLedger {
  readonly #db: Db
  readonly #key: SigningKey

  constructor(db: Db, key: SigningKey) {
    this.#db = db
    this.#key = key
  }

  /**
   * Add a report. Returns false for a duplicate (a seq already counted for its boot: each of the
   * proxy id's last REMEMBERED_BOOTS boots keeps its own high-water). `timeZoneOf` gives each
   * tenant's zone; `limits` the daily quota limits for the budget alerts.
   *
   * A report may name thousands of tenants (an ingress): its rows are written and its alerts
   * checked in multi-row statements of BATCH_ROWS, not a few statements per tenant — on
   * PostgreSQL every statement is a round trip made while holding the write lock that config
   * commits wait for, and on SQLite every statement runs on the event loop. Between batches the
   * event loop gets a turn.
   */
  async ingest(r: UsageReport, timeZoneOf: (tenant: string) => string, limits: DailyLimits): Promise<{ accepted: boolean; alerts: Alert[]; saturated: SaturatedCounter[] }> {
    const at = new Date(r.at)
    // One instant: one day per time zone (formatToParts per tenant held the loop ~0.3 s for 100k tenants).
    const dayIn = new Map<string, string>()
    const dayOf = (tz: string): string => {
      let day = dayIn.get(tz)
      if (day === undefined) dayIn.set(tz, (day = localDay(at, tz)))
      return day
    }
    const entries: ReportedTenant[] = Object.entries(r.tenants).map(([tenant, u]) => ({ tenant, u, day: dayOf(timeZoneOf(tenant)) }))
    // (tenant, day, metric) is unique within a report: a tenant is one key of `tenants` with one
    // day, and flattenUsage's metric names are distinct. So no row meets ON CONFLICT twice.
    const all = entries.flatMap((e) => flattenUsage(e.u).map(([metric, value]): [string, string, string, number] => [e.tenant, e.day, metric, value]))
    return this.#db.transaction(async (tx) => {
      const now = Date.now()
      const found = await tx.query<{ boot_id: string | null; usage_seq: unknown }>('SELECT boot_id, usage_seq FROM proxies WHERE id = $1', [r.proxyId])
      const p = found[0]
      const boots = p === undefined ? [] : readUsageBoots(p.boot_id, num(p.usage_seq))
      const counted = boots.find(([boot]) => boot === r.bootId)
      if (counted !== undefined && counted[1] >= r.seq) return { accepted: false, alerts: [], saturated: [] }
      const marks = writeUsageBoots(boots, r.bootId, r.seq)
      if (p === undefined) {
        // An upsert: the config stream writes the row outside this transaction (and without the
        // write lock), so a new proxy's first stream may insert it after the SELECT above — a
        // plain INSERT then failed on the primary key and the report with a 500. That row holds
        // no usage high-water (usage_seq 0), so nothing counted is lost by taking ours.
        await tx.query(
          'INSERT INTO proxies (id, boot_id, first_seen, last_seen, usage_seq) VALUES ($1, $2, $3, $3, $4) ON CONFLICT (id) DO UPDATE SET boot_id = excluded.boot_id, usage_seq = excluded.usage_seq, last_seen = excluded.last_seen',
          [r.proxyId, marks, now, r.seq],
        )
      } else {
        await tx.query('UPDATE proxies SET boot_id = $2, usage_seq = $3, last_seen = $4 WHERE id = $1', [r.proxyId, marks, r.seq, now])
      }
      const saturated: SaturatedCounter[] = []
      for (let i = 0; i < all.length; i += BATCH_ROWS) {
        const batch = all.slice(i, i + BATCH_ROWS)
        // RETURNING gives each written row as it now stands (both engines), flagged when it is at
        // the limit: the caller logs and counts those (the report itself is accepted).
        const written = await tx.query<{ tenant: string; day: string; metric: string; saturated: unknown }>(
          `INSERT INTO usage_daily (tenant, day, metric, value) VALUES ${placeholders(batch.length, 4)} ON CONFLICT (tenant, day, metric) DO UPDATE SET value = ${SATURATING_SUM} RETURNING tenant, day, metric, CASE WHEN value >= ${USAGE_COUNTER_MAX} THEN 1 ELSE 0 END AS saturated`,
          batch.flat(),
        )
        for (const w of written) if (num(w.saturated) === 1) saturated.push({ tenant: w.tenant, day: w.day, metric: w.metric })
        if (i + BATCH_ROWS < all.length) await yieldToEventLoop()
      }
      return { accepted: true, alerts: await this.#checkAlerts(tx, entries, limits, now), saturated }
    })
  }

  async #checkAlerts(tx: Tx, entries: ReportedTenant[], limits: DailyLimits, now: number): Promise<Alert[]> {
    const out: Alert[] = []
    const raise = async (a: Omit<Alert, 'at'>) => {
      const r = await tx.query('INSERT INTO alerts (id, at, tenant, kind, severity, message, detail) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING id', [
        a.id,
        now,
        a.tenant,
        a.kind,
        a.severity,
        a.message,
        canonicalJson(a.detail),
      ])
      if (r.length > 0) out.push({ ...a, at: new Date(now).toISOString() })
    }
    // The tenants of a report, by the local day they counted on (one or two days in practice).
    const byDay = new Map<string, string[]>()
    for (const e of entries) {
      const list = byDay.get(e.day)
      if (list === undefined) byDay.set(e.day, [e.tenant])
      else list.push(e.tenant)
    }
    for (const [day, tenants] of byDay) {
      // Budgets: the daily quota limits; 80% and 100% each raise one event per tenant, kind and day.
      const withLimits = tenants.filter((t) => limits.limited(t))
      for (let i = 0; i < withLimits.length; i += BATCH_ROWS) {
        const batch = withLimits.slice(i, i + BATCH_ROWS)
        const used = await tx.query<{ tenant: string; metric: string; value: unknown }>(
          `SELECT tenant, metric, value FROM usage_daily WHERE day = $1 AND metric LIKE 'kind.%' AND tenant IN (${placeholders(batch.length, 1, 2)})`,
          [day, ...batch],
        )
        for (const row of used) {
          const kind = row.metric.slice(5)
          const limit = limits.of(row.tenant, kind)
          if (limit === undefined || limit <= 0) continue
          const value = num(row.value)
          for (const pct of [80, 100] as const) {
            if (value * 100 >= limit * pct) {
              await raise({
                id: `budget:${row.tenant}:${kind}:${day}:${pct}`,
                tenant: row.tenant,
                kind: pct === 80 ? 'budget.80' : 'budget.100',
                severity: pct === 80 ? 'warning' : 'critical',
                message: `tenant ${row.tenant} used ${value} of ${limit} ${kind} units today (${day}): ${pct === 80 ? 'over 80%' : 'budget exhausted'}`,
                detail: { kind, day, used: value, limit, threshold: pct },
              })
            }
          }
        }
      }
      // Anomaly: today's volume over 3× the average of the previous 7 days (with at least 3 of
      // them), and at least MIN_VOLUME_ALERT_REQUESTS today. The previous 7 calendar days, not
      // the 7 latest days with traffic: a tenant back after weeks away was measured against
      // traffic from months ago, and every report read each of its tenants' whole history (all
      // of it, under the write lock) to find those.
      const weekBefore = daysBefore(day, 7)
      for (let i = 0; i < tenants.length; i += BATCH_ROWS) {
        const batch = tenants.slice(i, i + BATCH_ROWS)
        const inList = placeholders(batch.length, 1, 3)
        const hist = await tx.query<{ tenant: string; value: unknown }>(
          `SELECT tenant, value FROM usage_daily WHERE metric = 'requests' AND day < $1 AND day >= $2 AND tenant IN (${inList})`,
          [day, weekBefore, ...batch],
        )
        const history = new Map<string, number[]>()
        for (const h of hist) {
          const list = history.get(h.tenant)
          if (list === undefined) history.set(h.tenant, [num(h.value)])
          else list.push(num(h.value))
        }
        const candidates = batch.filter((t) => (history.get(t)?.length ?? 0) >= 3)
        if (candidates.length > 0) {
          const today = await tx.query<{ tenant: string; value: unknown }>(
            `SELECT tenant, value FROM usage_daily WHERE metric = 'requests' AND day = $1 AND tenant IN (${placeholders(candidates.length, 1, 2)})`,
            [day, ...candidates],
          )
          const todays = new Map(today.map((t) => [t.tenant, num(t.value)]))
          for (const tenant of candidates) {
            const values = history.get(tenant)!
            const avg = values.reduce((a, b) => a + b, 0) / values.length
            const v = todays.get(tenant) ?? 0
            if (avg > 0 && v > 3 * avg && v >= MIN_VOLUME_ALERT_REQUESTS) {
              await raise({
                id: `anomaly.volume:${tenant}:${day}`,
                tenant,
                kind: 'anomaly.volume',
                severity: 'warning',
                message: `tenant ${tenant}: ${v} requests today, over 3× the recent daily average (${Math.round(avg)})`,
                detail: { day, requests: v, average: avg, days: values.length },
              })
            }
          }
        }
        if (i + BATCH_ROWS < tenants.length) await yieldToEventLoop()
      }
    }
    // Anomaly: most of an interval's requests refused by the gateway (abuse, a broken client,
    // or a limit set too low). One alert per tenant per hour.
    for (const { tenant, u } of entries) {
      const rejected = Object.values(u.rejections ?? {}).reduce((a, b) => a + b, 0)
      if (u.requests >= 20 && rejected * 2 > u.requests) {
        const hour = new Date(now).toISOString().slice(0, 13)
        await raise({
          id: `anomaly.rejections:${tenant}:${hour}`,
          tenant,
          kind: 'anomaly.rejections',
          severity: 'warning',
          message: `tenant ${tenant}: ${rejected} of ${u.requests} requests refused in one report interval`,
          detail: { requests: u.requests, rejected, rejections: u.rejections ?? {} },
        })
      }
    }
    return out
  }

  async days(tenant: string, from: string, to: string): Promise<DayTotals[]> {
    const rows = await this.#db.query<{ day: string; metric: string; value: unknown }>('SELECT day, metric, value FROM usage_daily WHERE tenant = $1 AND day >= $2 AND day <= $3 ORDER BY day', [tenant, from, to])
    const byDay = new Map<string, DayTotals>()
    for (const r of rows) {
      let d = byDay.get(r.day)
      if (d === undefined) byDay.set(r.day, (d = emptyDay(r.day)))
      addMetric(d, r.metric, num(r.value))
    }
    return [...byDay.values()]
  }

  /** A signed statement: per-day totals and their sum; the signature covers the canonical JSON. */
  async statement(tenant: string, tenantId: string | undefined, timeZone: string, from: string, to: string) {
    const days = await this.days(tenant, from, to)
    const totals = emptyCounters()
    for (const d of days) addCounters(totals, d)
    const body = { tenant, tenantId: tenantId ?? null, timezone: timeZone, from, to, generatedAt: new Date().toISOString(), days, totals }
    return { ...body, keyId: this.#key.keyId, signature: this.#key.sign(canonicalJson(body)) }
  }

  /** Units used today per kind for a tenant (the GraphQL Quota.usedToday). */
  async usedToday(tenant: string, timeZone: string, now = new Date()): Promise<Map<string, number>> {
    const day = localDay(now, timeZone)
    const rows = await this.#db.query<{ metric: string; value: unknown }>("SELECT metric, value FROM usage_daily WHERE tenant = $1 AND day = $2 AND metric LIKE 'kind.%'", [tenant, day])
    return new Map(rows.map((r) => [r.metric.slice(5), num(r.value)]))
  }

  /**
   * Alerts newest first (`at` descending, then `id`); `after` is the last alert of the previous
   * page (its epoch ms and id): only those that sort after it are listed.
   */
  async alerts(opts: { since?: number; tenant?: string; limit?: number; after?: { at: number; id: string } } = {}): Promise<Alert[]> {
    // 1001: the API asks for one more than its largest page, to know whether a next page exists.
    const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1001)
    const params: SqlValue[] = [opts.since ?? 0, limit]
    let where = 'at >= $1'
    if (opts.tenant) {
      params.push(opts.tenant)
      where += ` AND tenant = $${params.length}`
    }
    if (opts.after !== undefined) {
      params.push(opts.after.at, opts.after.id)
      where += ` AND (at < $${params.length - 1} OR (at = $${params.length - 1} AND id > $${params.length}))`
    }
    const rows = await this.#db.query<Record<string, unknown>>(`SELECT * FROM alerts WHERE ${where} ORDER BY at DESC, id LIMIT $2`, params)
    return rows.map((r) => ({
      id: r.id as string,
      at: new Date(num(r.at)).toISOString(),
      tenant: (r.tenant as string | null) ?? null,
      kind: r.kind as Alert['kind'],
      severity: r.severity as Alert['severity'],
      message: r.message as string,
      detail: JSON.parse(r.detail as string) as Record<string, unknown>,
    }))
  }
}
