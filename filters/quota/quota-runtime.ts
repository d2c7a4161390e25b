// What the quota filters of one worker thread share: the process-wide table, the Redis store and
// its breaker, the event sink, metrics, the event-loop monitor, and the periodic jobs (state
// file flush, anomaly pass, proxy heartbeat). Each periodic job runs in exactly one thread per
// period: the threads race for the period with a compare-and-swap in shared memory.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { localDayNumber, QUOTA_KINDS, quotaKeys, readStateFile, zoneCode, type QuotaKindName } from '../../config/quota-usage.ts'
import type { QuotasConfig } from '../../config/quotas.ts'
import type { GatewayConfig } from '../../config/schema.ts'
import { LogWindow, type RedisProvider } from '../../proxy/filter.ts'
import { observe, type AnomalyState } from './anomaly-detector.ts'
import { dayRunsInZone, returnPending, takeAllPending } from './local-limiter.ts'
import { EventLoopLoad } from './qos.ts'
import { EventSink, type QuotaEvent } from './quota-events.ts'
import { createQuotaMetrics, type QuotaMetrics } from './quota-metrics.ts'
import { RedisQuotaStore, type RedisFailure, type SentCall } from './redis-store.ts'
import { advance, total } from './rolling-budget.ts'
import { budgetRule, KIND_INDEX, resolveRule, type BudgetRule } from './rules.ts'
import {
  ANONYMOUS,
  clockSec,
  HB_ANOMALY_AT,
  HB_FLUSH_AT,
  HB_HEARTBEAT_AT,
  H_INFLIGHT,
  H_INIT,
  H_LIVE_PROXIES,
  H_OVERFLOWS,
  HF_EPOCH,
  K_DAY,
  K_USED,
  OVERFLOW_SLOT,
  QUOTA_SHARED_BYTES,
  QuotaTable,
  S_REQUESTS,
  S_ZONE,
  T_ANOMALY,
  T_BUDGET_LOCAL,
  T_BUDGET_MIRROR,
} from './shared-table.ts'
import { nextStateWrite, restoreState, snapshotState, writeStateFile, writeStateFileSync } from './state-file.ts'

/** Periodic work aligned to period boundaries since the process epoch, one thread per period. */
class PeriodicJob {
  #timer: NodeJS.Timeout | undefined
  #period = 0
  readonly #rt: QuotaRuntime
  readonly #word: number
  readonly #run: () => void

  constructor(rt: QuotaRuntime, word: number, run: () => void) {
    this.#rt = rt
    this.#word = word
    this.#run = run
  }

