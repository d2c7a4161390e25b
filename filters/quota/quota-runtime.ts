// What the quota filters of one worker thread share: the process-wide table, the Redis store and
// its breaker, the event sink, metrics, the event-loop monitor, and the periodic jobs (state
// file flush, anomaly pass, proxy heartbeat). Each periodic job runs in exactly one thread per
// period: the threads race for the period with a compare-and-swap in shared memory.
import { randomUUID } from 'node:crypto'
import { rmSync } from 'node:fs'
import { hostname } from 'node:os'
import { BroadcastChannel } from 'node:worker_threads'
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
import { isOwedFileOf, nextStateWrite, owedFilePath, readOwedFile, readOwedFiles, restoreState, snapshotState, sweepStaleTemps, writeOwedFile, writeStateFile, writeStateFileSync, type OwedEntry } from './state-file.ts'

/**
 * How long a closing thread waits for Redis to take the outage units it still owes (SIGTERM, a
 * reload without the quota filter). They are saved to disk first (with a state file), so a
 * thread stopped meanwhile loses none; the drain's deadline is spent before the filters close.
 */
export const CLOSE_PUSH_MS = 1_000

const OVERFLOW_TENANT = '_overflow'

/** This process's name among the proxies sharing Redis (`epoch`: its quota table's, shared by its threads). */
export function processProxyId(epoch: number): string {
  return `${hostname()}:${process.pid}:${epoch}`
}

/**
 * The BroadcastChannel on which the worker threads of one process hand each other owed files:
 * a closing thread names its file, the supervisor (main thread) names a dead thread (index.ts).
 */
