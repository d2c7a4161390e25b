// One quota decision against the process-wide shared table: token bucket, daily quota and
// rolling budget checked together and consumed together under the (tenant, kind) lock, so N
// worker threads enforce one limit exactly. Used on its own (no Redis), and as the fallback
// while Redis is unreachable — then it continues from the last state Redis reported, scaled
// by `scale` (1 for fail-open, 1 / live proxies for local-share).
import { advance, add, crossedThresholds, retryAt, total } from './rolling-budget.ts'
import { RULE_BUDGET, RULE_DAILY, RULE_RATE, type KindRule } from './rules.ts'
import { K_BASE, K_DAY, K_LAST, K_PENDING, K_PREV_DAY, K_PREV_PENDING, K_TOKENS, K_USED, S_MODE, S_ZONE, T_BUDGET_LOCAL, T_BUDGET_MIRROR, type QuotaTable } from './shared-table.ts'
import { MICRO, msUntilAvailable, msUntilFull, refill } from './token-bucket.ts'
import { localDayNumber, zoneOfCode } from '../../config/quota-usage.ts'

/** The outcome of one decision (reused on the synchronous path: no allocation per request). */
export class Verdict {
  allowed = true
  /** The RULE_* that rejected (0 when allowed). */
  reason = 0
  /** RULE_* bits of shadow rules that would have rejected. */
  would = 0
  /** Bucket tokens left (micro-units), and the bucket as it applied (scaled during an outage). */
  tokens = 0
  capacity = 0
  perMs = 0
  /** Units used today after this decision, and the daily limit as it applied (-1: none). */
  used = 0
  dayLimit = -1
  budgetTotal = 0
  /** For a rejection: ms until a retry can pass; -1 = at the end of the tenant's day. */
  retryMs = 0
  /** Budget thresholds crossed by this decision (bit i = thresholds[i]). */
  fired = 0
  /**
   * A refusal whose `reason` is the bucket or the budget when the daily quota refused it too: the
   * filter reports whichever frees up later (it knows the tenant's midnight; this code does not).
   */
  dailyToo = false

  reset(): this {
    this.allowed = true
    this.reason = 0
    this.would = 0
    this.tokens = 0
    this.capacity = 0
    this.perMs = 0
    this.used = 0
    this.dayLimit = -1
    this.budgetTotal = 0
    this.retryMs = 0
    this.fired = 0
    this.dailyToo = false
    return this
  }
}

/**
 * Decide `cost` units for (slot, rule) at `now` (ms) on local day `day`, writing into `v`.
 * `fallback`: Redis is configured but unreachable (the shared table holds its mirror).
 * `redisMs` (fallback only): ms until Redis may decide again (the breaker's next probe). A refusal
 * that this proxy's share can never lift — a cost over its share of the burst, a hard-capped
 * budget's share spent (the local figures only grow until Redis answers) — is told to retry
 * then, not after a refill or a bucket that admits nothing under the share.
 */
