// The top-level `quotas:` section: per-tenant, per-kind cost controls (token buckets, daily
// hard quotas, rolling budgets), QoS shedding, Redis outage policy, events. The quota filter
// entry on a route only says which kind the route is (config/filters/quota.ts); the numbers
// live here, where the control plane writes them (`api_quotas(tenant_id, kind, limit_per_day)`
// becomes `quotas.tenants.<id>.<kind>.limitPerDay`).
import { z } from 'zod'
import { httpUrl, tenantId, type Parsed } from './primitives.ts'
import { QUOTA_KINDS } from './quota-usage.ts'

export { QUOTA_KINDS }
export const quotaKind = z.enum(QUOTA_KINDS)
export type QuotaKind = z.infer<typeof quotaKind>

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** "30d", "1h", "90s", "250ms" or a number of milliseconds → ms (NaN when not a duration). */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') return value
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/i.exec(value)
  if (!m) return Number.NaN
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!)
}

const DURATION_MESSAGE = 'expected a duration such as "30d", "1h", "15m" or a number of milliseconds'
/**
 * The longest budget window or bucket: a leap year. Unbounded ("20000000000000d" passed as
 * 1.7e21 ms), a bucket longer than the time since 1970 put every instant in bucket 0, which the
 * shared table reads as a ring never used: reset on each request, a hard cap admitted everything.
 */
export const MAX_BUDGET_DURATION_MS = 366 * 86_400_000
const duration = z.union([z.int().positive(), z.string()], { error: DURATION_MESSAGE }).transform((v, ctx) => {
  const ms = parseDuration(v)
  if (!Number.isFinite(ms) || ms <= 0) {
    ctx.addIssue({ code: 'custom', message: DURATION_MESSAGE, input: v })
    return z.NEVER
  }
  if (ms > MAX_BUDGET_DURATION_MS) {
    ctx.addIssue({ code: 'custom', message: `expected at most 366 days (${MAX_BUDGET_DURATION_MS} ms)`, input: v })
    return z.NEVER
  }
  return ms
})

/**
 * Limits of one kind for one tenant (or the defaults). Every field is optional so a tenant entry
 * overrides the defaults field by field; `null` removes an inherited limit ("unlimited").
 */
export const kindLimits = z.strictObject({
  /** Sustained rate in cost units per second (the token bucket's refill). */
  rate: z.number().positive().max(1e9).nullable().optional(),
  /** Bucket size: cost units that may be spent at once. Default: max(1, rate) (one second's worth). */
  burst: z.number().positive().max(1e9).nullable().optional(),
  /** Daily hard quota in cost units; resets at midnight in the tenant's `timezone`. */
  limitPerDay: z.int().nonnegative().nullable().optional(),
  /** Requests (subscriptions) of this kind open at once, per proxy process. */
  maxConcurrent: z.int().positive().nullable().optional(),
  /** Decide and count (`igw_quota_would_reject_total`) but never reject: try a limit on live traffic. */
  shadow: z.boolean().optional(),
})
export type KindLimits = z.infer<typeof kindLimits>

export const budgetConfig = z
  .strictObject({
    /** Cost units allowed over the rolling window. */
    units: z.int().positive(),
    /** Rolling window length. */
    window: duration.default(30 * 86_400_000),
    /** Granularity of the rolling window (usage older than window, by bucket, drops out). */
    bucket: duration.default(3_600_000),
    /** Reject with BUDGET_EXHAUSTED once the window's usage reaches `units`; otherwise only events. */
    hardCap: z.boolean().default(false),
    /** Usage ratios that emit an event, each at most once per window per tenant. */
    thresholds: z.array(z.number().positive().max(1)).min(1).max(4).default([0.8, 1]),
    shadow: z.boolean().default(false),
  })
  .refine((b) => b.window % b.bucket === 0, { error: 'expected window to be a whole number of buckets' })
  .refine((b) => b.window / b.bucket <= 744, { error: 'expected at most 744 buckets per window (e.g. 31 days of 1 h)' })
export type BudgetConfig = z.infer<typeof budgetConfig>

const tenantQuotas = z.strictObject({
  graphql: kindLimits.optional(),
  ingest: kindLimits.optional(),
  embeddings: kindLimits.optional(),
  subscriptions: kindLimits.optional(),
  /** Rolling budget over all kinds; `null` removes the default budget for this tenant. */
  budget: budgetConfig.nullable().optional(),
})
export type TenantQuotas = z.infer<typeof tenantQuotas>

const tierScale = z.number().positive().max(1000)