  /** (Re)start with this period; 0 stops. */
  every(periodMs: number): void {
    if (periodMs === this.#period) return
    this.stop()
    this.#period = periodMs
    if (periodMs > 0) this.#schedule()
  }

  #schedule(): void {
    const epoch = this.#rt.epoch
    const now = Date.now()
    const next = epoch + (Math.floor((now - epoch) / this.#period) + 1) * this.#period
    this.#timer = setTimeout(() => this.#fire(), next - now + 1)
    this.#timer.unref()
  }

  #fire(): void {
    // The lease is the period's start in absolute ms, not a period count: counts restart lower
    // when a reload lengthens the period, starts stay comparable across any period.
    const epoch = this.#rt.epoch
    const start = BigInt(epoch + Math.floor((Date.now() - epoch) / this.#period) * this.#period)
    const i64 = this.#rt.table.i64
    const prev = Atomics.load(i64, this.#word)
    if (start > prev && Atomics.compareExchange(i64, this.#word, prev, start) === prev) {
      try {
        this.#run()
      } catch (err) {
        this.#rt.logger.error({ err }, 'quota periodic job failed')
      }
    }
    this.#schedule()
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#period = 0
  }
}

/** Outage units of one (tenant, kind, day) on their way to Redis; `token` names the push in Redis. */
interface OwedPush {
  /** The tenant's slot and its generation then (reclaimed since, the slot is another tenant's). */
  slot: number
  gen: number
  k: number
  tenant: string
  units: number
  day: number
  token: string
  /** The outage policy's count of requests a lost decision call carried: charged only if it never ran. */
  unlessRan?: SentCall
}

/** One quota filter instance's hold on the runtime: the config (and Redis) it was built with. */
export interface QuotaAttachment {
  readonly config: GatewayConfig
  readonly redis: RedisProvider | undefined
}

export class QuotaRuntime {
  readonly table: QuotaTable
  readonly logger: Logger
  readonly proxyId: string
  config: GatewayConfig
  readonly eventLoop = new EventLoopLoad()
  events: EventSink | undefined
  #metrics: QuotaMetrics | undefined
  #registry: Registry | undefined
  #store: RedisQuotaStore | undefined
  #storeKey = ''
  /**
   * The filter instances of this thread, oldest first. The newest one's config runs the shared
   * jobs (state file, anomaly pass, heartbeat, webhook, Redis store). A config version a worker
   * refuses (another filter of the chain fails to build) builds a quota filter and closes it at
   * once: then the newest remaining one — the version still in force — takes over again, or the
   * refused document's stateFile, webhook and Redis settings stayed in use after the NACK.
   */
  readonly #attached: QuotaAttachment[] = []
  readonly #flush: PeriodicJob
  readonly #anomaly: PeriodicJob
  readonly #heartbeat: PeriodicJob
  #flushing = false
  readonly #writeLog = new LogWindow(60_000)
  /** Keys Redis refused (one tenant's decisions): every call fails again until someone fixes the key. */
  readonly #keyLog = new LogWindow(10_000)
  /** Set when the state file could not be read at start (counted once metrics exist). */
  #readFailed = false
  /**
   * Pushes of outage units Redis did not answer. Redis may have applied one whose reply was lost
   * (the connection dropped after the script ran): each is sent again with its own token, which
   * Redis applies once — given back to the table, the units went out under a new token and were
   * counted twice. Retried every heartbeat period by this thread (another thread's heartbeat
   * winning the period does not see them).
   */
  readonly #unanswered: OwedPush[] = []
  #retry: NodeJS.Timeout | undefined

  constructor(buffer: SharedArrayBuffer, config: GatewayConfig, logger: Logger) {
    this.table = new QuotaTable(buffer)
    this.config = config
    this.logger = logger
    this.#initShared(config.quotas)
    this.proxyId = `${hostname()}:${process.pid}:${this.epoch}`
    this.#flush = new PeriodicJob(this, HB_FLUSH_AT, () => void this.flush(false))
    this.#anomaly = new PeriodicJob(this, HB_ANOMALY_AT, () => this.#anomalyPass())
    this.#heartbeat = new PeriodicJob(this, HB_HEARTBEAT_AT, () => void this.#beat())
  }

  get epoch(): number {
    return this.table.f64[HF_EPOCH]!
  }

  /** The first thread of the process to get here restores the state file; the others wait. */
  #initShared(q: QuotasConfig): void {
    const i32 = this.table.i32
    if (Atomics.compareExchange(i32, H_INIT, 0, 1) === 0) {
      this.table.f64[HF_EPOCH] = Date.now()
      try {
        if (q.stateFile !== undefined) this.#restore(q.stateFile)
      } catch (err) {
        // Never keep the proxy from starting over a file; usage starts from zero, loudly.
        this.#readFailed = true
        this.logger.error({ err: { message: (err as Error).message }, stateFile: q.stateFile }, 'quota state file not restored')
      } finally {
        // Whatever happened, the other threads must not wait for a restore that is over.
        Atomics.store(i32, H_INIT, 2)
        Atomics.notify(i32, H_INIT)
      }
      return
    }
    const t0 = Date.now()
    while (Atomics.load(i32, H_INIT) !== 2 && Date.now() - t0 < 5_000) Atomics.wait(i32, H_INIT, 1, 50)
  }

  #restore(stateFile: string): void {
    const read = readStateFile(stateFile)
    if (read.doc === undefined) {
      // No file is the normal first start; any other reason means usage was lost: say so.
      if (!read.missing) {
        this.#readFailed = true
        this.logger.warn({ stateFile, problem: read.problem }, 'quota state file unreadable: daily usage and budgets start from zero')
      }
      return
    }
    const tenants = this.config.tenants
    const { restored, skipped } = restoreState(this.table, read.doc, Date.now(), (t) => t === ANONYMOUS || Object.hasOwn(tenants, t))
    this.logger.info({ stateFile, tenants: restored }, 'quota state restored')
    if (skipped > 0) {
      this.#readFailed = true
      this.logger.warn({ stateFile, skipped }, 'quota state file entries skipped as damaged')
    }
  }

  /** A filter instance joined (with the config it was built from: the newest wins). */
  attach(config: GatewayConfig, registry: Registry, redis: RedisProvider | undefined): QuotaAttachment {
    const a: QuotaAttachment = { config, redis }
    this.#attached.push(a)
    this.#eventLoopNeeded()
    if (this.#registry !== registry) {
      this.#registry = registry
      this.#metrics = createQuotaMetrics(registry, {
        usedToday: () => this.usedTodayFigures(),
        budgetRatio: () => this.budgetRatios(),
        inflight: () => Atomics.load(this.table.i32, H_INFLIGHT),
        liveProxies: () => this.liveProxies(),
        overflows: () => Atomics.load(this.table.i32, H_OVERFLOWS),
        breakerOpen: () => (this.#store !== undefined && this.#store.breaker.state !== 0 ? 1 : 0),
      })
    }
    if (this.#readFailed) {
      this.#readFailed = false
      this.metrics.stateFileErrors.labels('read').inc()
    }
    this.#follow(a)
    return a
  }

  /** Run the thread's shared jobs by this attachment's config. */
  #follow(a: QuotaAttachment): void {
    const { config, redis } = a
    this.config = config
    this.table.listedBy((tenant) => tenant === ANONYMOUS || Object.hasOwn(config.tenants, tenant))
    const q = config.quotas
    if (this.events === undefined) this.events = new EventSink(this.logger, this.metrics, q.events.webhook)
    else this.events.webhook = q.events.webhook
    this.#configureStore(redis, q)
    this.#flush.every(q.stateFile !== undefined ? q.flushIntervalMs : 0)
    this.#anomaly.every(q.anomaly.enabled ? q.anomaly.intervalMs : 0)
    this.#heartbeat.every(this.#store !== undefined ? q.redis.heartbeatMs : 0)
  }

  /**
   * The event-loop monitor runs while any live filter instance of the thread sheds by event-loop
   * delay (an instance of the previous config still draining included), and only then: a reload
   * that turns `qos.maxEventLoopDelayMs` off stops it (it kept sampling every 0.5 s until the
   * last filter closed), one that turns it back on starts it again.
   */
  #eventLoopNeeded(): void {
    let needed = false
    for (const a of this.#attached) if (a.config.quotas.qos.maxEventLoopDelayMs !== undefined) needed = true
    if (needed) this.eventLoop.start()
    else this.eventLoop.stop()
  }

  get metrics(): QuotaMetrics {
    return this.#metrics!
  }

  get store(): RedisQuotaStore | undefined {
    return this.#store
  }

  #configureStore(redis: RedisProvider | undefined, q: QuotasConfig): void {
    if (redis === undefined) {
      this.#store = undefined
      this.#storeKey = ''
      return
    }
    const key = `${redis.url}|${redis.keyPrefix}|${q.redis.budgetMs}|${q.redis.breakerFailures}|${q.redis.breakerOpenMs}|${q.redis.breakerAfterMs}`
    if (this.#store !== undefined && this.#storeKey === key && this.#store.provider === redis) return
    this.#storeKey = key
    const m = this.metrics
    this.#store = new RedisQuotaStore(redis, q.redis, {
      failure: (kind: RedisFailure) => m.redisErrors.labels(kind).inc(),
      breakerChanged: (open, said) => {
        this.logger.warn({ open, ...(said ? { redisError: said } : {}) }, open ? 'redis unreachable: quota decisions follow the outage policy' : 'redis back: quota decisions shared again')
      },
      recovered: () => {
        m.recoveries.inc()
        if (this.#store !== undefined) void this.reconcile(this.#store)
      },
      keyRefused: (keys, said) => {
        const held = this.#keyLog.take(Date.now())
        if (held !== undefined) this.logger.error({ keys, redisError: said, alsoFailed: held }, 'redis refused a tenant\'s quota keys: its decisions follow the outage policy')
      },
    })
  }