export function decideLocal(table: QuotaTable, slot: number, rule: KindRule, cost: number, now: number, day: number, fallback: boolean, scale: number, v: Verdict, redisMs = 0): Verdict {
  v.reset()
  const f = table.f64
  const k = rule.kindIndex
  const iTokens = table.kf(slot, k, K_TOKENS)
  const iLast = iTokens - K_TOKENS + K_LAST
  const iDay = iTokens - K_TOKENS + K_DAY
  const iUsed = iTokens - K_TOKENS + K_USED
  const iBase = iTokens - K_TOKENS + K_BASE
  const iPending = iTokens - K_TOKENS + K_PENDING
  const costM = cost * MICRO
  let ring = -1
  let tenantLocked = false
  table.lockKind(slot, k)
  try {
    // The tenant's time zone changed (a reload): the day number is the other zone's.
    const zc = rule.zoneCode ?? 0
    if (zc !== 0 && table.i32[table.si(slot, S_ZONE + k)] !== zc) rezone(table, slot, k, zc, day, now)
    // A new day resets the daily figures; a day number going back (clock step) does not.
    if (day > f[iDay]!) newDay(f, iTokens - K_TOKENS, day)
    const cap = fallback ? Math.floor(rule.capacity * scale) : rule.capacity
    // A share of the refill is still a refill: rounded down to nothing (rate 0.002/s among 3
    // proxies), the bucket never refilled for the whole outage and a refusal's wait was Infinity.
    const perMs = fallback && rule.perMs > 0 ? Math.max(1, Math.floor(rule.perMs * scale)) : rule.perMs
    if (fallback) {
      const iMode = table.si(slot, S_MODE + k)
      if (table.i32[iMode] === 0) {
        // Entering local decisions after Redis: continue from Redis's last word, our share of it.
        table.i32[iMode] = 1
        f[iBase] = f[iUsed]!
        if (f[iLast] !== 0) f[iTokens] = Math.floor(f[iTokens]! * scale)
      }
    }
    let tokens = 0
    let failed = 0
    if (rule.perMs > 0) {
      if (f[iLast] === 0) {
        f[iTokens] = cap
        f[iLast] = now
      }
      tokens = refill(f[iTokens]!, f[iLast]!, now, perMs, cap)
      if (tokens < costM) failed |= RULE_RATE
    }
    let dayLimit = rule.limitPerDay
    if (dayLimit >= 0) {
      if (fallback) {
        const base = f[iBase]!
        dayLimit = base + Math.floor(Math.max(0, rule.limitPerDay - base) * scale)
      }
      // A limit of 0 switches the kind off (the control plane's suspension).
      if (f[iUsed]! + cost > dayLimit || rule.limitPerDay === 0) failed |= RULE_DAILY
    }
    const budget = rule.budget
    let budgetTotal = 0
    let rb = 0
    if (budget !== undefined) {
      if (!fallback) {
        ring = table.lockRingOf(slot)
        rb = table.ringBase(ring)
        advance(f, rb, now, budget)
        budgetTotal = total(f, rb)
        if (budget.hardCap && budgetTotal + cost > budget.units) failed |= RULE_BUDGET
      } else {
        table.lockTenant(slot)
        tenantLocked = true
        const mirror = f[table.tf(slot, T_BUDGET_MIRROR)]!
        const local = f[table.tf(slot, T_BUDGET_LOCAL)]!
        budgetTotal = mirror + local
        if (budget.hardCap && local + cost > Math.floor(Math.max(0, budget.units - mirror) * scale)) failed |= RULE_BUDGET
      }
    }
    // A cost-0 operation takes nothing, so nothing runs out under it: it passes a day or hard-capped
    // budget used up, also one over its limit (a reload lowered it, an outage's proxies overshot
    // it: it got QUOTA_EXCEEDED / BUDGET_EXHAUSTED there). Only a suspension (limit 0) refuses it.
    if (cost === 0) failed = rule.limitPerDay === 0 ? RULE_DAILY : 0
    const enforced = failed & ~rule.shadowMask
    v.would = failed & rule.shadowMask
    if (enforced !== 0) {
      // Every refusing rule must let the request through before a retry can pass: report the
      // one that frees up last (an empty bucket's "1 s" is wrong when the day is used up too).
      v.allowed = false
      if ((enforced & RULE_RATE) !== 0) {
        v.reason = RULE_RATE
        // Over this proxy's share of the burst (local-share): no refill admits it, only Redis.
        v.retryMs = costM > cap ? redisMs : msUntilAvailable(tokens, costM, perMs)
      }
      if ((enforced & RULE_BUDGET) !== 0) {
        let ms: number
        if (!fallback) {
          ms = retryAt(f, rb, now, budget!, cost) - now
          v.fired = crossedThresholds(f, rb, now, budget!, true)
        } else {
          // The outage's figures never shrink: only Redis can admit it. If even Redis's last word
          // plus this proxy's own use leaves room, that is as soon as Redis answers; if not, the
          // window must move on too (at least a bucket, as before).
          const mirror = f[table.tf(slot, T_BUDGET_MIRROR)]!
          const local = f[table.tf(slot, T_BUDGET_LOCAL)]!
          ms = mirror + local + cost <= budget!.units ? redisMs : Math.max(redisMs, budget!.bucketMs)
        }
        if (v.reason === 0 || ms > v.retryMs) {
          v.reason = RULE_BUDGET
          v.retryMs = ms
        }
      }
      if ((enforced & RULE_DAILY) !== 0) {
        if (fallback && rule.limitPerDay > 0 && f[iUsed]! + cost <= rule.limitPerDay) {
          // Only this proxy's share of the day is spent (local-share): Redis's last word plus this
          // proxy's own use still leaves room, which Redis grants as soon as it answers. Told to
          // come back at the tenant's midnight, clients sat out up to a day with quota left.
          if (v.reason === 0 || redisMs > v.retryMs) {
            v.reason = RULE_DAILY
            v.retryMs = redisMs
          }
        } else if (v.reason === 0) {
          v.reason = RULE_DAILY
          v.retryMs = -1
        } else v.dailyToo = true
      }
    } else {
      if (rule.perMs > 0 && (failed & RULE_RATE) === 0) tokens -= costM
      f[iUsed] = f[iUsed]! + cost
      if (fallback) f[iPending] = f[iPending]! + cost
      if (budget !== undefined) {
        budgetTotal += cost
        if (!fallback) {
          add(f, rb, cost)
          v.fired = crossedThresholds(f, rb, now, budget, false)
        } else {
          f[table.tf(slot, T_BUDGET_LOCAL)] = f[table.tf(slot, T_BUDGET_LOCAL)]! + cost
        }
      }
    }
    if (rule.perMs > 0) {
      f[iTokens] = tokens
      f[iLast] = now
      // Until then the slot is not reclaimed: a tenant readmitted must not find a full bucket sooner.
      table.raiseFullAt(slot, now + msUntilFull(tokens, cap, perMs))
    }
    v.tokens = tokens
    v.capacity = cap
    v.perMs = perMs
    v.used = f[iUsed]!
    v.dayLimit = dayLimit
    v.budgetTotal = budgetTotal
    return v
  } finally {
    if (ring !== -1) table.unlockRing(ring)
    if (tenantLocked) table.unlockTenant(slot)
    table.unlockKind(slot, k)
  }
}

