// The limits that apply to one (tenant, kind), resolved once from the config document:
// the tenant's own entry overrides the defaults field by field, and inherited (default) rates
// and bursts are scaled by the tenant's tier. Everything is pre-converted to the integer units
// the decision code uses.
import { zoneCode } from '../../config/quota-usage.ts'
import { DEFAULT_TIER } from '../../config/defaults.ts'
import type { Tier } from '../../config/primitives.ts'
import type { BudgetConfig, KindLimits, QuotaKind, QuotasConfig } from '../../config/quotas.ts'
import type { BudgetShape } from './rolling-budget.ts'
import { MICRO, ratePerMs, toMicro } from './token-bucket.ts'

export const KIND_INDEX: Record<QuotaKind, number> = { graphql: 0, ingest: 1, embeddings: 2, subscriptions: 3 }

// Rule bits (reasons, shadow masks).
export const RULE_RATE = 1
export const RULE_DAILY = 2
export const RULE_BUDGET = 4
export const RULE_CONCURRENT = 8

export interface BudgetRule extends BudgetShape {
  hardCap: boolean
  shadow: boolean
}

export interface KindRule {
  kind: QuotaKind
  kindIndex: number
  tier: Tier
  timeZone: string
  /** zoneCode(timeZone): what the shared table and Redis keep with a day number (0: not known). */
  zoneCode?: number
  /** Units per second (0 = no bucket). */
  rate: number
  burst: number
  /** Micro-units per ms and micro-units (the bucket in fixed point). */
  perMs: number
  capacity: number
  /** -1 = no daily quota. */
  limitPerDay: number
  /** 0 = no concurrency limit. */
  maxConcurrent: number
  budget: BudgetRule | undefined
  /** RULE_* bits of rules that only count. */
  shadowMask: number
  /** Anything besides concurrency to decide? */
  metered: boolean
  /**
   * Can a metered rule refuse (an enforced bucket, daily quota or hard-capped budget)? Shadow
   * rules and a budget without hardCap only count: a Redis outage never refuses for them.
   */
  refuses: boolean
  /**
   * The largest cost (units) the enforced rules can ever admit — the smallest of the burst, the
   * day's limit and a hard-capped budget; Infinity when none bounds it — and the RULE_* whose
   * limit it is (0: none). A larger request is refused at once and for good: no wait frees it.
   */
  maxCost: number
  maxCostRule: number
  /** The same over shadow rules as well (what a shadow rule would refuse for good). */
  maxCostShadow: number
}

/** The smallest static limit a single request must fit in, over the rules in `mask`. */
function costCeiling(perMs: number, capacity: number, limitPerDay: number, budget: BudgetRule | undefined, mask: number): { max: number; rule: number } {
  let max = Number.POSITIVE_INFINITY
  let rule = 0
  if ((mask & RULE_BUDGET) !== 0 && budget !== undefined && budget.hardCap && budget.units < max) {
    max = budget.units
    rule = RULE_BUDGET
  }
  // A day's limit of 0 is a kind switched off for the tenant (the control plane's suspension),
  // not a request too large for it: that stays QUOTA_EXCEEDED, as a used-up day.
  if ((mask & RULE_DAILY) !== 0 && limitPerDay > 0 && limitPerDay <= max) {
    max = limitPerDay
    rule = RULE_DAILY
  }
  // Whole micro-units: a cost over capacity / 10^6 is more than the bucket ever holds.
  if ((mask & RULE_RATE) !== 0 && perMs > 0 && capacity / MICRO <= max) {
    max = capacity / MICRO
    rule = RULE_RATE
  }
  return { max, rule }
}

function pick<K extends keyof KindLimits>(own: KindLimits | undefined, key: K): { set: boolean; value: KindLimits[K] } {
  if (own !== undefined && own[key] !== undefined) return { set: true, value: own[key] }
  return { set: false, value: undefined }
}