export function owedHandoverName(epoch: number): string {
  return `igw-quota-owed:${processProxyId(epoch)}`
}

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
  /** The tenant's slot and its generation then (reclaimed since, the slot is another tenant's); -1: restored from a file. */
  slot: number
  gen: number
  k: number
  tenant: string
  units: number
  day: number
  token: string
  /** The outage policy's count of requests a lost decision call carried: charged only if it never ran. */
  unlessRan?: SentCall
  /** A push of it is out (not sent twice at once, not merged into). */
  sending?: boolean
  /** The owed file holding it on disk (saved periodically or at a close, or restored at start): removed once none of its entries is owed. */
  file?: string
  /**
   * Taken from the table by this thread and never sent: later units of the same (slot, kind, day)
   * join it (Redis has not seen its token), so a long outage keeps one entry per tenant and day.
   */
  fresh?: boolean
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
   * Outage units taken from the table for Redis and not yet taken by it: being pushed, or pushes
   * Redis did not answer. Redis may have applied one whose reply was lost (the connection dropped
   * after the script ran): each is sent again with its own token, which Redis applies once — given
   * back to the table, the units went out under a new token and were counted twice. Retried every
   * heartbeat period by this thread (another thread's heartbeat winning the period does not see
   * them). Also those a close saved (or a start restored) from an owed file (state-file.ts).
   */
  readonly #owed: OwedPush[] = []
  #retry: NodeJS.Timeout | undefined
  /** Pushes out now (a close waits for them too, within its bound). */
  readonly #pushes = new Set<Promise<boolean>>()
  /** Owed files or entries that could not be restored at start (counted once metrics exist). */
  #owedUnusable = 0
  /**
   * Saves this thread's owed pushes every `flushIntervalMs` while Redis is configured with a state
   * file, so a SIGKILL or OOM kill during an outage loses at most one interval of them (they lived
   * only in memory until a clean close). Per thread, not a leased job: each thread's are its own.
   */
  #owedTimer: NodeJS.Timeout | undefined
  #owedEvery = 0
  /** #owed changed since it was last saved: a save only then (no write per period of a long outage). */
  #owedDirty = false
  readonly #owedLog = new LogWindow(60_000)
  /**
   * Where a worker thread whose last quota filter closed says which owed file it left, and the
   * supervisor which thread died (index.ts workerExited), so a thread of this process still
   * serving (and beating) pushes it now, not the next process start.
   */
  #handover: BroadcastChannel | undefined

  constructor(buffer: SharedArrayBuffer, config: GatewayConfig, logger: Logger) {
    this.table = new QuotaTable(buffer)
    this.config = config
    this.logger = logger
    this.#initShared(config.quotas)
    this.proxyId = processProxyId(this.epoch)
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
        if (q.stateFile !== undefined) {
          this.#restoreOwed(q.stateFile)
          this.#restore(q.stateFile)
          // What writers killed mid-write left (state and owed files' temps): not held until the first periodic write.
          void sweepStaleTemps(q.stateFile, this.table).catch(() => 0)
        }
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

  /**
   * Outage units an earlier process (or thread) saved at its close: owed by this thread now, pushed
   * with their own tokens when Redis answers (at the first heartbeat, before this thread serves).
   */
  #restoreOwed(stateFile: string): void {
    const seen = new Set<string>()
    let entries = 0
    let units = 0
    let unusable = 0
    const reads = readOwedFiles(stateFile)
    for (const read of reads) {
      if (read.problem !== undefined) {
        unusable++
        this.logger.error({ file: read.file, problem: read.problem }, 'quota owed-units file unreadable: the outage usage it holds does not reach Redis (the file is left in place)')
        continue
      }
      if (read.skipped > 0) {
        unusable += read.skipped
        this.logger.warn({ file: read.file, skipped: read.skipped }, 'quota owed-units file entries skipped as damaged')
      }
      let kept = 0
      for (const e of read.entries) {
        // The same push in two files (a close's file, then the next close's before the first was
        // removed): one entry, which the first file keeps on disk. Redis would apply its token once anyway.
        const id = `${e.tenant}\0${e.token}`
        if (seen.has(id)) continue
        seen.add(id)
        const w: OwedPush = { slot: -1, gen: 0, k: KIND_INDEX[e.kind], tenant: e.tenant, units: e.units, day: e.day, token: e.token, file: read.file }
        if (e.unlessRan !== undefined) w.unlessRan = e.unlessRan
        this.#owed.push(w)
        kept++
        units += e.units
      }
      entries += kept
      // Nothing of its own left to push (empty, damaged, or held by another file): not needed any more.
      if (kept === 0) this.#removeFile(read.file)
    }
    this.#owedUnusable = unusable
    if (entries > 0) this.logger.warn({ stateFile, entries, units }, 'usage admitted during an earlier Redis outage restored: reported to Redis when it answers')
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
    if (this.#owedUnusable > 0) {
      this.metrics.stateFileErrors.labels('read').inc(this.#owedUnusable)
      this.#owedUnusable = 0
    }
    this.#follow(a)
    // Owed pushes restored at start, or kept by a close: retried by this thread until Redis takes them.
    this.#retryUnanswered()
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
    this.#saveOwedEvery(q.stateFile !== undefined && this.#store !== undefined ? q.flushIntervalMs : 0)
    if (this.#handover === undefined && q.stateFile !== undefined) {
      this.#handover = new BroadcastChannel(this.#handoverName)
      this.#handover.onmessage = (ev) => this.#takeOver((ev as { data: unknown }).data)
      this.#handover.unref()
      // The supervisor names again the threads that died before this one listened (it may be the
      // restart of the only worker: nobody heard of the death then).
      this.#handover.postMessage({ ask: true })
    }
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
   * proxies spend the same limit. `deadline` (performance.now()): a closing thread's bound; a push
   * still out then stays owed (Redis may yet apply it: its token keeps it to once).
   */
  async reconcile(store: RedisQuotaStore, deadline = Number.POSITIVE_INFINITY): Promise<void> {
    // Not connected (a retry during the outage): the shared units stay in the table, where they
    // outlive this thread; taken into #owed unsaved, a thread that died before its next save
    // (uncaught exception, watchdog, heap limit) took them with it.
    if (store.provider.ready) this.#takeOwed()
    const q = this.config.quotas
    let pushed = 0
    for (const w of this.#owed.slice()) {
      if (w.sending) continue
      if (w.units === 0) {
        // a decision call's units and its late correction, merged (owe)
        this.#settled(w)
        continue
      }
      const left = deadline - performance.now()
      if (left <= 0) break
      // The tenant's bucket and budget as configured now, should Redis hold none for it yet.
      const kind = QUOTA_KINDS[w.k]!
      const listed = Object.hasOwn(this.config.tenants, w.tenant) ? this.config.tenants[w.tenant] : undefined
      const rule = resolveRule(q, w.tenant, kind, listed?.tier, listed?.timezone, false)
      const shape = { capacity: rule.capacity, bucketMs: rule.budget?.bucketMs ?? 0, buckets: rule.budget?.buckets ?? 0 }
      // Not connected: the push would not go out (RedisQuotaStore.reconcile), so it stays unsent.
      if (!store.provider.ready) break
      w.sending = true
      w.fresh = false // its token may reach Redis from now on: nothing joins it any more
      const push = store.reconcile(w.tenant, kind, w.units, w.day, shape, w.token, w.unlessRan).then((ok) => {
        w.sending = false
        this.#pushes.delete(push)
        if (ok) this.#settled(w)
        return ok
      })
      this.#pushes.add(push)
      if (await within(push, deadline)) pushed++
    }
    if (pushed) this.logger.info({ entries: pushed }, 'usage admitted during the Redis outage reported to Redis')
    this.#retryUnanswered()
  }

  /**
   * Everything the table owes Redis, into #owed (each (tenant, kind, day) a push with a token of its
   * own; units of one never sent yet join it).
   */
  #takeOwed(): void {
    const t = this.table
    const owed = [0, 0, 0, 0]
    // Indexed once per take: a long outage holds one entry per tenant, kind and day, thousands maybe.
    let fresh: Map<string, OwedPush> | undefined
    const add = (slot: number, gen: number, k: number, tenant: string, units: number, day: number) => {
      this.#owedDirty = true
      if (fresh === undefined) {
        fresh = new Map()
        for (const w of this.#owed) if (w.fresh === true) fresh.set(`${w.slot}:${w.gen}:${w.k}:${w.day}`, w)
      }
      const key = `${slot}:${gen}:${k}:${day}`
      const same = fresh.get(key)
      if (same !== undefined) same.units += units
      else {
        const w: OwedPush = { slot, gen, k, tenant, units, day, token: randomUUID(), fresh: true }
        this.#owed.push(w)
        fresh.set(key, w)
      }
    }
    const take = (slot: number, tenant: string) => {
      const gen = t.genOf(slot)
      for (let k = 0; k < QUOTA_KINDS.length; k++) {
        if (!takeAllPending(t, slot, k, owed)) continue
        // An earlier day's units first (an outage across the tenant's midnight), with their own day.
        if (owed[0] !== 0) add(slot, gen, k, tenant, owed[0]!, owed[1]!)
        if (owed[2] !== 0) add(slot, gen, k, tenant, owed[2]!, owed[3]!)
      }
    }
    take(OVERFLOW_SLOT, OVERFLOW_TENANT)
    t.forEachSlot(take)
  }

  /** Redis took `w` (or it came to nothing): no longer owed, and its file goes once it holds nothing owed. */
  #settled(w: OwedPush): void {
    const i = this.#owed.indexOf(w)
    if (i === -1) return
    this.#owed.splice(i, 1)
    this.#owedDirty = true
    const file = w.file
    if (file !== undefined && !this.#owed.some((o) => o.file === file)) this.#removeFile(file)
  }

  #removeFile(file: string): void {
    try {
      rmSync(file, { force: true })
    } catch (err) {
      // Left behind, it is read again at the next start: its tokens keep its pushes to once.
      this.logger.warn({ err: { message: (err as Error).message }, file }, 'quota owed-units file not removed')
    }
  }

  #retryUnanswered(): void {
    if (this.#owed.length > 0 && this.#retry === undefined && this.#attached.length > 0) {
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
    // One token, one entry (saved or not: the next save writes the sum), or Redis would take only
    // the first push under it.
    const same = this.#owed.find((w) => w.token === token && w.tenant === tenant && !w.sending)
    if (same !== undefined) same.units += units
    else this.#owed.push({ slot, gen, k, tenant, units, day, token, ...(unlessRan && { unlessRan }) })
    this.#owedDirty = true
    this.#retryUnanswered()
  }

  /**
   * The thread's last quota filter closed (SIGTERM, a reload without the quota filter): what it
   * owes Redis is saved beside the state file first (the next start pushes it), then pushed for up
   * to CLOSE_PUSH_MS. What is neither pushed nor saved (no state file, or it cannot be written) is
   * logged and counted, and given back to the table for another thread's heartbeat or a later
   * quota filter of this process — under a new token: one Redis did apply then counts twice,
   * which beats losing the rest.
   */
  async #settleOwed(): Promise<void> {
    clearTimeout(this.#retry)
    this.#retry = undefined
    this.#takeOwed()
    if (this.#owed.length === 0) return
    this.#saveOwed()
    const store = this.#store
    if (store !== undefined) {
      const before = this.#owed.length
      const deadline = performance.now() + CLOSE_PUSH_MS
      await this.reconcile(store, deadline)
      // Pushes a heartbeat sent before the close: their outcome decides what is still owed.
      if (this.#pushes.size > 0) await within(Promise.all(this.#pushes), deadline)
      if (this.#owed.length === 0) return
      // The file holds only what is still owed (a push taken meanwhile need not wait for its token).
      if (this.#owed.length < before || this.#owedDirty) this.#saveOwed()
    }
    let units = 0
    let saved = 0
    let savedUnits = 0
    const file = this.#owed.find((w) => w.file !== undefined)?.file
    const sec = clockSec(Date.now())
    for (const w of this.#owed.slice()) {
      if (w.file !== undefined) {
        // On disk: the next start pushes it (kept here too, should a quota filter of this process come back first).
        saved++
        savedUnits += w.units
        continue
      }
      units += w.units
      this.#owed.splice(this.#owed.indexOf(w), 1)
      // An outage long enough for the slot to be reclaimed: the tenant's slot now.
      const slot =
        w.slot >= 0 && this.table.holdSlot(w.slot, w.gen, sec)
          ? w.slot
          : w.tenant === OVERFLOW_TENANT
            ? OVERFLOW_SLOT
            : this.table.slotOf(w.tenant, w.tenant === ANONYMOUS || Object.hasOwn(this.config.tenants, w.tenant))
      returnPending(this.table, slot, w.k, w.units, w.day)
    }
    if (saved > 0) {
      this.logger.warn({ entries: saved, units: savedUnits, file }, 'usage admitted during the Redis outage not reported to Redis at close: saved, the next start reports it')
      // A thread of this process still serving takes it over (its heartbeat pushes it): a quota
      // filter closing in one thread only (a config version the others refused) left it until the
      // next start. At a shutdown nobody is left to listen, and the file waits for the next start.
      if (file !== undefined) {
        const ch = new BroadcastChannel(this.#handoverName)
        ch.postMessage({ file })
        ch.close()
      }
    }
    if (units > 0) {
      this.#metrics?.outageUnitsUnsaved.inc(units)
      const stateFile = this.config.quotas.stateFile
      this.logger.error(
        { units, ...(stateFile === undefined ? { hint: 'set quotas.stateFile to keep them for the next start' } : { stateFile }) },
        'usage admitted during the Redis outage neither reported to Redis nor saved at close: lost if the process exits before Redis answers',
      )
    }
  }

  /**
   * Write this thread's owed pushes to its owed file (the state file's neighbour), replacing the
   * files they came from. No state file, or the write fails: they stay unsaved (logged, counted).
   */
  #saveOwed(periodic = false): void {
    const stateFile = this.config.quotas.stateFile
    if (stateFile === undefined) return
    const path = owedFilePath(stateFile, this.epoch)
    const owed: OwedEntry[] = []
    for (const w of this.#owed) {
      if (w.units === 0) continue
      const e: OwedEntry = { tenant: w.tenant, kind: QUOTA_KINDS[w.k]!, units: w.units, day: w.day, token: w.token }
      if (w.unlessRan !== undefined) e.unlessRan = { marker: w.unlessRan.marker, seq: w.unlessRan.seq }
      owed.push(e)
    }
    try {
      if (owed.length === 0) this.#removeFile(path)
      else writeOwedFile(path, { version: 1, savedAt: Date.now(), proxy: this.proxyId, owed })
    } catch (err) {
      this.#metrics?.stateFileErrors.labels('write').inc()
      // A periodic save that fails fails every period (a full or read-only disk): one line a minute.
      const held = periodic ? this.#owedLog.take(Date.now()) : 0
      if (held !== undefined) this.logger.error({ err: { message: (err as Error).message }, file: path, ...(held ? { alsoFailed: held } : {}) }, 'quota owed-units file not written')
      return
    }
    this.#owedDirty = false
    const replaced = new Set<string>()
    for (const w of this.#owed) {
      if (w.file !== undefined && w.file !== path) replaced.add(w.file)
      w.file = path
    }
    for (const f of replaced) this.#removeFile(f)
  }

  /** (Re)start the periodic save of the owed pushes with this period; 0 stops it. */
  #saveOwedEvery(periodMs: number): void {
    if (periodMs === this.#owedEvery) return
    clearInterval(this.#owedTimer)
    this.#owedTimer = undefined
    this.#owedEvery = periodMs
    if (periodMs > 0) this.#owedTimer = setInterval(() => this.#persistOwed(), periodMs).unref()
  }

  /**
   * What the table owes Redis (units the outage policy admitted, in shared memory) moves into this
   * thread's pushes, each under a token, and they are saved when they changed. The token is taken
   * before the save: a push that reaches Redis and is then killed before its file is updated is
   * pushed again by the next start under the same token, which Redis applies once.
   */
  #persistOwed(): void {
    try {
      this.#takeOwed()
      if (this.#owedDirty) this.#saveOwed(true)
      this.#retryUnanswered()
    } catch (err) {
      this.logger.error({ err }, 'quota owed-units save failed')
    }
  }

  get #handoverName(): string {
    return owedHandoverName(this.epoch)
  }

  /**
   * Another worker thread of this process closed its last quota filter owing Redis what is in
   * `{ file }`, or died (`{ thread }`: its id, said by the supervisor, which saw it exit) leaving
   * what its last periodic save wrote to its owed file: owed by this thread too, pushed at its next
   * retry under the same tokens (Redis applies each once, should the closing thread or a third one
   * push them as well), and moved into this thread's own file at its next save (the other file goes then).
   */
  #takeOver(data: unknown): void {
    const stateFile = this.config.quotas.stateFile
    if (this.#attached.length === 0 || stateFile === undefined || typeof data !== 'object' || data === null) return
    const { file: named, thread } = data as { file?: unknown; thread?: unknown }
    const died = typeof thread === 'number' && Number.isSafeInteger(thread) && thread > 0
    const file = died ? owedFilePath(stateFile, this.epoch, thread) : named
    if (typeof file !== 'string' || !isOwedFileOf(stateFile, file)) return
    const read = readOwedFile(file)
    if (read.problem !== undefined) return // gone already (another thread took it and saved), or the next start reports it
    let entries = 0
    let units = 0
    const held = new Set(this.#owed.map((w) => `${w.tenant}\0${w.token}`))
    for (const e of read.entries) {
      if (held.has(`${e.tenant}\0${e.token}`)) continue
      const w: OwedPush = { slot: -1, gen: 0, k: KIND_INDEX[e.kind], tenant: e.tenant, units: e.units, day: e.day, token: e.token, file }
      if (e.unlessRan !== undefined) w.unlessRan = e.unlessRan
      this.#owed.push(w)
      entries++
      units += e.units
    }
    if (entries === 0) return
    this.#owedDirty = true
    this.logger.info({ entries, units, file }, `usage admitted during the Redis outage left by a ${died ? 'worker thread that died' : 'closing worker thread'}: reported to Redis by this one`)
    this.#retryUnanswered()
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
    this.#saveOwedEvery(0)
    // Not taking over another thread's file while this one goes too.
    this.#handover?.close()
    this.#handover = undefined
    await this.#settleOwed()
    await this.flush(true)
    await this.#store?.leave(this.proxyId)
    await this.events?.drain(1_000)
    await this.events?.close()
  }
}

/** `p`'s outcome, or false once `deadline` (performance.now()) passes first. */
async function within<T>(p: Promise<T>, deadline: number): Promise<T | false> {
  if (deadline === Number.POSITIVE_INFINITY) return p
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<false>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - performance.now()), false)))])
  } finally {
    clearTimeout(timer)
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