/**
 * Would the bucket, the daily quota or a hard-capped budget refuse `cost` now, and which of them
 * frees up last? Reads the figures without taking anything, for a request another rule (the
 * concurrency slot) refuses first: its answer must name the limit that frees up last, as when
 * several metered rules refuse. `redis`: Redis decides (the table holds what it last reported,
 * plus an outage's own use); a share under local-share is not held against the tenant here.
 * Returns the RULE_* (0: none refuses) with `v.retryMs` (-1: the tenant's midnight), `v.tokens`,
 * `v.used`, `v.dayLimit` and `v.budgetTotal` set; a bucket or budget counts only when its wait
 * passes `overMs` (the other rule's own wait).
 */
export function peekRefusal(table: QuotaTable, slot: number, rule: KindRule, cost: number, now: number, day: number, redis: boolean, overMs: number, v: Verdict): number {
  v.reset()
  const f = table.f64
  const k = rule.kindIndex
  const iTokens = table.kf(slot, k, K_TOKENS)
  const enforced = ~rule.shadowMask
  v.capacity = rule.capacity
  v.perMs = rule.perMs
  v.dayLimit = rule.limitPerDay
  // As in decideLocal: nothing runs out under a cost-0 operation; only a suspension (limit 0) refuses it.
  if (cost === 0) {
    if (rule.limitPerDay !== 0 || (enforced & RULE_DAILY) === 0) return 0
    v.retryMs = -1
    return RULE_DAILY
  }
  let reason = 0
  let daily = false
  table.lockKind(slot, k)
  try {
    if (rule.perMs > 0 && (enforced & RULE_RATE) !== 0) {
      const last = f[iTokens - K_TOKENS + K_LAST]!
      v.tokens = last === 0 ? rule.capacity : refill(f[iTokens]!, last, now, rule.perMs, rule.capacity)
      const ms = msUntilAvailable(v.tokens, cost * MICRO, rule.perMs)
      if (ms > overMs) {
        reason = RULE_RATE
        v.retryMs = ms
      }
    }
    // A day counted in another zone (a reload changed it) is not read here: the decision rezones it.
    const sameZone = (rule.zoneCode ?? 0) === 0 || table.i32[table.si(slot, S_ZONE + k)] === rule.zoneCode
    v.used = sameZone && f[iTokens - K_TOKENS + K_DAY] === day ? f[iTokens - K_TOKENS + K_USED]! : 0
    daily = rule.limitPerDay >= 0 && (enforced & RULE_DAILY) !== 0 && (rule.limitPerDay === 0 || v.used + cost > rule.limitPerDay)
  } finally {
    table.unlockKind(slot, k)
  }
  const budget = rule.budget
  if (budget !== undefined && budget.hardCap && (enforced & RULE_BUDGET) !== 0) {
    let ms = 0
    if (!redis) {
      const ring = table.lockRingOf(slot)
      try {
        const rb = table.ringBase(ring)
        advance(f, rb, now, budget)
        v.budgetTotal = total(f, rb)
        if (v.budgetTotal + cost > budget.units) ms = retryAt(f, rb, now, budget, cost) - now
      } finally {
        table.unlockRing(ring)
      }
    } else {
      table.lockTenant(slot)
      v.budgetTotal = f[table.tf(slot, T_BUDGET_MIRROR)]! + f[table.tf(slot, T_BUDGET_LOCAL)]!
      table.unlockTenant(slot)
      // Redis holds the buckets: the next one to begin is the earliest the window frees units.
      if (v.budgetTotal + cost > budget.units) ms = budget.bucketMs - (now % budget.bucketMs)
    }
    if (ms > overMs && (reason === 0 || ms > v.retryMs)) {
      reason = RULE_BUDGET
      v.retryMs = ms
    }
  }
  // As in decideLocal: the filter weighs the tenant's midnight against the other rule's wait.
  if (daily) {
    if (reason === 0) {
      reason = RULE_DAILY
      v.retryMs = -1
    } else v.dailyToo = true
  }
  return reason
}

