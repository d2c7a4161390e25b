// The cross-proxy quota store: one EVALSHA per decision on the worker's shared ioredis
// connection (no offline queue: while disconnected a call fails at once), a hard time budget
// per call, and a circuit breaker so an outage is decided locally in microseconds instead of
// costing every request the budget. It never throws: a call resolves to a reply or a failure.
import type { Redis } from 'ioredis'
import { quotaKeys } from '../../config/quota-usage.ts'
import type { RedisProvider } from '../../proxy/filter.ts'
import { CircuitBreaker } from './circuit-breaker.ts'
import { DECIDE_LUA, HEARTBEAT_LUA, RECONCILE_LUA } from './redis-script.ts'

interface QuotaCommands {
  igwQuotaDecide(kindKey: string, budgetKey: string, ...args: (string | number)[]): Promise<number[]>
  igwQuotaHeartbeat(key: string, id: string, ttlMs: number): Promise<number>
  igwQuotaReconcile(kindKey: string, budgetKey: string, units: number, day: number): Promise<number>
}

type QuotaRedis = Redis & QuotaCommands

export type RedisFailure = 'timeout' | 'unavailable' | 'error'

export interface RedisStoreSettings {
  budgetMs: number
  breakerFailures: number
  breakerOpenMs: number
  breakerAfterMs: number
}

export interface RedisStoreEvents {
  failure(kind: RedisFailure): void
  breakerChanged(open: boolean): void
  recovered(): void
}

const defined = new WeakSet<Redis>()

/** A call whose budget ran out while Redis answered others may wait up to this many budgets. */
export const PROGRESS_WAIT_FACTOR = 5

