// The quota filter: per (tenant, kind) token bucket, daily hard quota and rolling budget, QoS
// shedding by tier, concurrency slots, and the IETF RateLimit headers. Exact across the worker
// threads of a process (shared memory) and, with Redis, across proxies (one Lua script per
// decision, a 5 ms budget, a circuit breaker and an outage policy). It reads the tenant, tier
// and `cost` other filters left on the context and never imports them.
import { randomUUID } from 'node:crypto'
import { BroadcastChannel } from 'node:worker_threads'
import type { QuotaFilterConfig } from '../../config/filters/index.ts'
import type { QuotaKind, QuotasConfig } from '../../config/quotas.ts'
import type { Tier } from '../../config/primitives.ts'
import type { GatewayConfig } from '../../config/schema.ts'
import { configuredTier } from '../../config/defaults.ts'
import { chargedCost, errorReply, type Decision, type Filter, type FilterDeps, type FilterModule, type LocalReply, type RequestContext } from '../../proxy/filter.ts'
import { quotaKeys } from '../../config/quota-usage.ts'
import { streamToken } from '../../proxy/sse.ts'
import { calendarFor, type TenantCalendar } from './calendar.ts'
import { decideLocal, mirrorRedis, peekRefusal, returnPending, takePending, Verdict } from './local-limiter.ts'
import { shouldShed } from './qos.ts'
import type { LatencySeries, QuotaMetrics } from './quota-metrics.ts'
import { owedHandoverName, quotaRuntime, type QuotaAttachment, type QuotaRuntime } from './quota-runtime.ts'
import { advertisesDay, POLICY_NAME, policyHeader, rateLimitHeader, rejectedRateLimitHeader, type RateLimitValue } from './ratelimit-headers.ts'
import { DecisionRule, type DecisionResult, type DecisionWaiter, type RedisFailure, type RedisQuotaStore, type SentCall } from './redis-store.ts'
import { RULE_BUDGET, RULE_CONCURRENT, RULE_DAILY, RULE_RATE, resolveRule, type KindRule } from './rules.ts'
import { ANONYMOUS, clockSec, H_INFLIGHT, H_INIT, HF_EPOCH, K_DAY, K_PENDING, OVERFLOW_SLOT, QUOTA_SHARED_BYTES, QuotaTable, S_CONCURRENT, S_GEN, S_REQUESTS, S_TOUCH } from './shared-table.ts'
import { BREAKER } from './circuit-breaker.ts'
import { MICRO } from './token-bucket.ts'

const OVERFLOW = '_overflow'
const MAX_RESOLVED = 8192

/** What a concurrency refusal tells clients to wait: slots free up when requests end, which is not known. */
const CONCURRENT_RETRY_MS = 1000

const CODE = { [RULE_RATE]: 'RATE_LIMITED', [RULE_DAILY]: 'QUOTA_EXCEEDED', [RULE_BUDGET]: 'BUDGET_EXHAUSTED', [RULE_CONCURRENT]: 'RATE_LIMITED' } as const
type Path = 'local' | 'redis' | 'fallback'

/** What the filter knows about one tenant on this route, built on the tenant's first request. */
interface Resolved {
  tenant: string
  slot: number
  /** The slot's generation when resolved, and the Int32 indices of it and of the slot's last use (see QuotaTable.holdSlot). */
  gen: number
  genIndex: number
  touchIndex: number
  rule: KindRule
  calendar: TenantCalendar
  /** RateLimit-Policy (see #policy); undefined when nothing is advertised. */
  policy: string | undefined
  /** The tenant's day `policy` was built for (its "daily" window is that day's length); -1: no "daily" item. */
  policyDay: number
  /** Keys and constant script arguments, encoded once for the store they were built for. */
  redisRule: DecisionRule | undefined
  redisStore: RedisQuotaStore | undefined
  concurrentIndex: number
  /** This worker thread's share of that count (shared-table.ts ledgers: given back if it dies). */
  concurrentLedger: number
  releaseConcurrent: () => void
}

function formatDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000} d`
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  return `${Math.round(ms / 1000)} s`
}

type Child = { inc(n?: number): void }

/** One request waiting for its Redis decision (one object per request: no closures). */
class RedisDecision implements DecisionWaiter {
  resolve!: (d: Decision) => void
  readonly filter: QuotaFilter
  readonly ctx: RequestContext
  readonly r: Resolved
  readonly cost: number
  readonly t0: number
  readonly day: number
  readonly pending: number
  /** The push token `pending` travels under (RedisQuotaStore.enqueue; '' when none). */
  token = ''
  /** The outage policy admitted it after the call failed: its cost is in the table's pending units. */
  counted = false
  readonly store: RedisQuotaStore

  constructor(filter: QuotaFilter, ctx: RequestContext, r: Resolved, cost: number, t0: number, day: number, pending: number, store: RedisQuotaStore) {
    this.filter = filter
    this.ctx = ctx
    this.r = r
    this.cost = cost
    this.t0 = t0
    this.day = day
    this.pending = pending
    this.store = store
  }

  result(d: DecisionResult, last: boolean): void {
    this.resolve(this.filter.redisResult(this, d, last))
  }

  failed(kind: RedisFailure, lost?: SentCall): void {
    this.resolve(this.filter.redisFailed(this, kind, lost))
  }

  late(d: DecisionResult | undefined, lost?: SentCall): void {
    this.filter.redisLate(this, d, lost)
  }
}

class QuotaFilter implements Filter {
  readonly name = 'quota'
  readonly #rt: QuotaRuntime
  readonly #attachment: QuotaAttachment
  readonly #kind: QuotaKind
  readonly #shadow: boolean
  readonly #ietf: boolean
  readonly #legacy: boolean
  /** Either header family on admitted requests (legacy ones also without the IETF ones). */
  readonly #advertise: boolean
  readonly #config: GatewayConfig
  readonly #q: QuotasConfig
  readonly #m: QuotaMetrics
  readonly #i32: Int32Array
  /** Per tier (a persisted operation may raise or lower a request's tier), tenant → Resolved. */
  readonly #resolved: Record<Tier, Map<string, Resolved>> = { gold: new Map(), silver: new Map(), bronze: new Map() }
  readonly #verdict = new Verdict()
  readonly #rl: RateLimitValue = { value: '', legacyLimit: 0, legacyRemaining: 0, legacyReset: 0, legacyRatio: 0 }
  readonly #qosOn: boolean
  readonly #anomalyOn: boolean
  readonly #rejected: Record<number, Child>
  readonly #would: Record<number, Child>
  /** Refused for good: the cost is over a limit no wait frees (reason "too_expensive"). */
  readonly #tooExpensive: Child
  readonly #wouldTooExpensive: Child
  readonly #timers: Record<Path, LatencySeries>
  readonly #releaseInflight: () => void
  readonly #workerId: number
  /** This worker thread's share of the in-flight count (given back by the supervisor if it dies). */
  readonly #inflightLedger: number
  #sample = 0

  constructor(cfg: QuotaFilterConfig, deps: FilterDeps, rt: QuotaRuntime, attachment: QuotaAttachment) {
    this.#rt = rt
    this.#attachment = attachment
    this.#kind = cfg.kind
    this.#shadow = cfg.shadow
    this.#ietf = cfg.headers.ratelimit
    this.#legacy = cfg.headers.legacy
    this.#advertise = this.#ietf || this.#legacy
    this.#config = deps.config
    this.#q = deps.config.quotas
    this.#m = rt.metrics
    this.#i32 = rt.table.i32
    const qos = this.#q.qos
    this.#qosOn = qos.maxInFlight !== undefined || qos.maxEventLoopDelayMs !== undefined
    this.#anomalyOn = this.#q.anomaly.enabled
    const k = cfg.kind
    const reasons = { [RULE_RATE]: 'rate', [RULE_DAILY]: 'daily', [RULE_BUDGET]: 'budget', [RULE_CONCURRENT]: 'concurrent' }
    this.#rejected = {}
    this.#would = {}
    for (const [bit, reason] of Object.entries(reasons)) {
      this.#rejected[Number(bit)] = this.#m.rejections.labels(k, reason)
      this.#would[Number(bit)] = this.#m.wouldReject.labels(k, reason)
    }
    this.#tooExpensive = this.#m.rejections.labels(k, 'too_expensive')
    this.#wouldTooExpensive = this.#m.wouldReject.labels(k, 'too_expensive')
    this.#timers = { local: this.#m.decisions.series(k, 'local'), redis: this.#m.decisions.series(k, 'redis'), fallback: this.#m.decisions.series(k, 'fallback') }
    const i32 = this.#i32
    this.#workerId = deps.workerId
    const ledger = (this.#inflightLedger = rt.table.inflightLedger(deps.workerId))
    // Counted in the thread's ledger as well as in the shared count, so that a thread that dies
    // holding it does not hold it for the life of the process (the supervisor releases its share).
    // The count goes first here, the ledger first on the way in: a thread cut off between the
    // two leaves its ledger at most one ahead, and a release never takes a count below zero.
    this.#releaseInflight = () => {
      Atomics.sub(i32, H_INFLIGHT, 1)
      Atomics.sub(i32, ledger, 1)
    }
  }

  onRequest(ctx: RequestContext): Decision | Promise<Decision> {
    const store = this.#rt.store
    // Redis decisions are all timed; local ones (about a microsecond, where the clock and the
    // histogram would add a third) one in eight.
    const t0 = store !== undefined || (++this.#sample & 7) === 0 ? performance.now() : -1
    const now = Date.now()
    const r = this.#resolve(ctx, now)
    // Every request counts toward the tenant's rate (refused ones too: a flood is the anomaly).
    if (this.#anomalyOn) Atomics.add(this.#i32, this.#rt.table.si(r.slot, S_REQUESTS), 1)
    const rule = r.rule
    let cost = 1
    if (rule.metered) {
      cost = chargedCost(ctx.cost)
      // Over the burst, the whole day's quota or a hard-capped budget: no wait ever admits it. A
      // 429 with Retry-After had clients (Apollo's RetryLink, job runners) retry it forever; it is
      // refused for good (as a cost limit refuses a too expensive operation), before QoS, a
      // concurrency slot or a Redis round trip, and without touching the tenant's figures.
      if (cost > rule.maxCost) return this.#refuseTooExpensive(ctx, r, cost)
    }
    if (this.#qosOn) {
      const shed = this.#admit(ctx, r)
      if (shed !== undefined) return shed
    }
    if (rule.maxConcurrent > 0) {
      const refused = this.#acquire(ctx, r, cost)
      if (refused !== undefined) return refused
    }
    if (!rule.metered) {
      if (this.#advertise && r.policy !== undefined) this.#headers(ctx, r, this.#verdict.reset(), now)
      return undefined
    }
    if (store !== undefined) {
      if (store.usable(now)) return this.#decideRedis(ctx, r, cost, now, t0, store)
      return this.#fallback(ctx, r, cost, now, t0, store)
    }
    const v = decideLocal(this.#rt.table, r.slot, rule, cost, now, r.calendar.dayOf(now), false, 1, this.#verdict)
    return this.#finish(ctx, r, v, cost, now, t0, 'local')
  }

  #resolve(ctx: RequestContext, now: number): Resolved {
    const key = ctx.tenant ?? ''
    const tier = ctx.tier ?? configuredTier(this.#config.tenants, ctx.tenant)
    const map = this.#resolved[tier]
    const hit = map.get(key)
    if (hit !== undefined) {
      // The slot may have been reclaimed and given to another tenant since: touched first, then
      // the generation checked (QuotaTable.holdSlot, inlined), it is this tenant's for a while.
      const i32 = this.#i32
      const sec = clockSec(now)
      if (Atomics.load(i32, hit.touchIndex) !== sec) Atomics.store(i32, hit.touchIndex, sec)
      if (Atomics.load(i32, hit.genIndex) === hit.gen) return hit
    } else if (map.size >= MAX_RESOLVED) map.clear()
    const tenant = ctx.tenant
    // Own keys only: an unlisted id such as "constructor" must not find Object.prototype's members.
    const listed = tenant !== undefined && Object.hasOwn(this.#config.tenants, tenant) ? this.#config.tenants[tenant] : undefined
    const rule = resolveRule(this.#q, tenant, this.#kind, tier, listed?.timezone, this.#shadow)
    const table = this.#rt.table
    const known = tenant === undefined || listed !== undefined
    const slot = table.slotOf(tenant ?? ANONYMOUS, known)
    const gen = table.genOf(slot) // slotOf touched it: it stays this tenant's for now
    // The budget ring now, while it is known whether the tenant is listed (see ringOf).
    if (rule.budget !== undefined) table.ringOf(slot, known)
    // Redis has no table to fill: a tenant in the local overflow slot keeps its own Redis keys
    // (only ids that could not be stored locally — too long, not ASCII — share one).
    const keyTenant = tenant === undefined ? ANONYMOUS : slot === OVERFLOW_SLOT && !table.storable(tenant) ? OVERFLOW : tenant
    const concurrentIndex = table.si(slot, S_CONCURRENT + rule.kindIndex)
    const concurrentLedger = table.concurrentLedger(this.#workerId, slot, rule.kindIndex)
    const i32 = this.#i32
    const r: Resolved = {
      tenant: keyTenant,
      slot,
      gen,
      genIndex: table.si(slot, S_GEN),
      touchIndex: table.si(slot, S_TOUCH),
      rule,
      calendar: calendarFor(rule.timeZone),
      policy: policyHeader(rule),
      policyDay: advertisesDay(rule) ? 0 : -1,
      redisRule: undefined,
      redisStore: undefined,
      concurrentIndex,
      concurrentLedger,
      releaseConcurrent: () => {
        Atomics.sub(i32, concurrentIndex, 1)
        Atomics.sub(i32, concurrentLedger, 1)
      },
    }
    map.set(key, r)
    return r
  }

  // --- QoS and concurrency --------------------------------------------------------------------

  #admit(ctx: RequestContext, r: Resolved): LocalReply | undefined {
    const qos = this.#q.qos
    const tier = r.rule.tier
    const max = qos.maxInFlight ?? 0
    const maxDelay = qos.maxEventLoopDelayMs ?? 0
    const delay = maxDelay > 0 ? this.#rt.eventLoop.delayMs : 0
    const shedAt = qos.shedAt[tier]
    // A subscription is long-lived: over a WebSocket (terminated or relayed) or relayed over HTTP
    // (SSE, multipart: graphql-yoga's default). Admitted or not by the load now, not held in
    // flight: counted for its life, a few open streams filled maxInFlight and shed even gold.
    if (ctx.subscription !== undefined || longLived(ctx)) {
      if (!shouldShed(Atomics.load(this.#i32, H_INFLIGHT), max, delay, maxDelay, shedAt)) return undefined
      return this.#shed(tier)
    }
    // Taken only when admitted (compare-and-swap): added first and given back when shed, the
    // lower tiers about to be shed in other threads raised the count for a moment, and a gold
    // request saw a full proxy while real in-flight was under maxInFlight.
    const i32 = this.#i32
    let cur = Atomics.load(i32, H_INFLIGHT)
    for (;;) {
      if (shouldShed(cur, max, delay, maxDelay, shedAt)) {
        const reply = this.#shed(tier)
        if (reply !== undefined) return reply
        // A shadow route admits it all the same: counted like any other.
        Atomics.add(i32, this.#inflightLedger, 1)
        Atomics.add(i32, H_INFLIGHT, 1)
        break
      }
      Atomics.add(i32, this.#inflightLedger, 1) // the ledger first on the way in (see #releaseInflight)
      const seen = Atomics.compareExchange(i32, H_INFLIGHT, cur, cur + 1)
      if (seen === cur) break
      Atomics.sub(i32, this.#inflightLedger, 1)
      cur = seen
    }
    ctx.addCleanup(this.#releaseInflight)
    return undefined
  }

  #shed(tier: string): LocalReply | undefined {
    if (this.#shadow) {
      this.#m.wouldReject.labels(this.#kind, 'qos').inc()
      return undefined
    }
    this.#m.qosDrops.labels(tier, 'request').inc()
    const retry = String(this.#q.qos.retryAfterSeconds)
    return errorReply('OVERLOADED', `the gateway is overloaded; ${tier} traffic is being shed, retry in ${retry} s`, { kind: this.#kind, tier, retryAfterSeconds: Number(retry) }, { 'retry-after': retry })
  }

  #acquire(ctx: RequestContext, r: Resolved, cost: number): Decision | Promise<Decision> {
    if (!this.#takeSlot(r, r.rule.maxConcurrent)) {
      if (!r.rule.metered) return this.#refuseConcurrent(ctx, r)
      // A slot frees up within the second, as a guess; a used-up day, budget or slow bucket
      // frees up later, and that is the answer (nothing taken: the request is refused anyway).
      const store = this.#rt.store
      // With Redis, the table holds what this proxy's last decision saw, not what other proxies
      // spent since: the decision script, read-only, within the budget (as a metered refusal
      // through Redis costs a round trip); the table's figures when Redis does not answer.
      if (store !== undefined && store.breaker.state === BREAKER.closed) return this.#peekRedis(ctx, r, cost, store)
      const now = Date.now()
      const v = this.#verdict
      v.reason = peekRefusal(this.#rt.table, r.slot, r.rule, cost, now, r.calendar.dayOf(now), store !== undefined, CONCURRENT_RETRY_MS, v)
      return this.#refuseConcurrentOr(ctx, r, v, cost, now)
    }
    // A relayed WebSocket holds a slot for its life only under kind "subscriptions" (what that
    // kind counts). Under another kind (graphql, the default) it was admitted by a free slot and
    // gives it back at once: 20 open browser tabs must not hold a tenant's 20 HTTP request slots.
    // So does a terminated subscription (a query or mutation over the socket ends, and holds it
    // until then like an HTTP request), and one relayed over HTTP (SSE, multipart): two open
    // graphql-yoga SSE streams held a tenant's two graphql slots and refused its next query.
    if (longLived(ctx) && this.#kind !== 'subscriptions') r.releaseConcurrent()
    else ctx.addCleanup(r.releaseConcurrent)
    return undefined
  }

  async #peekRedis(ctx: RequestContext, r: Resolved, cost: number, store: RedisQuotaStore): Promise<Decision> {
    const rule = r.rule
    const now = Date.now()
    const day = r.calendar.dayOf(now)
    const f = this.#rt.table.f64
    const iDay = this.#rt.table.kf(r.slot, rule.kindIndex, K_DAY)
    // This proxy's outage units of the day, not in Redis yet (read, not taken: nothing is charged).
    const pending = f[iDay] === day ? f[iDay - K_DAY + K_PENDING]! : 0
    let redisRule = r.redisRule
    if (redisRule === undefined || r.redisStore !== store) {
      redisRule = r.redisRule = this.#redisRule(r, store)
      r.redisStore = store
    }
    const res = await store.peek(redisRule, cost, day, pending, r.calendar.end)
    const at = res?.now ?? Date.now()
    const v = this.#verdict.reset()
    if (res === undefined) {
      v.reason = peekRefusal(this.#rt.table, r.slot, rule, cost, at, r.calendar.dayOf(at), true, CONCURRENT_RETRY_MS, v)
      return this.#refuseConcurrentOr(ctx, r, v, cost, at)
    }
    v.capacity = rule.capacity
    v.perMs = rule.perMs
    v.dayLimit = rule.limitPerDay
    v.tokens = res.tokens
    v.used = res.used
    v.budgetTotal = res.total
    v.retryMs = res.retryMs
    v.dailyToo = res.dailyToo
    v.reason = res.allowed ? 0 : res.reason
    // As peekRefusal: a bucket or budget that frees up within the slot's guess is not the answer.
    if (v.reason !== RULE_DAILY && v.reason !== 0 && v.retryMs <= CONCURRENT_RETRY_MS) {
      v.reason = v.dailyToo ? RULE_DAILY : 0
      v.retryMs = -1
      v.dailyToo = false
    }
    return this.#refuseConcurrentOr(ctx, r, v, cost, at)
  }

  /** The metered rule `v.reason` names refuses (it frees up later than a slot), else the slot does. */
  #refuseConcurrentOr(ctx: RequestContext, r: Resolved, v: Verdict, cost: number, now: number): Decision {
    if (v.reason === 0) return this.#refuseConcurrent(ctx, r)
    v.allowed = false
    return this.#finish(ctx, r, v, cost, now, -1, 'local')
  }

  #refuseConcurrent(ctx: RequestContext, r: Resolved): LocalReply {
    const max = r.rule.maxConcurrent
    this.#rejected[RULE_CONCURRENT]!.inc()
    const retry = CONCURRENT_RETRY_MS / 1000
    if (this.#ietf) {
      if (r.policy !== undefined) ctx.addResponseHeader('ratelimit-policy', this.#policy(r, Date.now()))
      ctx.addResponseHeader('ratelimit', rejectedRateLimitHeader(RULE_CONCURRENT, 0, retry))
    }
    if (this.#legacy) this.#legacyHeaders(ctx, max, 0, retry)
    ctx.addResponseHeader('retry-after', String(retry))
    const what = ctx.subscription !== undefined ? 'subscriptions' : ctx.upgrade ? 'WebSocket connections' : `${this.#kind} requests`
    return errorReply('RATE_LIMITED', `too many concurrent ${what} (limit ${max})`, { kind: this.#kind, policy: 'concurrent', limit: max, remaining: 0, retryAfterSeconds: retry })
  }

  /**
   * Take one of the tenant's concurrency slots; false when all are taken (a shadow limit takes one
   * all the same). Taken only when free (compare-and-swap, as the in-flight count in #admit):
   * added first and given back when refused, two threads racing for the last slot each counted
   * the other's refused attempt, and both refused while the slot was free.
   */
  #takeSlot(r: Resolved, max: number): boolean {
    const i32 = this.#i32
    let cur = Atomics.load(i32, r.concurrentIndex)
    for (;;) {
      if (cur >= max) {
        if ((r.rule.shadowMask & RULE_CONCURRENT) === 0) return false
        this.#would[RULE_CONCURRENT]!.inc()
        Atomics.add(i32, r.concurrentLedger, 1)
        Atomics.add(i32, r.concurrentIndex, 1)
        return true
      }
      Atomics.add(i32, r.concurrentLedger, 1) // the ledger first on the way in (see #releaseInflight)
      const seen = Atomics.compareExchange(i32, r.concurrentIndex, cur, cur + 1)
      if (seen === cur) return true
      Atomics.sub(i32, r.concurrentLedger, 1)
      cur = seen
    }
  }

  // --- Redis and the outage policy -------------------------------------------------------------

  #decideRedis(ctx: RequestContext, r: Resolved, cost: number, now: number, t0: number, store: RedisQuotaStore): Promise<Decision> {
    const rule = r.rule
    const day = r.calendar.dayOf(now)
    const pending = takePending(this.#rt.table, r.slot, rule.kindIndex, day)
    const d = new RedisDecision(this, ctx, r, cost, t0, day, pending, store)
    const p = new Promise<Decision>((resolve) => (d.resolve = resolve))
    let redisRule = r.redisRule
    if (redisRule === undefined || r.redisStore !== store) {
      redisRule = r.redisRule = this.#redisRule(r, store)
      r.redisStore = store
    }
    d.token = store.enqueue(redisRule, cost, day, pending, d, r.calendar.end)
    return p
  }

  /** The tenant's keys and ARGV 4-17 of its decisions (redis-script.ts): thresholds padded to 4, then the zone. */
  #redisRule(r: Resolved, store: RedisQuotaStore): DecisionRule {
    const rule = r.rule
    const b = rule.budget
    return new DecisionRule(quotaKeys.kind(store.prefix, r.tenant, this.#kind), quotaKeys.budget(store.prefix, r.tenant), [
      rule.perMs,
      rule.capacity,
      rule.limitPerDay,
      ...(b === undefined
        ? [-1, 0, 0, 0, rule.shadowMask & 7, 0, 0, 0, 0, 0]
        : [b.units, b.bucketMs, b.buckets, b.hardCap ? 1 : 0, rule.shadowMask & 7, b.thresholds.length, ...[0, 1, 2, 3].map((i) => Math.round((b.thresholds[i] ?? 0) * 1_000_000))]),
      rule.zoneCode ?? 0,
    ])
  }

  /** Redis answered in time (RedisDecision calls this; synchronous, so the shared Verdict is safe). */
  redisResult(d: RedisDecision, res: DecisionResult, last: boolean): Decision {
    const r = d.r
    const rule = r.rule
    const now = res.now
    this.#timers.redis.observe((res.readAt - d.t0) / 1000)
    const v = this.#verdict.reset()
    v.allowed = res.allowed
    v.reason = res.reason
    v.tokens = res.tokens
    v.capacity = rule.capacity
    v.perMs = rule.perMs
    v.used = res.used
    v.dayLimit = rule.limitPerDay
    v.budgetTotal = res.total
    v.retryMs = res.retryMs
    v.fired = res.fired
    v.would = res.would
    v.dailyToo = res.dailyToo
    // The group's last decision carries what Redis kept after all of them: mirror that once (not
    // into a slot reclaimed meanwhile: Redis holds the figures).
    if (last && this.#rt.table.holdSlot(r.slot, r.gen, clockSec(Date.now()))) mirrorRedis(this.#rt.table, r.slot, rule, now, d.day, v.tokens, v.used, v.budgetTotal)
    return this.#finish(d.ctx, r, v, d.cost, now, -1, 'redis') // timed above
  }

  /** Redis did not answer in time or failed (`lost`: maybe after it ran the call): the outage policy decides. */
  redisFailed(d: RedisDecision, kind: RedisFailure, lost?: SentCall): Decision {
    // A timed-out script may still run (then Redis has the reconciled units): its late reply tells.
    if (kind !== 'timeout') this.#pendingFailed(d)
    const decision = this.#fallback(d.ctx, d.r, d.cost, Date.now(), d.t0, d.store, d)
    if (lost !== undefined) this.#countedUnlessRan(d, lost)
    return decision
  }

  /**
   * The outage policy decided this request after the budget ran out. If Redis ran the script
   * after all, it took the reconciled units and counted the request when it admitted it (the
   * local decision counted it too: take it back); if it failed in the end, keep the units — the
   * request's own count only if the call never ran (`lost`: its connection dropped, it may have).
   */
  redisLate(d: RedisDecision, res: DecisionResult | undefined, lost?: SentCall): void {
    if (res === undefined) {
      this.#pendingFailed(d)
      if (lost !== undefined) this.#countedUnlessRan(d, lost)
    } else if (res.allowed) this.#giveBack(d, -d.cost)
    // The script crossed a threshold and set its marker in Redis: this proxy is the one to tell.
    // Dropped, no proxy sent the event, and the marker kept every other from sending it for the
    // rest of the window ("exactly once" became never).
    if (res !== undefined && res.fired !== 0) this.#budgetEvents(d.r, res.fired, res.total, res.now)
  }

  /**
   * The call carrying this request's outage units failed. Sent, it may have failed after Redis ran
   * the script (the connection dropped before the reply, or Redis refused a later group): given
   * back to the table they went out again under a new token, counted twice. The reconciliation
   * pushes them under the call's token, which Redis applies only if the call did not.
   */
  #pendingFailed(d: RedisDecision): void {
    if (d.pending === 0) return
    if (d.token === '') this.#giveBack(d, d.pending)
    else this.#rt.owe(d.r.slot, d.r.gen, d.r.rule.kindIndex, d.r.tenant, d.pending, d.day, d.token)
  }

  /**
   * The request's call went out and its reply was lost with the connection: Redis may have run it
   * and counted the request, which the outage policy then admitted and counted again. Its count
   * leaves the table (pushed as it is) for the reconciliation, which charges it only if the call
   * never ran (RedisQuotaStore.reconcile). The call's requests of one tenant, kind and day are one
   * push (their token names the call).
   */
  #countedUnlessRan(d: RedisDecision, lost: SentCall): void {
    if (!d.counted || d.cost === 0) return
    const r = d.r
    this.#giveBack(d, -d.cost)
    this.#rt.owe(r.slot, r.gen, r.rule.kindIndex, r.tenant, d.cost, d.day, `${lost.marker.slice(lost.marker.lastIndexOf(':') + 1)}.${lost.seq}.${r.rule.kindIndex}.${d.day}`, lost)
  }

  /**
   * Units owed to Redis for the request's tenant after its call: back into its slot, or — reclaimed
   * meanwhile (the reply came late), the slot may be another tenant's — pushed under a token of their own.
   */
  #giveBack(d: RedisDecision, units: number): void {
    const r = d.r
    if (this.#rt.table.holdSlot(r.slot, r.gen, clockSec(Date.now()))) returnPending(this.#rt.table, r.slot, r.rule.kindIndex, units, d.day)
    else this.#rt.owe(r.slot, r.gen, r.rule.kindIndex, r.tenant, units, d.day, randomUUID())
  }

  /** `d`: the Redis decision it stands in for, told whether the local limiter counted it. */
  #fallback(ctx: RequestContext, r: Resolved, cost: number, now: number, t0: number, store: RedisQuotaStore, d?: RedisDecision): Decision {
    const policy = this.#q.redis.onOutage
    this.#m.fallbacks.labels(policy).inc()
    // Fail-closed guards limits Redis would enforce. A tenant's rules that only count (shadow, a
    // budget without hardCap) never refuse: the local limiter counts for them, as under fail-open.
    // (A shadow route still counts what fail-closed would have refused.)
    if (policy === 'fail-closed' && (this.#shadow || r.rule.refuses)) {
      if (this.#shadow) {
        this.#m.wouldReject.labels(this.#kind, 'redis_unavailable').inc()
        return undefined
      }
      this.#m.rejections.labels(this.#kind, 'redis_unavailable').inc()
      this.#timers.fallback.observe((performance.now() - t0) / 1000)
      const retry = String(Math.max(1, Math.ceil(store.breaker.retryInMs(now) / 1000)))
      return errorReply('OVERLOADED', 'quota store unavailable; retry shortly', { kind: this.#kind, retryAfterSeconds: Number(retry) }, { 'retry-after': retry })
    }
    const scale = policy === 'local-share' ? 1 / this.#rt.liveProxies() : 1
    const v = decideLocal(this.#rt.table, r.slot, r.rule, cost, now, r.calendar.dayOf(now), true, scale, this.#verdict, store.breaker.retryInMs(now))
    if (d !== undefined) d.counted = v.allowed
    // Budget events belong to Redis (exactly once across proxies); the outage's usage reaches it later.
    v.fired = 0
    return this.#finish(ctx, r, v, cost, now, t0, 'fallback')
  }

  // --- the answer --------------------------------------------------------------------------------

  #finish(ctx: RequestContext, r: Resolved, v: Verdict, cost: number, now: number, t0: number, path: Path): Decision {
    if (t0 >= 0) this.#timers[path].observe((performance.now() - t0) / 1000)
    if (v.would !== 0) {
      // A shadow rule this request could never fit would refuse it for good, not for a while.
      if (cost > r.rule.maxCostShadow) this.#wouldTooExpensive.inc()
      else for (let bit = 1; bit <= RULE_BUDGET; bit <<= 1) if ((v.would & bit) !== 0) this.#would[bit]!.inc()
    }
    if (v.fired !== 0) this.#budgetEvents(r, v.fired, v.budgetTotal, now)
    if (v.allowed) {
      if (this.#advertise && r.policy !== undefined) this.#headers(ctx, r, v, now)
      return undefined
    }
    const rule = r.rule
    let reason = v.reason
    let retryMs = v.retryMs
    // A daily refusal waits for the tenant's midnight (-1), unless only this proxy's outage share
    // of the day is spent (local-share): then until Redis may answer again.
    const dailyShare = reason === RULE_DAILY && retryMs >= 0
    if (retryMs < 0) retryMs = r.calendar.msToEndOfDay(now)
    else if (v.dailyToo) {
      // The daily quota refused it as well: whichever frees up later is the answer.
      const dayEnd = r.calendar.msToEndOfDay(now)
      if (dayEnd >= retryMs) {
        reason = RULE_DAILY
        retryMs = dayEnd
      }
    }
    this.#rejected[reason]!.inc()
    const retry = Math.max(1, Math.ceil(retryMs / 1000))
    let limit = 0
    let remaining = 0
    let message: string
    if (reason === RULE_RATE) {
      limit = Math.max(1, Math.floor(rule.burst))
      remaining = Math.max(0, Math.floor(v.tokens / MICRO))
      // Over the burst itself was refused up front (rule.maxCost); over the bucket as it applies
      // here it is only while Redis is out under local-share (this proxy's share of the burst).
      message =
        cost * MICRO > v.capacity
          ? `request cost ${cost} exceeds this proxy's share (${Math.floor(v.capacity / MICRO)} units) of the ${this.#kind} burst of ${limit} units while the quota store is unreachable; retry in ${retry} s`
          : `${this.#kind} rate limit exceeded (${rule.rate} units/s, burst ${limit}); retry in ${retry} s`
    } else if (reason === RULE_DAILY) {
      limit = v.dayLimit
      remaining = Math.max(0, v.dayLimit - v.used)
      // (A request larger than the whole day's quota was refused up front: rule.maxCost.)
      // limitPerDay 0 is a suspension, not a spent day: midnight lifts nothing, so the message
      // must not promise it (Retry-After stays: every 429 carries one; it is a re-check, not a reset).
      message = dailyShare
        ? `this proxy's share of the daily ${this.#kind} quota of ${rule.limitPerDay} units is used up while the quota store is unreachable; retry in ${retry} s`
        : rule.limitPerDay === 0
          ? `${this.#kind} requests are switched off for this tenant (daily quota of 0 units): this does not reset at midnight; it lasts until the quota is raised`
          : `daily ${this.#kind} quota of ${rule.limitPerDay} units used up; it resets at midnight ${rule.timeZone}`
    } else {
      limit = rule.budget!.units
      remaining = Math.max(0, limit - v.budgetTotal)
      message = `budget of ${limit} units per ${formatDuration(rule.budget!.windowMs)} used up`
    }
    const retryStr = String(retry)
    ctx.addResponseHeader('retry-after', retryStr)
    if (this.#ietf) {
      if (r.policy !== undefined) ctx.addResponseHeader('ratelimit-policy', this.#policy(r, now))
      ctx.addResponseHeader('ratelimit', rejectedRateLimitHeader(reason, remaining, retry))
    }
    if (this.#legacy) this.#legacyHeaders(ctx, limit, remaining, retry)
    return errorReply(CODE[reason as keyof typeof CODE], message, {
      kind: this.#kind,
      policy: POLICY_NAME[reason],
      limit,
      remaining,
      cost,
      retryAfterSeconds: retry,
    })
  }

  /**
   * A request whose cost is over a limit no wait frees (rule.maxCost): 400 BAD_REQUEST, neither
   * Retry-After nor a RateLimit reset (there is nothing to wait for), and the limit it exceeds.
   * Counted as reason "too_expensive", apart from the refusals that a retry later gets through.
   */
  #refuseTooExpensive(ctx: RequestContext, r: Resolved, cost: number): LocalReply {
    const rule = r.rule
    const which = rule.maxCostRule
    this.#tooExpensive.inc()
    let limit: number
    let what: string
    if (which === RULE_RATE) {
      limit = Math.max(1, Math.floor(rule.burst))
      what = `the ${this.#kind} burst of ${limit} units`
    } else if (which === RULE_DAILY) {
      limit = rule.limitPerDay
      what = `the daily ${this.#kind} quota of ${limit} units`
    } else {
      limit = rule.budget!.units
      what = `the budget of ${limit} units per ${formatDuration(rule.budget!.windowMs)}`
    }
    if (this.#ietf && r.policy !== undefined) ctx.addResponseHeader('ratelimit-policy', this.#policy(r, Date.now()))
    return errorReply('BAD_REQUEST', `request cost ${cost} exceeds ${what}: it can never be admitted, so retrying will not help (lower its cost)`, {
      kind: this.#kind,
      reason: 'too_expensive',
      policy: POLICY_NAME[which],
      limit,
      cost,
    })
  }

  /**
   * The RateLimit-Policy of a tenant that advertises one. The "daily" window is the length of the
   * tenant's current day: 23 h or 25 h on a day its zone changes clocks, when the quota resets
   * at the local midnight an hour early or late. Rebuilt when the day changes.
   */
  #policy(r: Resolved, now: number): string {
    if (r.policyDay >= 0) {
      const c = r.calendar
      const day = c.dayOf(now)
      if (day !== r.policyDay) {
        r.policy = policyHeader(r.rule, c.end - c.start)
        r.policyDay = day
      }
    }
    return r.policy!
  }

  #headers(ctx: RequestContext, r: Resolved, v: Verdict, now: number): void {
    const rule = r.rule
    const free = rule.maxConcurrent > 0 ? rule.maxConcurrent - Atomics.load(this.#i32, r.concurrentIndex) : 0
    const rl = rateLimitHeader(rule, v, now, rule.limitPerDay >= 0 ? r.calendar.msToEndOfDay(now) : 0, free, this.#rl)
    if (this.#ietf) {
      ctx.addResponseHeader('ratelimit-policy', this.#policy(r, now))
      if (rl.value !== '') ctx.addResponseHeader('ratelimit', rl.value)
    }
    if (this.#legacy) this.#legacyHeaders(ctx, rl.legacyLimit, rl.legacyRemaining, rl.legacyReset)
  }

  #legacyHeaders(ctx: RequestContext, limit: number, remaining: number, reset: number): void {
    ctx.addResponseHeader('x-ratelimit-limit', String(limit))
    ctx.addResponseHeader('x-ratelimit-remaining', String(remaining))
    ctx.addResponseHeader('x-ratelimit-reset', String(reset))
  }

  #budgetEvents(r: Resolved, fired: number, usedUnits: number, now: number): void {
    const b = r.rule.budget
    if (b === undefined) return
    for (let i = 0; i < b.thresholds.length; i++) {
      if ((fired & (1 << i)) === 0) continue
      const threshold = b.thresholds[i]!
      this.#rt.emit({
        type: 'budget.threshold',
        id: `budget:${r.tenant}:${threshold}:${now}`,
        tenant: r.tenant,
        threshold,
        usedUnits,
        limitUnits: b.units,
        ratio: Math.round((usedUnits / b.units) * 1000) / 1000,
        windowMs: b.windowMs,
        hardCap: b.hardCap,
        at: new Date(now).toISOString(),
        proxy: this.#rt.proxyId,
      })
    }
  }

  close(): Promise<void> {
    return this.#rt.detach(this.#attachment)
  }
}

/**
 * The supervisor's side of the owed-file handover (main thread), per quota table: the worker
 * threads that died, told again to a thread that starts later and asks — the dead one's restart,
 * when no other thread was serving to hear of the death (one worker). The last few only: an older
 * one's file was taken long since, or waits for the next start.
 */
const deadThreads = new WeakMap<SharedArrayBuffer, { ch: BroadcastChannel; threads: number[] }>()
const DEAD_THREADS_KEPT = 32

export const quotaFilter: FilterModule<QuotaFilterConfig> & Required<Pick<FilterModule, 'workerExited'>> = {
  sharedBytes: QUOTA_SHARED_BYTES,
  /**
   * The supervisor saw worker thread `workerId` exit: give back the concurrency slots and
   * in-flight count it still held (its cleanups never ran). Returns how many were released.
   * `threadId`: the outage units a thread that died had saved to its owed file are handed to the
   * threads still serving (as a closing thread hands its own file over), which push them when
   * Redis answers: read only at the next process start, Redis stayed short of them until then.
   */
  workerExited(shared, workerId, threadId) {
    const table = new QuotaTable(shared)
    if (threadId !== undefined && threadId > 0 && Atomics.load(table.i32, H_INIT) === 2) {
      let dead = deadThreads.get(shared)
      if (dead === undefined) {
        const ch = new BroadcastChannel(owedHandoverName(table.f64[HF_EPOCH]!))
        const threads: number[] = []
        ch.onmessage = (ev) => {
          const data = (ev as { data: unknown }).data
          if (typeof data === 'object' && data !== null && (data as { ask?: unknown }).ask === true) for (const thread of threads) ch.postMessage({ thread })
        }
        ch.unref()
        dead = { ch, threads }
        deadThreads.set(shared, dead)
      }
      dead.threads.push(threadId)
      if (dead.threads.length > DEAD_THREADS_KEPT) dead.threads.shift()
      dead.ch.postMessage({ thread: threadId })
    }
    return table.releaseWorker(workerId)
  },
  async create(cfg, deps) {
    const rt = quotaRuntime(deps.shared, deps.config, deps.logger)
    const attachment = rt.attach(deps.config, deps.registry, deps.redis)
    try {
      return await build(cfg, deps, rt, attachment)
    } catch (err) {
      await rt.detach(attachment) // no filter to close it later
      throw err
    }
  },
}

/** A stream that lives until the client leaves: a relayed WebSocket, or a subscription (terminated, or over HTTP: SSE, multipart). */
function longLived(ctx: RequestContext): boolean {
  if (ctx.upgrade) return true
  const gql = ctx.graphql
  if (gql !== undefined) return gql.operationType === 'subscription'
  // graphql-sse's single connection stream (a GET carrying the reservation token, no operation):
  // it lives as long as the client, carrying every operation's results, as a WebSocket does.
  return ctx.method === 'GET' && ctx.route.type === 'graphql' && streamToken(ctx.req.headers, ctx.url) !== undefined
}

async function build(cfg: QuotaFilterConfig, deps: FilterDeps, rt: QuotaRuntime, attachment: QuotaAttachment): Promise<QuotaFilter> {
  // Find today's boundaries in every configured zone now: the first Intl use in a thread
  // costs ~100 ms of ICU loading, which must not land on a request.
  const now = Date.now()
  calendarFor('UTC').dayOf(now)
  for (const t of Object.values(deps.config.tenants)) calendarFor(t.timezone).dayOf(now)
  // Every listed tenant gets its slot (and budget ring) now, before any client can fill the
  // table with made-up ids.
  const q = deps.config.quotas
  for (const t of Object.keys(deps.config.tenants)) {
    const slot = rt.table.slotOf(t)
    const own = Object.hasOwn(q.tenants, t) ? q.tenants[t]!.budget : undefined
    if ((own !== undefined ? own : q.defaults.budget) != null) rt.table.ringOf(slot)
  }
  const store = rt.store
  if (store !== undefined) {
    // Connected before the first request, and counted among the live proxies.
    await store.warmUp(1_000)
    await rt.beatNow()
  }
  return new QuotaFilter(cfg, deps, rt, attachment)
}

export { usedTodayFromRedis, usedTodayFromState } from '../../config/quota-usage.ts'