/**
 * The kind's figures move to a new day (`b`: the kind's first Float64 index; under its lock).
 * Units admitted locally during an outage and not yet in Redis belong to the day that ended — its
 * usage and, above all, the budget — and stay owed as that day's: an outage spanning the tenant's
 * midnight dropped them (the budget never saw them), or charged them to the new day.
 */
function newDay(f: Float64Array, b: number, day: number): void {
  const pending = f[b + K_PENDING]!
  if (pending !== 0) {
    // Two midnights without Redis: the older units go with the later day (only the budget still wants them).
    f[b + K_PREV_PENDING] = f[b + K_PREV_PENDING]! + pending
    f[b + K_PREV_DAY] = f[b + K_DAY]!
    f[b + K_PENDING] = 0
  }
  f[b + K_DAY] = day
  f[b + K_USED] = 0
  f[b + K_BASE] = 0
}

/**
 * The kind's day was counted in another time zone (the tenant's `timezone` changed by a reload, or
 * a restart with a new config restored it so); under the kind's lock. Day numbers of two zones
 * differ by up to two at one instant, and a new day starts only when the number grows: kept as
 * they were, a move west left the old zone's usage in force for up to two days (requests refused
 * while the gauge, which looks for today's number, said 0), a move east reset it at once.
 * The units used in the old zone's current day are carried into the new zone's current day, which
 * ends at the new zone's midnight: a time zone edit neither gives a tenant fresh quota nor locks it
 * out past the new midnight. A day that is over in the old zone is over: the usage starts at zero.
 */
function rezone(table: QuotaTable, slot: number, k: number, zc: number, day: number, now: number): void {
  const f = table.f64
  const b = table.kf(slot, k, 0)
  const iZone = table.si(slot, S_ZONE + k)
  const old = table.i32[iZone]!
  table.i32[iZone] = zc
  const stored = f[b + K_DAY]!
  if (old === 0 || stored === 0 || stored === day) return
  if (dayRunsInZone(old, stored, day, now)) f[b + K_DAY] = day
  else if (day <= stored) newDay(f, b, day)
  // else: day > stored, the ordinary new day that follows
}

/**
 * Is day number `stored`, counted in the zone of `oldCode`, not over yet at `now` (`day`: today in
 * the tenant's zone now)? Its units are then carried into `day` (rezone), and count as today's.
 */
export function dayRunsInZone(oldCode: number, stored: number, day: number, now: number): boolean {
  const oldZone = zoneOfCode(oldCode)
  if (oldZone !== undefined) return stored >= localDayNumber(oldZone, now)
  // A thread that never saw the old zone (started after the reload): a day next to today's is taken as current.
  return Math.abs(stored - day) <= 1
}