function withCommands(r: Redis): QuotaRedis {
  if (!defined.has(r)) {
    r.defineCommand('igwQuotaDecide', { numberOfKeys: 2, lua: DECIDE_LUA })
    r.defineCommand('igwQuotaHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA })
    r.defineCommand('igwQuotaReconcile', { numberOfKeys: 2, lua: RECONCILE_LUA })
    defined.add(r)
  }
  return r as QuotaRedis
}

/**
 * The outcome of a call that outlived its budget: the reply (Redis ran the script after all)
 * or undefined (it failed in the end).
 */
export type LateReply = (reply: number[] | undefined) => void

/** A call in flight: settles once, on the reply or on the budget timer, whichever is first. */
class Call {
  done = false
  timer: NodeJS.Timeout | undefined = undefined
  resolve!: (v: number[] | RedisFailure) => void
  readonly store: RedisQuotaStore
  readonly late: LateReply | undefined
  readonly sentAt: number
  /** The store's reply count when this call went out (or was last extended). */
  repliesSeen: number

  constructor(store: RedisQuotaStore, late: LateReply | undefined) {
    this.store = store
    this.late = late
    this.sentAt = performance.now()
    this.repliesSeen = store.replies
  }

  onReply = (reply: number[]): void => {
    this.store.replies++
    if (this.done) {
      // Too late for the request, but Redis counted it: the caller squares its books.
      this.late?.(reply)
      return
    }
    this.done = true
    clearTimeout(this.timer)
    this.store.succeeded()
    this.resolve(reply)
  }

  onError = (err: Error): void => {
    if (this.done) {
      this.late?.(undefined)
      return
    }
    this.done = true
    clearTimeout(this.timer)
    this.store.failed(/closed|writeable|connect|ECONN|EPIPE/i.test(err.message) ? 'unavailable' : 'error')
    this.resolve(this.store.lastFailure)
  }
}

/**
 * The budget timer fired. Timers run before the event loop polls sockets, so on a busy loop a
 * reply may already be waiting unread: give this iteration's poll phase the chance to deliver
 * it (setImmediate runs right after poll) before calling it a timeout.
 */
function onTimeout(call: Call): void {
  if (!call.done) setImmediate(expire, call)
}

function expire(call: Call): void {
  if (call.done) return
  const store = call.store
  // Replies kept arriving since this call went out: Redis is alive and answering in order; this
  // reply is behind our own busy event loop, not lost. Keep waiting, within a hard cap.
  if (store.replies > call.repliesSeen && performance.now() - call.sentAt < store.maxWaitMs) {
    call.repliesSeen = store.replies
    call.timer = setTimeout(onTimeout, store.budgetMs, call)
    return
  }
  call.done = true
  call.store.failed('timeout')
  call.resolve('timeout')
}

export class RedisQuotaStore {
  readonly provider: RedisProvider
  readonly breaker: CircuitBreaker
  lastFailure: RedisFailure = 'error'
  /** Replies received on this store's calls (progress: is Redis answering at all?). */
  replies = 0
  readonly budgetMs: number
  /** Longest wait while Redis keeps answering other calls (our own event loop is the backlog). */
  readonly maxWaitMs: number
  #warm: Promise<boolean> | undefined
  #settings: RedisStoreSettings
  #events: RedisStoreEvents

  constructor(provider: RedisProvider, settings: RedisStoreSettings, events: RedisStoreEvents) {
    this.provider = provider
    this.#settings = settings
    this.#events = events
    this.budgetMs = settings.budgetMs
    this.maxWaitMs = settings.budgetMs * PROGRESS_WAIT_FACTOR
    this.breaker = new CircuitBreaker(settings.breakerFailures, settings.breakerOpenMs, settings.breakerAfterMs)
  }

  get prefix(): string {
    return this.provider.keyPrefix
  }

  /** Connect now and wait (bounded) for readiness, so the first requests do not fall back. */
  warmUp(ms: number): Promise<boolean> {
    return (this.#warm ??= this.#warmUp(ms))
  }

  async #warmUp(ms: number): Promise<boolean> {
    const r = this.provider.client()
    withCommands(r)
    const ready = r.status === 'ready' || (await this.#ready(r, ms))
    // Load the script now: the first EVALSHA would otherwise miss (NOSCRIPT) and pay a second
    // round trip inside some request's budget.
    if (ready) await withTimeout(r.script('LOAD', DECIDE_LUA), ms).catch(() => undefined)
    return ready
  }

  #ready(r: Redis, ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        r.off('ready', ready)
        resolve(false)
      }, ms)
      t.unref()
      const ready = () => {
        clearTimeout(t)
        resolve(true)
      }
      r.once('ready', ready)
    })
  }

  /** May this request use Redis now (breaker closed, or this is the half-open probe)? */
  usable(now: number): boolean {
    return this.breaker.allow(now)
  }

  /**
   * Run the decision script. Resolves within the budget to the script's reply or a failure;
   * call only after usable() said yes.
   */
  decide(kindKey: string, budgetKey: string, args: (string | number)[], late?: LateReply): Promise<number[] | RedisFailure> {
    const r = this.provider.client()
    if (r.status !== 'ready') {
      this.failed('unavailable')
      return Promise.resolve('unavailable')
    }
    const call = new Call(this, late)
    const p = new Promise<number[] | RedisFailure>((resolve) => (call.resolve = resolve))
    call.timer = setTimeout(onTimeout, this.budgetMs, call)
    withCommands(r).igwQuotaDecide(kindKey, budgetKey, ...args).then(call.onReply, call.onError)
    return p
  }

  succeeded(): void {
    if (this.breaker.success()) {
      this.#events.recovered()
      this.#events.breakerChanged(false)
    }
  }

  failed(kind: RedisFailure): void {
    this.lastFailure = kind
    this.#events.failure(kind)
    if (this.breaker.failure(Date.now())) this.#events.breakerChanged(true)
  }

  /** Announce this proxy and count the live ones (undefined when Redis does not answer). */
  async heartbeat(id: string, ttlMs: number): Promise<number | undefined> {
    const r = this.provider.client()
    if (r.status !== 'ready') return undefined
    try {
      return await withTimeout(withCommands(r).igwQuotaHeartbeat(quotaKeys.proxies(this.prefix), id, ttlMs), 500)
    } catch {
      return undefined
    }
  }

  /** Push outage usage of one (tenant, kind) to Redis; false when Redis did not take it. */
  async reconcile(tenant: string, kind: string, units: number, day: number): Promise<boolean> {
    const r = this.provider.client()
    if (r.status !== 'ready') return false
    try {
      await withTimeout(withCommands(r).igwQuotaReconcile(quotaKeys.kind(this.prefix, tenant, kind), quotaKeys.budget(this.prefix, tenant), units, day), 500)
      return true
    } catch {
      return false
    }
  }

  /** Leave the live set at shutdown so the others' share grows at once. */
  async leave(id: string): Promise<void> {
    const r = this.provider.client()
    if (r.status !== 'ready') return
    await withTimeout(r.zrem(quotaKeys.proxies(this.prefix), id), 200).catch(() => undefined)
  }

  /** First alert wins across proxies: SET NX with the cooldown as TTL. */
  async claimOnce(key: string, ttlMs: number): Promise<boolean | undefined> {
    const r = this.provider.client()
    if (r.status !== 'ready') return undefined
    try {
      return (await withTimeout(r.set(key, '1', 'PX', ttlMs, 'NX'), 200)) === 'OK'
    } catch {
      return undefined
    }
  }

  /** Several hashes' fields in one pipeline (gauges on scrape). */
  async readFields(keys: string[], fields: string[], ms: number): Promise<(string | null)[][] | undefined> {
    const r = this.provider.client()
    if (r.status !== 'ready' || keys.length === 0) return undefined
    const pipe = r.pipeline()
    for (const k of keys) pipe.hmget(k, ...fields)
    try {
      const res = await withTimeout(pipe.exec(), ms)
      if (res === null) return undefined
      return res.map(([err, v]) => (err ? fields.map(() => null) : (v as (string | null)[])))
    } catch {
      return undefined
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error('redis timeout')), ms)
    }),
  ]).finally(() => clearTimeout(t))
}
