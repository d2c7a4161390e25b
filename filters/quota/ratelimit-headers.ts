// RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers-11): Structured Field
// Lists of String items with Integer parameters. Policy names are fixed: "rate" (the token
// bucket: q = burst, w = seconds to refill it), "daily" (q = limitPerDay, w = the length of the
// tenant's current day: 86400, or 82800 / 90000 on the days its zone changes clocks), "budget"
// (the rolling budget: q = units, w = window), "concurrent" (qu = "concurrent-requests").
// Units are cost units (1 per request unless a cost filter says more). Only policies that can
// refuse are advertised: clients read a policy as a limit they will be refused at, and a budget
// without hardCap only counts (events, gauges), as a shadow rule does.
import { RULE_BUDGET, RULE_CONCURRENT, RULE_DAILY, RULE_RATE, type BudgetRule, type KindRule } from './rules.ts'
import { MICRO, msUntilFull } from './token-bucket.ts'

/** A budget that refuses (hardCap, not shadow): the only kind a client must plan around. */
function enforcedBudget(rule: KindRule): BudgetRule | undefined {
  const b = rule.budget
  return b !== undefined && b.hardCap && (rule.shadowMask & RULE_BUDGET) === 0 ? b : undefined
}

function seconds(ms: number): number {
  return ms <= 0 ? 0 : Math.ceil(ms / 1000)
}

/**
 * RFC 9651 §3.3.1: a structured field Integer has at most 15 digits, and a field with a longer
 * one fails to parse as a whole. limitPerDay, budget units and maxConcurrent go up to 2^53 (16
 * digits), a budget window of huge buckets further: one such figure made clients drop the whole
 * RateLimit-Policy / RateLimit, every other policy in it too. Capped: a limit that large is
 * never reached anyway.
 */
const SF_INT_MAX = 999_999_999_999_999

function sfInt(n: number): number {
  return n > SF_INT_MAX ? SF_INT_MAX : n
}

/**
 * The RateLimit-Policy value for a rule (undefined when nothing enforced is advertised), on a
 * day of `dayMs` (the daily quota's window: the day it resets at the end of). Constant per rule
 * and day length: build once (see advertisesDay).
 */
export function policyHeader(rule: KindRule, dayMs = 86_400_000): string | undefined {
  const items: string[] = []
  const hidden = rule.shadowMask
  if (rule.perMs > 0 && (hidden & RULE_RATE) === 0) items.push(`"rate";q=${Math.max(1, Math.floor(rule.burst))};w=${sfInt(Math.max(1, Math.ceil(rule.burst / rule.rate)))}`)
  if (advertisesDay(rule)) items.push(`"daily";q=${sfInt(rule.limitPerDay)};w=${Math.round(dayMs / 1000)}`)
  const b = enforcedBudget(rule)
  if (b !== undefined) items.push(`"budget";q=${sfInt(b.units)};w=${sfInt(Math.ceil(b.windowMs / 1000))}`)
  if (rule.maxConcurrent > 0 && (hidden & RULE_CONCURRENT) === 0) items.push(`"concurrent";q=${sfInt(rule.maxConcurrent)};qu="concurrent-requests"`)
  return items.length ? items.join(', ') : undefined
}

/** Does the rule's RateLimit-Policy have a "daily" item (whose window is the day's length)? */
export function advertisesDay(rule: KindRule): boolean {
  return rule.limitPerDay >= 0 && (rule.shadowMask & RULE_DAILY) === 0
}

/** The live figures a RateLimit value is built from (a Verdict satisfies it). */
export interface LimitFigures {
  tokens: number
  capacity: number
  perMs: number
  used: number
  dayLimit: number
  budgetTotal: number
}

export interface RateLimitValue {
  value: string
  /** The most constrained item, for the legacy X-RateLimit-* headers. */
  legacyLimit: number
  legacyRemaining: number
  legacyReset: number
  /** remaining ÷ limit of the legacy item (internal). */
  legacyRatio: number
}

function consider(out: RateLimitValue, limit: number, remaining: number, reset: number): void {
  const ratio = limit > 0 ? remaining / limit : 0
  if (ratio < out.legacyRatio) {
    out.legacyRatio = ratio
    out.legacyLimit = limit
    out.legacyRemaining = remaining
    out.legacyReset = reset
  }
}

/**
 * The RateLimit value for an admitted request: one item per enforced rule. `t` is the effective
 * window: until the bucket is full, until the tenant's midnight, until the budget's next bucket.
 */
export function rateLimitHeader(rule: KindRule, f: LimitFigures, now: number, msToEndOfDay: number, concurrentFree: number, out: RateLimitValue): RateLimitValue {
  let value = ''
  out.legacyRatio = Number.POSITIVE_INFINITY
  const hidden = rule.shadowMask
  if (rule.perMs > 0 && (hidden & RULE_RATE) === 0) {
    const r = Math.max(0, Math.floor(f.tokens / MICRO))
    const t = seconds(msUntilFull(f.tokens, f.capacity, f.perMs))
    value = `"rate";r=${r};t=${t}`
    consider(out, Math.max(1, Math.floor(f.capacity / MICRO)), r, t)
  }
  if (rule.limitPerDay >= 0 && (hidden & RULE_DAILY) === 0) {
    const r = Math.max(0, f.dayLimit - f.used)
    const t = seconds(msToEndOfDay)
    value += `${value ? ', ' : ''}"daily";r=${sfInt(r)};t=${t}`
    consider(out, f.dayLimit, r, t)
  }
  const b = enforcedBudget(rule)
  if (b !== undefined) {
    const r = Math.max(0, b.units - f.budgetTotal)
    const t = seconds(b.bucketMs - (now % b.bucketMs))
    value += `${value ? ', ' : ''}"budget";r=${sfInt(r)};t=${sfInt(t)}`
    consider(out, b.units, r, t)
  }
  if (rule.maxConcurrent > 0 && (hidden & RULE_CONCURRENT) === 0) {
    value += `${value ? ', ' : ''}"concurrent";r=${sfInt(Math.max(0, concurrentFree))}`
    consider(out, rule.maxConcurrent, Math.max(0, concurrentFree), 0)
  }
  out.value = value
  return out
}

export const POLICY_NAME: Record<number, string> = { [RULE_RATE]: 'rate', [RULE_DAILY]: 'daily', [RULE_BUDGET]: 'budget', [RULE_CONCURRENT]: 'concurrent' }

/**
 * The RateLimit value of a rejected request: only the violated policy, with r=0 and t equal to
 * Retry-After (the draft: Retry-After must not point before the end of any effective window in
 * the same response, so windows longer than the wait are left out).
 */
export function rejectedRateLimitHeader(reason: number, remaining: number, retryAfterSeconds: number): string {
  return `"${POLICY_NAME[reason]}";r=${sfInt(Math.max(0, remaining))};t=${sfInt(retryAfterSeconds)}`
}