/**
 * Take the units admitted locally during an outage on `day` (any: the current day's), to add to
 * Redis with a decision of that day. Units of an earlier day are not taken (the script would charge them to this day):
 * the reconciliation (heartbeat, recovery) pushes them with their own day.
 */
export function takePending(table: QuotaTable, slot: number, kind: number, day?: number): number {
  const i = table.kf(slot, kind, K_PENDING)
  // Almost always nothing is owed: skip the lock then. A unit added right after this read is
  // taken by the next decision or the heartbeat's reconciliation, as when it is added later.
  if (table.f64[i] === 0) return 0
  table.lockKind(slot, kind)
  let p = 0
  if (day === undefined || table.f64[i - K_PENDING + K_DAY] === day) {
    p = table.f64[i]!
    table.f64[i] = 0
  }
  table.unlockKind(slot, kind)
  return p
}

/** Give back outage units of `day` that did not reach Redis (a failed or refused call). */
export function returnPending(table: QuotaTable, slot: number, kind: number, units: number, day: number): void {
  if (units === 0) return
  const f = table.f64
  const b = table.kf(slot, kind, 0)
  table.lockKind(slot, kind)
  if (day >= f[b + K_DAY]!) f[b + K_PENDING] = f[b + K_PENDING]! + units
  else {
    // The table moved to a new day meanwhile: they are the earlier day's.
    f[b + K_PREV_DAY] = f[b + K_PREV_PENDING] === 0 ? day : Math.max(day, f[b + K_PREV_DAY]!)
    f[b + K_PREV_PENDING] = f[b + K_PREV_PENDING]! + units
  }
  table.unlockKind(slot, kind)
}

/**
 * Take everything owed to Redis for one (tenant, kind), for the reconciliation: `into[0]`/`[1]`
 * the units and day of an earlier day, `[2]`/`[3]` those of the current day (0 units: none).
 */
export function takeAllPending(table: QuotaTable, slot: number, kind: number, into: number[]): boolean {
  const f = table.f64
  const b = table.kf(slot, kind, 0)
  if (f[b + K_PENDING] === 0 && f[b + K_PREV_PENDING] === 0) return false
  table.lockKind(slot, kind)
  into[0] = f[b + K_PREV_PENDING]!
  into[1] = f[b + K_PREV_DAY]!
  into[2] = f[b + K_PENDING]!
  into[3] = f[b + K_DAY]!
  f[b + K_PREV_PENDING] = 0
  f[b + K_PENDING] = 0
  table.unlockKind(slot, kind)
  return into[0] !== 0 || into[2] !== 0
}

/** Record what Redis decided, so an outage continues from it and gauges show it. */
export function mirrorRedis(table: QuotaTable, slot: number, rule: KindRule, now: number, day: number, tokens: number, used: number, budgetTotal: number): void {
  const f = table.f64
  const k = rule.kindIndex
  const iTokens = table.kf(slot, k, K_TOKENS)
  table.lockKind(slot, k)
  const zc = rule.zoneCode ?? 0
  if (zc !== 0 && table.i32[table.si(slot, S_ZONE + k)] !== zc) rezone(table, slot, k, zc, day, now)
  if (rule.perMs > 0) {
    f[iTokens] = tokens
    f[iTokens - K_TOKENS + K_LAST] = now
    table.raiseFullAt(slot, now + msUntilFull(tokens, rule.capacity, rule.perMs))
  }
  if (day >= f[iTokens - K_TOKENS + K_DAY]!) {
    if (day > f[iTokens - K_TOKENS + K_DAY]!) newDay(f, iTokens - K_TOKENS, day)
    f[iTokens - K_TOKENS + K_USED] = used
    f[iTokens - K_TOKENS + K_BASE] = used
  }
  table.i32[table.si(slot, S_MODE + k)] = 0
  table.unlockKind(slot, k)
  if (rule.budget !== undefined) {
    table.lockTenant(slot)
    f[table.tf(slot, T_BUDGET_MIRROR)] = budgetTotal
    f[table.tf(slot, T_BUDGET_LOCAL)] = 0
    table.unlockTenant(slot)
  }
}