  /** Live proxies sharing Redis as last counted (at least 1). */
  liveProxies(): number {
    return Math.max(1, Atomics.load(this.table.i32, H_LIVE_PROXIES))
  }

  async #beat(): Promise<void> {
    const store = this.#store
    if (store === undefined) return
    const n = await store.heartbeat(this.proxyId, this.config.quotas.redis.heartbeatMs * 3)
    if (n === undefined) return
    Atomics.store(this.table.i32, H_LIVE_PROXIES, n)
    await this.reconcile(store)
  }

  /**
   * Redis answers: push what this process admitted on its own during an outage, for every
   * tenant, now — not at each tenant's next request, which may be hours away while other
   * proxies spend the same limit.
   */
  async reconcile(store: RedisQuotaStore): Promise<void> {
    const t = this.table
    const work = this.#unanswered.splice(0)
    const owed = [0, 0, 0, 0]
    const take = (slot: number, tenant: string) => {
      const gen = t.genOf(slot)
      for (let k = 0; k < QUOTA_KINDS.length; k++) {
        if (!takeAllPending(t, slot, k, owed)) continue
        // An earlier day's units first (an outage across the tenant's midnight), with their own day.
        if (owed[0] !== 0) work.push({ slot, gen, k, tenant, units: owed[0]!, day: owed[1]!, token: randomUUID() })
        if (owed[2] !== 0) work.push({ slot, gen, k, tenant, units: owed[2]!, day: owed[3]!, token: randomUUID() })
      }
    }
    take(OVERFLOW_SLOT, '_overflow')
    t.forEachSlot(take)
    const q = this.config.quotas
    let pushed = 0
    for (const w of work) {
      if (w.units === 0) continue // a decision call's units and its late correction, merged (owe)
      // The tenant's bucket and budget as configured now, should Redis hold none for it yet.
      const kind = QUOTA_KINDS[w.k]!
      const listed = Object.hasOwn(this.config.tenants, w.tenant) ? this.config.tenants[w.tenant] : undefined
      const rule = resolveRule(q, w.tenant, kind, listed?.tier, listed?.timezone, false)
      const shape = { capacity: rule.capacity, bucketMs: rule.budget?.bucketMs ?? 0, buckets: rule.budget?.buckets ?? 0 }
      if (await store.reconcile(w.tenant, kind, w.units, w.day, shape, w.token, w.unlessRan)) pushed++
      else this.#unanswered.push(w)
    }
    if (pushed) this.logger.info({ entries: pushed }, 'usage admitted during the Redis outage reported to Redis')
    this.#retryUnanswered()
  }

  #retryUnanswered(): void {
    if (this.#unanswered.length > 0 && this.#retry === undefined && this.#attached.length > 0) {
      this.#retry = setTimeout(() => {
        this.#retry = undefined
        if (this.#store !== undefined) void this.reconcile(this.#store)
      }, this.config.quotas.redis.heartbeatMs).unref()
    }
  }

  /**
   * Outage units a decision call carried under `token` and that may or may not have reached Redis
   * (the call failed after it was sent): pushed under the same token, applied only if the call was
   * not. The decisions of one call's group share its token: their units are one push. `unlessRan`:
   * the outage policy's count of requests of a call whose reply was lost, charged only if it never
   * ran (RedisQuotaStore.reconcile); a tenant's requests in the call share a token too.
   */
  owe(slot: number, gen: number, k: number, tenant: string, units: number, day: number, token: string, unlessRan?: SentCall): void {
    const same = this.#unanswered.find((w) => w.token === token && w.tenant === tenant)
    if (same !== undefined) same.units += units
    else this.#unanswered.push({ slot, gen, k, tenant, units, day, token, ...(unlessRan && { unlessRan }) })
    this.#retryUnanswered()
  }

  /**
   * Give unanswered pushes back to the table (the thread stops): another thread's heartbeat sends
   * them under a new token — one Redis did apply then counts twice, which beats losing the rest.
   */
  #returnUnanswered(): void {
    clearTimeout(this.#retry)
    this.#retry = undefined
    const sec = clockSec(Date.now())
    for (const w of this.#unanswered.splice(0)) {
      // An outage long enough for the slot to be reclaimed: the tenant's slot now.
      const slot = this.table.holdSlot(w.slot, w.gen, sec) ? w.slot : this.table.slotOf(w.tenant, w.tenant === ANONYMOUS || Object.hasOwn(this.config.tenants, w.tenant))
      returnPending(this.table, slot, w.k, w.units, w.day)
    }
  }

  /** Beat once now (a fresh proxy should count itself and its peers before the first period). */
  beatNow(): Promise<void> {
    return this.#beat()
  }

  emit(ev: QuotaEvent): void {
    this.events?.emit(ev)
  }

  // --- anomaly pass ---------------------------------------------------------------------------

  #anomalyPass(): void {
    const cfg = this.config.quotas.anomaly
    const t = this.table
    const f = t.f64
    const now = Date.now()
    const state: AnomalyState = { mean: 0, variance: 0, n: 0, alerting: false, quiet: 0 }
    t.forEachSlot((slot, tenant) => {
      const count = Atomics.exchange(t.i32, t.si(slot, S_REQUESTS), 0)
      const o = t.tf(slot, T_ANOMALY)
      state.mean = f[o]!
      state.variance = f[o + 1]!
      state.n = f[o + 2]!
      state.alerting = f[o + 3] === 1
      state.quiet = f[o + 4]!
      const obs = observe(state, count, cfg)
      f[o] = state.mean
      f[o + 1] = state.variance
      f[o + 2] = state.n
      f[o + 3] = state.alerting ? 1 : 0
      f[o + 4] = state.quiet
      if (obs.change === 'alert') void this.#alert(tenant, count, obs.baseline, obs.stddev, obs.z, now)
      else if (obs.change === 'clear') this.logger.info({ tenant }, 'tenant request rate back to normal')
    })
  }

  async #alert(tenant: string, requests: number, baseline: number, stddev: number, z: number, now: number): Promise<void> {
    const cfg = this.config.quotas.anomaly
    const store = this.#store
    if (store !== undefined) {
      // Across proxies the first to claim the marker alerts; unreachable Redis: alert anyway.
      const won = await store.claimOnce(quotaKeys.anomaly(store.prefix, tenant), cfg.cooldownMs)
      if (won === false) return
    }
    this.emit({
      type: 'anomaly.rate',
      id: `anomaly:${tenant}:${Math.floor((now - this.epoch) / cfg.intervalMs)}:${this.epoch}`,
      tenant,
      requests,
      intervalMs: cfg.intervalMs,
      baseline: Math.round(baseline * 100) / 100,
      stddev: Math.round(stddev * 100) / 100,
      z: Math.round(z * 100) / 100,
      at: new Date(now).toISOString(),
      proxy: this.proxyId,
    })
  }

  // --- state file -----------------------------------------------------------------------------

  async flush(sync: boolean): Promise<void> {
    const path = this.config.quotas.stateFile
    if (path === undefined) return
    if (!sync && this.#flushing) return // the previous period's write is still going
    // Numbered before the snapshot: a later snapshot (of any thread) never loses to an earlier one.
    const n = nextStateWrite(this.table)
    const doc = snapshotState(this.table, Date.now())
    try {
      if (sync) writeStateFileSync(path, doc, this.table, n)
      else {
        this.#flushing = true
        await writeStateFile(path, doc, this.table, n)
      }
    } catch (err) {
      this.#metrics?.stateFileErrors.labels('write').inc()
      // A missing directory or a read-only disk fails every period: one line a minute says it.
      const held = this.#writeLog.take(Date.now())
      if (held !== undefined) this.logger.error({ err: { message: (err as Error).message }, stateFile: path, alsoFailed: held }, 'quota state file not written')
    } finally {
      if (!sync) this.#flushing = false
    }
  }

  // --- gauges ---------------------------------------------------------------------------------

  /** Kinds some route of the current config counts against. */
  #kindsInUse(): QuotaKindName[] {
    const kinds = new Set<QuotaKindName>()
    for (const r of this.config.routes) for (const f of r.filters) if (f.name === 'quota') kinds.add(f.kind)
    return [...kinds]
  }

  async usedTodayFigures(): Promise<{ tenant: string; kind: string; value: number }[]> {
    const out: { tenant: string; kind: string; value: number }[] = []
    const tenants = Object.keys(this.config.tenants)
    const kinds = this.#kindsInUse()
    const now = Date.now()
    const store = this.#store
    let fromRedis: (string | null)[][] | undefined
    if (store !== undefined && store.breaker.state === 0) {
      const keys: string[] = []
      for (const t of tenants) for (const k of kinds) keys.push(quotaKeys.kind(store.prefix, t, k))
      fromRedis = await store.readFields(keys, ['d', 'u', 'z', 'e'], 250)
    }
    const table = this.table
    let i = 0
    for (const tenant of tenants) {
      const tz = this.config.tenants[tenant]?.timezone ?? 'UTC'
      const today = localDayNumber(tz, now)
      const zc = zoneCode(tz)
      const slot = table.peekSlot(tenant)
      for (const kind of kinds) {
        let value = 0
        const r = fromRedis?.[i++]
        // A day counted in the tenant's previous zone (its timezone changed by a reload) that is not
        // over yet counts as today's, as the next decision carries it (rezone, redis-script.ts) and as
        // the control plane reads it (usedTodayFromRedis / usedTodayFromState): the gauge said 0
        // until the tenant's next request, while its usage was in force.
        if (r !== undefined) {
          const [d, u, z, e] = r
          if (d !== null && (Number(d) === today || (z != null && e != null && Number(z) !== zc && Number(e) > now))) value = Number(u ?? 0)
        } else if (slot > 0) {
          const k = KIND_INDEX[kind]
          const stored = table.f64[table.kf(slot, k, K_DAY)]!
          const old = table.i32[table.si(slot, S_ZONE + k)]!
          if (stored === today || (stored > 0 && old !== 0 && old !== zc && dayRunsInZone(old, stored, today, now))) value = table.f64[table.kf(slot, k, K_USED)]!
        }
        out.push({ tenant, kind, value })
      }
    }
    return out
  }

  async budgetRatios(): Promise<{ tenant: string; value: number }[]> {
    const q = this.config.quotas
    const out: { tenant: string; value: number }[] = []
    const now = Date.now()
    const t = this.table
    const budgeted: { tenant: string; rule: BudgetRule }[] = []
    for (const tenant of Object.keys(this.config.tenants)) {
      const own = q.tenants[tenant]?.budget
      const b = own !== undefined ? own : q.defaults.budget
      if (b != null) budgeted.push({ tenant, rule: budgetRule(b) })
    }
    // With Redis, the budget is Redis's (as usedToday): this proxy's mirror holds what its own last
    // decision for the tenant saw — 0 for a tenant served by the other proxies, and a figure that
    // never fell as usage left the window (a 95 % spend a month ago, still 0.95 under max by tenant).
    const store = this.#store
    let fromRedis: number[] | undefined
    if (store !== undefined && store.breaker.state === 0 && budgeted.length > 0) {
      fromRedis = await store.budgetTotals(budgeted.map((x) => quotaKeys.budget(store.prefix, x.tenant)), 250)
    }
    for (let i = 0; i < budgeted.length; i++) {
      const { tenant, rule } = budgeted[i]!
      const redisTotal = fromRedis?.[i]
      if (redisTotal !== undefined && redisTotal >= 0) {
        out.push({ tenant, value: redisTotal / rule.units })
        continue
      }
      const slot = t.peekSlot(tenant)
      let used = 0
      if (slot > 0) {
        if (this.#store !== undefined) {
          used = t.f64[t.tf(slot, T_BUDGET_MIRROR)]! + t.f64[t.tf(slot, T_BUDGET_LOCAL)]!
        } else {
          const ring = t.heldRing(slot)
          if (ring !== -1) {
            advance(t.f64, t.ringBase(ring), now, rule)
            used = total(t.f64, t.ringBase(ring))
            t.unlockRing(ring)
          }
        }
      }
      out.push({ tenant, value: used / rule.units })
    }
    return out
  }

  // --- lifecycle ------------------------------------------------------------------------------

  /**
   * A filter instance closed; the last one of the thread stops the jobs and saves the state.
   * When the newest closes first (its config version was refused), the one before it takes over.
   */
  async detach(a: QuotaAttachment): Promise<void> {
    const i = this.#attached.indexOf(a)
    if (i === -1) return
    this.#attached.splice(i, 1)
    const n = this.#attached.length
    this.#eventLoopNeeded()
    if (n > 0) {
      if (i === n) this.#follow(this.#attached[n - 1]!)
      return
    }
    this.#flush.stop()
    this.#anomaly.stop()
    this.#heartbeat.stop()
    this.#returnUnanswered()
    await this.flush(true)
    await this.#store?.leave(this.proxyId)
    await this.events?.drain(1_000)
    await this.events?.close()
  }
}

const runtimes = new WeakMap<SharedArrayBuffer, QuotaRuntime>()
let privateBuffer: SharedArrayBuffer | undefined

/** The runtime of this thread for this process's quota memory (a private buffer when none was handed over). */
export function quotaRuntime(shared: SharedArrayBuffer | undefined, config: GatewayConfig, logger: Logger): QuotaRuntime {
  const buffer = shared ?? (privateBuffer ??= new SharedArrayBuffer(QUOTA_SHARED_BYTES))
  let rt = runtimes.get(buffer)
  if (rt === undefined) {
    rt = new QuotaRuntime(buffer, config, logger)
    runtimes.set(buffer, rt)
  }
  return rt
}

export { QUOTA_KINDS }