export function budgetRule(b: BudgetConfig): BudgetRule {
  return {
    units: b.units,
    windowMs: b.window,
    bucketMs: b.bucket,
    buckets: b.window / b.bucket,
    // Ascending (the script stops at the first one not reached), each once: a threshold listed
    // twice fired twice (two log lines, events and webhook POSTs with one id).
    thresholds: [...new Set(b.thresholds)].sort((x, y) => x - y),
    hardCap: b.hardCap,
    shadow: b.shadow,
  }
}

export function resolveRule(q: QuotasConfig, tenant: string | undefined, kind: QuotaKind, tier: Tier | undefined, timeZone: string | undefined, routeShadow: boolean): KindRule {
  const t: Tier = tier ?? DEFAULT_TIER
  const scale = q.tiers[t]
  const entry = tenant !== undefined && Object.hasOwn(q.tenants, tenant) ? q.tenants[tenant] : undefined
  const own = entry?.[kind]
  const def = q.defaults[kind]

  const ownRate = pick(own, 'rate')
  let rate = 0
  if (ownRate.set) rate = ownRate.value ?? 0
  else if (def?.rate != null) rate = def.rate * scale

  const ownBurst = pick(own, 'burst')
  let burst = 0
  if (ownBurst.set && ownBurst.value != null) burst = ownBurst.value
  else if (!ownBurst.set && def?.burst != null) burst = def.burst * scale
  if (rate > 0 && burst <= 0) burst = Math.max(1, rate)
  // The smallest cost is one unit: a bucket that cannot hold one (a tier multiplier under 1 on
  // an inherited burst of 1, or a burst written as 0.5) would refuse every request forever.
  if (rate > 0 && burst < 1) burst = 1
  // The bucket refills in whole micro-units per ms: 1/1000 unit/s is the finest rate it has. A
  // smaller one (a bronze multiplier on an inherited 0.001, or 0.0001 as written) must not round
  // to no refill, which is no bucket at all: an unlimited tenant. It is enforced (and
  // advertised) at that finest rate. Any rate is advertised as the bucket enforces it
  // (0.0005 and 0.0014 refill at 0.001/s; RateLimit-Policy and messages said 0.0005, 0.0014).
  if (rate > 0) rate = Math.max(1, ratePerMs(rate)) / 1000

  const ownDaily = pick(own, 'limitPerDay')
  const daily = ownDaily.set ? ownDaily.value : def?.limitPerDay
  const ownConc = pick(own, 'maxConcurrent')
  const conc = ownConc.set ? ownConc.value : def?.maxConcurrent
  const shadow = routeShadow || (own?.shadow ?? def?.shadow ?? false)

  const tenantBudget = entry?.budget
  const b = tenantBudget !== undefined ? tenantBudget : q.defaults.budget
  const budget = b == null ? undefined : budgetRule(b)

  let shadowMask = shadow ? RULE_RATE | RULE_DAILY | RULE_CONCURRENT : 0
  if (budget !== undefined && (budget.shadow || routeShadow)) shadowMask |= RULE_BUDGET
  const limitPerDay = daily == null ? -1 : daily
  const perMs = rate > 0 ? ratePerMs(rate) : 0
  const capacity = rate > 0 ? toMicro(burst) : 0
  const all = RULE_RATE | RULE_DAILY | RULE_BUDGET
  const enforced = costCeiling(perMs, capacity, limitPerDay, budget, all & ~shadowMask)
  return {
    kind,
    kindIndex: KIND_INDEX[kind],
    tier: t,
    timeZone: timeZone ?? 'UTC',
    zoneCode: zoneCode(timeZone ?? 'UTC'),
    rate,
    burst,
    perMs,
    capacity,
    limitPerDay,
    maxConcurrent: conc == null ? 0 : conc,
    budget,
    shadowMask,
    metered: rate > 0 || limitPerDay >= 0 || budget !== undefined,
    refuses: (((perMs > 0 ? RULE_RATE : 0) | (limitPerDay >= 0 ? RULE_DAILY : 0) | (budget?.hardCap ? RULE_BUDGET : 0)) & ~shadowMask) !== 0,
    maxCost: enforced.max,
    maxCostRule: enforced.rule,
    maxCostShadow: costCeiling(perMs, capacity, limitPerDay, budget, all).max,
  }
}