export const quotasConfig = z.strictObject({
  /** Limits every tenant gets unless its own entry overrides them (scaled by its tier). */
  defaults: tenantQuotas.prefault({}),
  /** Per-tenant limits (ids must be listed under `tenants:`); taken as written, not scaled. */
  tenants: z.record(tenantId, tenantQuotas).default({}),
  /** Multipliers of the default `rate` and `burst` by tier. */
  tiers: z
    .strictObject({ gold: tierScale.default(2), silver: tierScale.default(1), bronze: tierScale.default(0.5) })
    .prefault({}),
  /** Load shedding by tier. Off unless maxInFlight or maxEventLoopDelayMs is set. */
  qos: z
    .strictObject({
      /** Requests in flight on quota routes across all worker threads of this process. */
      maxInFlight: z.int().positive().optional(),
      /** Event-loop delay (p90 over the last ~0.5 s of the worker thread) counted as full load. */
      maxEventLoopDelayMs: z.number().positive().optional(),
      /** A tier is shed once load (the larger of the two ratios) reaches this fraction. */
      shedAt: z
        .strictObject({ gold: z.number().positive().max(10).default(1), silver: z.number().positive().max(10).default(0.85), bronze: z.number().positive().max(10).default(0.7) })
        // Priority shedding: a higher tier is never shed while a lower one is still admitted.
        .refine((t) => t.gold >= t.silver && t.silver >= t.bronze, { message: 'expected gold ≥ silver ≥ bronze (a higher tier is shed last)' })
        .prefault({}),
      retryAfterSeconds: z.int().positive().default(1),
    })
    .prefault({}),
  redis: z
    .strictObject({
      /** Longest a request waits for Redis before the outage policy decides it. */
      budgetMs: z.number().positive().max(1000).default(5),
      /**
       * fail-open: decide on the local limiter (full limits). local-share: local limiter at
       * limit ÷ live proxies. fail-closed: 503 OVERLOADED.
       */
      onOutage: z.enum(['fail-open', 'local-share', 'fail-closed']).default('fail-open'),
      /** Consecutive failures (errors or timeouts) that open the circuit breaker… */
      breakerFailures: z.int().positive().default(3),
      /** …when they also span this long without a success (one stall is not an outage). */
      breakerAfterMs: z.int().nonnegative().default(50),
      /** Time the breaker stays open before one probe request tries Redis again. */
      breakerOpenMs: z.int().positive().default(1_000),
      /** Each proxy announces itself this often; proxies silent for 3 periods are not counted. */
      heartbeatMs: z.int().min(50).default(2_000),
    })
    .prefault({}),
  /** Budget threshold and anomaly events: always logged and counted; POSTed when a webhook is set. */
  events: z
    .strictObject({
      webhook: z
        .strictObject({
          url: httpUrl,
          headers: z.record(z.string(), z.string()).default({}),
          /** Attempts in all (first try included); retried on network errors, 429 and 5xx. */
          maxAttempts: z.int().min(1).max(20).default(5),
          /** First retry delay; doubles per attempt. */
          backoffMs: z.int().positive().default(250),
          timeoutMs: z.int().positive().default(2_000),
        })
        .optional(),
    })
    .prefault({}),
  /** Per-tenant request rate against its own EWMA baseline. */
  anomaly: z
    .strictObject({
      enabled: z.boolean().default(false),
      intervalMs: z.int().min(100).default(10_000),
      /** Weight of the newest interval in the baseline (EWMA α). */
      alpha: z.number().gt(0).lt(1).default(0.1),
      /** Alert when (rate − baseline) / stddev exceeds this. */
      zThreshold: z.number().positive().default(4),
      /** The alert clears (and may fire again) only once z stays below this for `clearIntervals`. */
      clearZ: z.number().nonnegative().default(2),
      clearIntervals: z.int().positive().default(3),
      /** Intervals of history before a tenant can alert. */
      warmupIntervals: z.int().nonnegative().default(6),
      /** Requests per interval below which a tenant never alerts (tiny numbers are noise). */
      minRequests: z.int().nonnegative().default(20),
      /** Across proxies (Redis), one alert per tenant per this period. */
      cooldownMs: z.int().positive().default(600_000),
    })
    .prefault({}),
  /**
   * Without Redis: daily usage and budgets are saved here (periodically and on shutdown) and restored
   * at start. With Redis: outage usage Redis has not taken at shutdown is saved beside it and pushed
   * by the next start.
   */
  stateFile: z.string().min(1).optional(),
  flushIntervalMs: z.int().min(100).default(5_000),
})
export type QuotasConfig = z.infer<typeof quotasConfig>

interface RefineCtx {
  addIssue(issue: { code: 'custom'; path: PropertyKey[]; message: string }): void
}

/**
 * Cross-section rules, called from the document's superRefine: quota tenants must exist under
 * `tenants:` (a typo would silently give a tenant the defaults), and a quota filter must come
 * after the tenant filter in a chain (before it, every request would look anonymous).
 */
export function checkQuotaReferences(
  cfg: { quotas: QuotasConfig; tenants: Record<string, unknown>; routes: { filters: { name: string }[] }[] },
  ctx: RefineCtx,
  parsed: Parsed,
): void {
  if (parsed(['quotas', 'tenants'])) {
    for (const id of Object.keys(cfg.quotas.tenants)) {
      if (parsed(['tenants', id]) && !Object.hasOwn(cfg.tenants, id)) ctx.addIssue({ code: 'custom', path: ['quotas', 'tenants', id], message: `unknown tenant "${id}" (list it under tenants:)` })
    }
  }
  if (!parsed(['routes'])) return
  cfg.routes.forEach((route, i) => {
    if (!parsed(['routes', i, 'filters']) || route.filters.some((_, j) => !parsed(['routes', i, 'filters', j, 'name']))) return
    const q = route.filters.findIndex((f) => f.name === 'quota')
    const t = route.filters.findIndex((f) => f.name === 'tenant')
    if (q !== -1 && t > q) ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', q], message: 'quota must come after the tenant filter (it limits per tenant)' })
  })
}
