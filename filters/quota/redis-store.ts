// The cross-proxy quota store: the decisions of one event-loop turn as one EVALSHA on the
// worker's shared ioredis connection (no offline queue: while disconnected a call fails at
// once), a hard time budget per call, and a circuit breaker so an outage is decided locally in
// microseconds instead of costing every request the budget. It never throws: a call resolves
// to a reply or a failure.
import { createHash, randomUUID } from 'node:crypto'
import { Command, ReplyError, type Redis } from 'ioredis'
import { quotaKeys } from '../../config/quota-usage.ts'
import type { RedisProvider } from '../../proxy/filter.ts'
import { CircuitBreaker } from './circuit-breaker.ts'
import { MICRO } from './token-bucket.ts'
import { BUDGET_TOTALS_LUA, DECIDE_LUA, GROUP_HEAD, HEARTBEAT_LUA, PEEK_ARG, PUSH_TOKEN_TTL_MS, RECONCILE_LUA } from './redis-script.ts'

interface QuotaCommands {
  igwQuotaHeartbeat(key: string, id: string, ttlMs: number): Promise<number>
  igwQuotaReconcile(numKeys: number, ...args: (string | number)[]): Promise<number>
  igwQuotaBudgetTotals(numKeys: number, ...keys: string[]): Promise<number[]>
}

type QuotaRedis = Redis & QuotaCommands

/**
 * Why Redis did not decide: it did not answer in time, the connection is down, it refused the
 * whole call (OOM, NOPERM, …) — an outage, counted by the breaker — or (`key`) it answered but
 * refused one group's keys (a key of the wrong type under our prefix): that tenant only, and
 * not an outage.
 */
export type RedisFailure = 'timeout' | 'unavailable' | 'error' | 'key'

/** A script reply: integers, and a group's error text (a Buffer: no reply encoding) where it failed. */
export type ScriptReply = readonly (number | Buffer)[]

export interface RedisStoreSettings {
  budgetMs: number
  breakerFailures: number
  breakerOpenMs: number
  breakerAfterMs: number
}

export interface RedisStoreEvents {
  failure(kind: RedisFailure): void
  /** `said`: Redis's own refusal text when the failure that opened the breaker was one. */
  breakerChanged(open: boolean, said?: string): void
  recovered(): void
  /**
   * Redis refused one group's keys (`said`: its error text): that group's decisions follow the
   * outage policy, the call's other groups were decided. Counted as failure('key') first.
   */
  keyRefused?(keys: readonly string[], said: string): void
}

const defined = new WeakSet<Redis>()

/**
 * How long Redis remembers a reconciliation's token (redis-script.ts): as long as it keeps the
 * usage the units went into. A push that got no answer is sent again with the same token while the
 * proxy runs, however long Redis stays away.
 */
export const RECONCILE_TOKEN_TTL_MS = PUSH_TOKEN_TTL_MS

/** A call whose budget ran out while Redis answered others may wait up to this many budgets. */
export const PROGRESS_WAIT_FACTOR = 5

function withCommands(r: Redis): QuotaRedis {
  if (!defined.has(r)) {
    r.defineCommand('igwQuotaHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA })
    r.defineCommand('igwQuotaReconcile', { lua: RECONCILE_LUA })
    r.defineCommand('igwQuotaBudgetTotals', { lua: BUDGET_TOTALS_LUA })
    defined.add(r)
  }
  return r as QuotaRedis
}

const DECIDE_SHA = createHash('sha1').update(DECIDE_LUA).digest('hex')
const CRLF = 0x0d0a

function bulk(s: string): string {
  return `$${Buffer.byteLength(s)}\r\n${s}\r\n`
}

/** RESP head of the decision call up to its key count: `*<n>` then EVALSHA <sha> (or EVAL <script>). */
const EVALSHA_HEAD = Buffer.from(bulk('evalsha') + bulk(DECIDE_SHA))
const EVAL_HEAD = Buffer.from(bulk('eval') + bulk(DECIDE_LUA))
const PEEK_TAIL = Buffer.from(bulk(PEEK_ARG))

/** Constant arguments of a rule: group ARGV p+4..p+17 (redis-script.ts). */
export const RULE_CONSTANTS = GROUP_HEAD - 4

/**
 * What is constant in every decision of one rule for one tenant: its two keys and its
 * constant arguments, RESP-encoded once. A batch is then copies of these and a few small
 * integers, written straight into one Buffer: no argument arrays, no strings concatenated per
 * argument, no per-call work in ioredis beyond queueing the command.
 */
export class DecisionRule {
  readonly keys: Buffer
  /** The key names (the log of a refused group names them). */
  readonly keyNames: readonly string[]
  readonly args: Buffer
  /** The script reports tokens (the rule has a bucket) and the budget total (it has a budget). */
  readonly hasRate: boolean
  readonly hasBudget: boolean
  /** This rule's group in the batch being filled (cleared when the batch is sent). */
  open: Group | undefined = undefined
  /** A push token's key less the token (the tenant's hash slot, as the reconciliation's). */
  readonly tokenStem: string
  constructor(kindKey: string, budgetKey: string, constants: readonly (string | number)[]) {
    // No zone (a caller from before zones were kept with days): 0, days compared by number only.
    if (constants.length === RULE_CONSTANTS - 1) constants = [...constants, 0]
    if (constants.length !== RULE_CONSTANTS) throw new Error(`a quota rule has ${RULE_CONSTANTS} constant arguments, got ${constants.length}`)
    this.keys = Buffer.from(bulk(kindKey) + bulk(budgetKey))
    this.args = Buffer.from(constants.map((c) => bulk(String(c))).join(''))
    this.hasRate = Number(constants[0]) > 0
    this.hasBudget = Number(constants[3]) >= 0
    this.keyNames = this.hasBudget ? [kindKey, budgetKey] : [kindKey]
    this.tokenStem = `${kindKey.slice(0, kindKey.lastIndexOf(':'))}:rc:`
  }
}

/**
 * One decision as Redis made it. The batch fills one instance per store and hands it to each
 * waiter in turn: read it during the call, do not keep it.
 */
export class DecisionResult {
  allowed = false
  /** The rule that refused (1 rate, 2 daily, 4 budget; 0 when allowed). */
  reason = 0
  /** Bucket tokens left (micro-units; 0 without a bucket). */
  tokens = 0
  /** Units used today after the decision. */
  used = 0
  /** Budget units used in the window after the decision (0 without a budget). */
  total = 0
  /** For a refusal: ms until a retry can pass; -1 = at the end of the tenant's day. */
  retryMs = 0
  /** Budget thresholds crossed (bit i = thresholds[i]). */
  fired = 0
  /** Rules in shadow mode that would have refused. */
  would = 0
  /** A refusal by the bucket or the budget that the daily quota refused too (redis-script.ts). */
  dailyToo = false
  /** When the reply was read: Date.now() and performance.now() (once per batch, not per request). */
  now = 0
  readAt = 0

  /** Read a group's state before its first decision at `at` of a script reply; returns the offset after it. */
  begin(reply: ScriptReply, at: number, rule: DecisionRule): number {
    this.used = reply[at++] as number
    this.tokens = rule.hasRate ? (reply[at++] as number) : 0
    this.total = rule.hasBudget ? (reply[at++] as number) : 0
    return at
  }

  /** Read the group's next decision (of `cost` units) at `at`; returns the offset of the next one. */
  next(reply: ScriptReply, at: number, rule: DecisionRule, cost: number): number {
    const flags = reply[at++] as number
    this.retryMs = 0
    if (flags === 1) {
      // admitted by every rule: the script took the cost from each (redis-script.ts)
      this.allowed = true
      this.reason = 0
      this.fired = 0
      this.would = 0
      this.dailyToo = false
      this.used += cost
      if (rule.hasRate) this.tokens -= cost * MICRO
      if (rule.hasBudget) this.total += cost
      return at
    }
    this.allowed = (flags & 1) === 1
    this.reason = (flags >> 1) & 7
    this.fired = (flags >> 4) & 15
    this.would = (flags >> 8) & 7
    this.dailyToo = (flags & 2048) !== 0
    this.used = reply[at] as number
    this.retryMs = reply[at + 1] as number
    at += 2
    if (rule.hasRate) this.tokens = reply[at++] as number
    if (rule.hasBudget) this.total = reply[at++] as number
    return at
  }

  /** The decision as the 8 numbers allowed, reason, tokens, used, total, retryMs, fired, would. */
  toArray(): number[] {
    return [this.allowed ? 1 : 0, this.reason, this.tokens, this.used, this.total, this.retryMs, this.fired, this.would]
  }
}

/** The decisions of one rule (on one day) in a batch: one group of the script's arguments. */
class Group {
  readonly rule: DecisionRule
  readonly day: number
  /** When `day` ends in the rule's zone (ms; 0: not known). */
  readonly dayEnd: number
  /** Outage units of its decisions, charged before the first. */
  pending = 0
  /** The push token of those units ('' until a decision brings some), and its key as sent. */
  token = ''
  tokenKey: Buffer | undefined = undefined
  readonly costs: number[] = []
  readonly waiters: DecisionWaiter[] = []
  constructor(rule: DecisionRule, day: number, dayEnd: number) {
    this.rule = rule
    this.day = day
    this.dayEnd = dayEnd
  }
}

/** Decimal digits of a non-negative safe integer. */
function digits(n: number): number {
  let d = 1
  while (n >= 10) {
    n = Math.floor(n / 10)
    d++
  }
  return d
}

/** Bytes of `n` as a RESP bulk string. */
function intBulkLength(n: number): number {
  const len = Number.isSafeInteger(n) ? (n < 0 ? 1 + digits(-n) : digits(n)) : String(n).length
  return 1 + digits(len) + 2 + len + 2
}

function putDigits(buf: Buffer, end: number, n: number): void {
  do {
    buf[--end] = 48 + (n % 10)
    n = Math.floor(n / 10)
  } while (n > 0)
}

/** Write `n` as a RESP bulk string at `off`; returns the offset after it. */
function putIntBulk(buf: Buffer, off: number, n: number): number {
  const str = Number.isSafeInteger(n) ? undefined : String(n)
  const len = str !== undefined ? str.length : n < 0 ? 1 + digits(-n) : digits(n)
  buf[off++] = 0x24 // $
  const dl = digits(len)
  putDigits(buf, off + dl, len)
  off += dl
  buf.writeUInt16BE(CRLF, off)
  off += 2
  if (str !== undefined) buf.write(str, off, 'latin1')
  else if (n < 0) {
    buf[off] = 0x2d // -
    putDigits(buf, off + len, -n)
  } else putDigits(buf, off + len, n)
  off += len
  buf.writeUInt16BE(CRLF, off)
  return off + 2
}

/** `*<count>\r\n` */
function putArrayHead(buf: Buffer, off: number, count: number): number {
  buf[off++] = 0x2a // *
  const dl = digits(count)
  putDigits(buf, off + dl, count)
  off += dl
  buf.writeUInt16BE(CRLF, off)
  return off + 2
}

/**
 * The RESP bytes of one decision call over `groups` (redis-script.ts's layout), with the script's
 * text (EVAL) or its digest; `marker` (its key as a bulk string) and `seq`: the connection's call
 * marker and this call's number; none: read-only, the trailing argument that asks for it.
 */
function encodeCall(groups: readonly Group[], withScript: boolean, marker: Buffer | undefined, seq = 0): Buffer {
  const n = groups.length
  const head = withScript ? EVAL_HEAD : EVALSHA_HEAD
  let keys = 2 * n
  let size = head.length
  if (marker !== undefined) {
    keys++
    size += marker.length + intBulkLength(seq)
  } else size += PEEK_TAIL.length
  for (let i = 0; i < n; i++) {
    // A group's third key: its pending units' push token (redis-script.ts).
    const g = groups[i]!
    if (g.pending === 0) continue
    g.tokenKey ??= Buffer.from(bulk(g.rule.tokenStem + g.token))
    keys++
    size += g.tokenKey.length
  }
  let count = 3 + keys
  size += intBulkLength(keys)
  for (let i = 0; i < n; i++) {
    const g = groups[i]!
    const costs = g.costs
    count += GROUP_HEAD + costs.length
    size += g.rule.keys.length + g.rule.args.length + intBulkLength(costs.length) + intBulkLength(g.day) + intBulkLength(g.pending) + intBulkLength(g.dayEnd)
    for (let j = 0; j < costs.length; j++) size += intBulkLength(costs[j]!)
  }
  count++ // the marker's number or 'peek'
  size += 3 + digits(count)
  const buf = Buffer.allocUnsafe(size)
  let off = putArrayHead(buf, 0, count)
  off += head.copy(buf, off)
  off = putIntBulk(buf, off, keys)
  for (let i = 0; i < n; i++) {
    const g = groups[i]!
    off += g.rule.keys.copy(buf, off)
    if (g.pending !== 0) off += g.tokenKey!.copy(buf, off)
  }
  if (marker !== undefined) off += marker.copy(buf, off)
  for (let i = 0; i < n; i++) {
    const g = groups[i]!
    const costs = g.costs
    off = putIntBulk(buf, off, costs.length)
    off = putIntBulk(buf, off, g.day)
    off = putIntBulk(buf, off, g.pending)
    off += g.rule.args.copy(buf, off)
    off = putIntBulk(buf, off, g.dayEnd)
    for (let j = 0; j < costs.length; j++) off = putIntBulk(buf, off, costs[j]!)
  }
  if (marker !== undefined) putIntBulk(buf, off, seq)
  else PEEK_TAIL.copy(buf, off)
  return buf
}

/** One decision call: the RESP bytes are the batch's, written once (ioredis only queues it). */
class DecideCommand extends Command {
  readonly payload: Buffer
  constructor(name: string, payload: Buffer) {
    super(name)
    this.payload = payload
  }

  override toWritable(): Buffer {
    return this.payload
  }
}

/**
 * A decision call as sent: its connection's marker key and its number there (redis-script.ts).
 * Given with a failure, the call went out and its outcome is lost (the connection dropped): Redis
 * may have run it. The reconciliation asks the marker (RedisQuotaStore.reconcile).
 */
export interface SentCall {
  readonly marker: string
  readonly seq: number
}

/**
 * The outcome of a call that outlived its budget: the reply (Redis ran the script after all)
 * or undefined (it failed in the end).
 */
export type LateReply = (reply: number[] | undefined) => void

/**
 * Who waits for one decision of a batch. Exactly one of result/failed is called, then possibly
 * late (the reply arrived after the budget: Redis did run it; undefined: the call failed in
 * the end). `last`: the group's final decision in this batch, so `d` holds the state Redis
 * kept (tokens, used, budget total) after the group. `lost`: the call went out and its
 * connection dropped before the reply, so Redis may or may not have run it (SentCall).
 */
export interface DecisionWaiter {
  result(d: DecisionResult, last: boolean): void
  failed(kind: RedisFailure, lost?: SentCall): void
  late(d: DecisionResult | undefined, lost?: SentCall): void
}

/**
 * The decisions one worker thread made in one event-loop turn, sent as one script call. It
 * settles once for all of them: on the reply or on the budget, whichever is first.
 */
class Batch {
  done = false
  timer: NodeJS.Timeout | undefined = undefined
  sentAt = 0
  /** The store's reply count when this batch went out (or was last extended). */
  repliesSeen = 0
  /** Sent again as EVAL after Redis lost the script (restart, SCRIPT FLUSH). */
  resent = false
  /** As last sent. */
  call: SentCall | undefined = undefined
  /** In the order of the script's arguments and of its reply. */
  readonly groups: Group[] = []
  readonly store: RedisQuotaStore

  constructor(store: RedisQuotaStore) {
    this.store = store
  }

  onReply = (flat: ScriptReply): void => {
    const store = this.store
    store.replies++
    const groups = this.groups
    const d = store.result
    d.now = Date.now()
    d.readAt = performance.now()
    let at = 0
    if (this.done) {
      // Too late for the requests, but Redis counted them: the callers square their books.
      for (let g = 0; g < groups.length; g++) {
        const { rule, costs, waiters } = groups[g]!
        if (typeof flat[at] !== 'number') {
          // Redis refused this group's keys: it counted nothing for it.
          store.keyRefused(rule, flat[at++]!)
          for (let i = 0; i < waiters.length; i++) waiters[i]!.late(undefined)
          continue
        }
        at = d.begin(flat, at, rule)
        for (let i = 0; i < waiters.length; i++) {
          at = d.next(flat, at, rule, costs[i]!)
          waiters[i]!.late(d)
        }
      }
      return
    }
    this.done = true
    clearTimeout(this.timer)
    // Redis answered, even where it refused a group's keys: not an outage for the breaker.
    store.succeeded()
    for (let g = 0; g < groups.length; g++) {
      const { rule, costs, waiters } = groups[g]!
      if (typeof flat[at] !== 'number') {
        store.keyRefused(rule, flat[at++]!)
        for (let i = 0; i < waiters.length; i++) waiters[i]!.failed('key')
        continue
      }
      const last = waiters.length - 1
      at = d.begin(flat, at, rule)
      for (let i = 0; i <= last; i++) {
        at = d.next(flat, at, rule, costs[i]!)
        waiters[i]!.result(d, i === last)
      }
    }
  }

  onError = (err: Error): void => {
    if (!this.resent && err.message.startsWith('NOSCRIPT')) {
      // Redis lost the script (restart, SCRIPT FLUSH): the same batch with the script text,
      // which also loads it for the next EVALSHA. Nothing ran, so the decisions are still open.
      this.resent = true
      this.store.send(this, true)
      return
    }
    // Redis refusing the call answers with an error reply (OOM, NOPERM, …). Anything else is the
    // connection: closed, not writeable, or — a Redis that dies with the call on the wire — ioredis's
    // own "Reached the max retries per request limit" (maxRetriesPerRequest 0), which is no text of Redis's.
    const refused = err instanceof ReplyError
    const lost = refused ? undefined : this.call
    // The reconciliation may close this call's marker: calls after it must not be refused.
    this.store.dropMarker(this.call)
    if (this.done) {
      this.late(lost)
      return
    }
    this.done = true
    clearTimeout(this.timer)
    this.store.failed(refused ? 'error' : 'unavailable', refused ? err.message.slice(0, 200) : undefined)
    this.fail(this.store.lastFailure, lost)
  }

  fail(kind: RedisFailure, lost?: SentCall): void {
    for (const g of this.groups) for (const w of g.waiters) w.failed(kind, lost)
  }

  late(lost: SentCall | undefined): void {
    for (const g of this.groups) for (const w of g.waiters) w.late(undefined, lost)
  }
}

/**
 * The budget timer fired. Timers run before the event loop polls sockets, so on a busy loop a
 * reply may already be waiting unread: give this iteration's poll phase the chance to deliver
 * it (setImmediate runs right after poll) before calling it a timeout.
 */
function onTimeout(batch: Batch): void {
  if (!batch.done) setImmediate(expire, batch)
}

function expire(batch: Batch): void {
  if (batch.done) return
  const store = batch.store
  // Replies kept arriving since this batch went out: Redis is alive and answering in order;
  // this reply is behind our own busy event loop, not lost. Keep waiting, within a hard cap.
  if (store.replies > batch.repliesSeen && performance.now() - batch.sentAt < store.maxWaitMs) {
    batch.repliesSeen = store.replies
    batch.timer = setTimeout(onTimeout, store.budgetMs, batch)
    return
  }
  batch.done = true
  store.failed('timeout')
  batch.fail('timeout')
}

/** A DecisionWaiter as a promise (tests and tools; the filter implements the interface itself). */
class PromiseWaiter implements DecisionWaiter {
  resolve!: (v: number[] | RedisFailure) => void
  readonly onLate: LateReply | undefined
  constructor(onLate: LateReply | undefined) {
    this.onLate = onLate
  }
  result(d: DecisionResult): void {
    this.resolve(d.toArray())
  }
  failed(kind: RedisFailure): void {
    this.resolve(kind)
  }
  late(d: DecisionResult | undefined): void {
    this.onLate?.(d?.toArray())
  }
}

function send(store: RedisQuotaStore): void {
  store.flush()
}

export class RedisQuotaStore {
  readonly provider: RedisProvider
  readonly breaker: CircuitBreaker
  lastFailure: RedisFailure = 'error'
  /** Replies received on this store's calls (progress: is Redis answering at all?). */
  replies = 0
  /** Handed to each waiter in turn while a reply is read. */
  readonly result = new DecisionResult()
  readonly budgetMs: number
  /** Longest wait while Redis keeps answering other calls (our own event loop is the backlog). */
  readonly maxWaitMs: number
  #warm: Promise<boolean> | undefined
  /**
   * The call marker of the connection calls go out on (redis-script.ts): its key (a bulk string,
   * '' until the first call), the connection it belongs to, and the last call's number. A new
   * connection, or a failed call on this one, starts a new marker: a marker is only ever written
   * by calls in one connection's order, and one the reconciliation closed is never used again.
   */
  #marker = ''
  #markerBulk: Buffer | undefined = undefined
  #markerStream: unknown = undefined
  #seq = 0
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
   * Decide through Redis. Decisions made in the same event-loop turn share one script call
   * (sent right after the turn's socket poll), grouped by rule. The waiter hears within the
   * budget: a result or a failure (at once when the connection is down). Call only after
   * usable() said yes. `rule` holds the decision's keys and constant arguments.
   * Returns the push token `pending` travels under ('' when none, or the call was not made): when
   * the call fails, Redis may have charged them all the same (a reply lost after the script ran),
   * so they go to the reconciliation under this token (RedisStore.reconcile), not back to the table.
   */
  enqueue(rule: DecisionRule, cost: number, day: number, pending: number, waiter: DecisionWaiter, dayEnd = 0): string {
    const r = this.provider.client()
    if (r.status !== 'ready') {
      this.failed('unavailable')
      waiter.failed('unavailable')
      return ''
    }
    let b = this.#open
    if (b === undefined) {
      b = this.#open = new Batch(this)
      setImmediate(send, this)
    }
    let g = rule.open
    if (g === undefined || g.day !== day) {
      g = rule.open = new Group(rule, day, dayEnd)
      b.groups.push(g)
    }
    g.pending += pending
    g.costs.push(cost)
    g.waiters.push(waiter)
    if (pending === 0) return ''
    if (g.token === '') g.token = randomUUID()
    return g.token
  }

  /**
   * One decision as a promise (tests and tools): cost, day, pending, then the rule's
   * RULE_CONSTANTS constant arguments in the script's order.
   */
  decide(kindKey: string, budgetKey: string, args: number[], late?: LateReply, dayEnd = 0): Promise<number[] | RedisFailure> {
    // Without the zone (the arguments before zones were kept with days): 0, the day compared by number.
    if (args.length === 2 + RULE_CONSTANTS) args = [...args, 0]
    if (args.length !== 3 + RULE_CONSTANTS) throw new Error(`quota decision takes ${3 + RULE_CONSTANTS} arguments, got ${args.length}`)
    const w = new PromiseWaiter(late)
    const p = new Promise<number[] | RedisFailure>((resolve) => (w.resolve = resolve))
    this.enqueue(new DecisionRule(kindKey, budgetKey, args.slice(3)), args[0]!, args[1]!, args[2]!, w, dayEnd)
    return p
  }

  #open: Batch | undefined = undefined

  /** Send the open batch (called once per event-loop turn that made decisions). */
  flush(): void {
    const b = this.#open
    if (b === undefined) return
    this.#open = undefined
    // The rules' next decisions start groups of the next batch.
    for (const g of b.groups) g.rule.open = undefined
    b.sentAt = performance.now()
    b.repliesSeen = this.replies
    b.timer = setTimeout(onTimeout, this.budgetMs, b)
    this.send(b, false)
  }

  /** Write the batch's call: EVALSHA, or EVAL with the script when Redis does not have it. */
  send(b: Batch, withScript: boolean): void {
    const r = this.provider.client()
    if (this.#marker === '' || r.stream !== this.#markerStream) {
      this.#marker = `${this.prefix}q:call:${randomUUID()}`
      this.#markerBulk = Buffer.from(bulk(this.#marker))
      this.#markerStream = r.stream
    }
    b.call = { marker: this.#marker, seq: ++this.#seq }
    const cmd = new DecideCommand(withScript ? 'eval' : 'evalsha', encodeCall(b.groups, withScript, this.#markerBulk, b.call.seq))
    void r.sendCommand(cmd)
    cmd.promise.then(b.onReply, b.onError)
  }

  /** A call on this marker failed: the calls after it take a new one. */
  dropMarker(call: SentCall | undefined): void {
    if (call !== undefined && call.marker === this.#marker) this.#marker = ''
  }

  /**
   * What Redis's limits would say to one decision now (every proxy's use), taking nothing: the
   * decision script's read-only mode, so the rules stay in one place. `pending`: this proxy's
   * outage units not in Redis yet, counted as its next decision would charge them. Undefined when
   * Redis does not answer within the budget. Outside the breaker: a read for a request refused
   * anyway (a concurrency refusal choosing which limit to name), whose caller has a fallback.
   */
  async peek(rule: DecisionRule, cost: number, day: number, pending: number, dayEnd: number): Promise<DecisionResult | undefined> {
    const r = this.provider.client()
    if (r.status !== 'ready') return undefined
    const g = new Group(rule, day, dayEnd)
    g.costs.push(cost)
    // A token no call sets: the script reads it (these units were not charged yet).
    if (pending !== 0) {
      g.pending = pending
      g.token = PEEK_ARG
    }
    const call = async (withScript: boolean): Promise<ScriptReply> => {
      const cmd = new DecideCommand(withScript ? 'eval' : 'evalsha', encodeCall([g], withScript, undefined))
      void r.sendCommand(cmd)
      return (await cmd.promise) as ScriptReply
    }
    try {
      const reply = await withTimeout(
        call(false).catch((err: Error) => (err.message.startsWith('NOSCRIPT') ? call(true) : Promise.reject(err))),
        this.budgetMs,
      )
      if (typeof reply[0] !== 'number') return undefined // Redis refused the tenant's keys
      const d = new DecisionResult()
      d.now = Date.now()
      d.next(reply, d.begin(reply, 0, rule), rule, cost)
      return d
    } catch {
      return undefined
    }
  }

  succeeded(): void {
    if (this.breaker.success()) {
      this.#events.recovered()
      this.#events.breakerChanged(false)
    }
  }

  /** Redis refused one group's keys (the script's error text in its place of the reply). */
  keyRefused(rule: DecisionRule, said: number | Buffer): void {
    this.#events.failure('key')
    this.#events.keyRefused?.(rule.keyNames, String(said).slice(0, 200))
  }

  /** `said`: what Redis answered when it refused the call (OOM, NOPERM, …); none for timeouts and lost connections. */
  failed(kind: RedisFailure, said?: string): void {
    this.lastFailure = kind
    this.#events.failure(kind)
    if (this.breaker.failure(Date.now())) this.#events.breakerChanged(true, said)
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

  /**
   * Push outage usage of one (tenant, kind) to Redis; false when Redis did not take it. `shape`:
   * the tenant's bucket capacity (micro-units, 0: none) and budget ring (bucketMs 0: none), for a
   * tenant Redis holds no bucket or budget for yet (first seen during the outage, or its keys
   * expired): they start with the units, as a decision carrying them would have started them.
   * `token`: unique to this push, and the same when it is sent again after a `false` — Redis may
   * have applied a push whose reply was lost (the connection dropped after the script ran), and
   * applies a token once. No time limit of its own: a script that is merely slow still runs. The
   * call settles when Redis answers or the connection drops (the provider's watchdog drops an
   * unresponsive one); nothing waits on it but the reconciliation. `unlessRan`: the units are the
   * outage policy's count of requests a lost decision call carried, applied only if it never ran.
   */
  async reconcile(tenant: string, kind: string, units: number, day: number, shape?: { capacity: number; bucketMs: number; buckets: number }, token: string = randomUUID(), unlessRan?: SentCall): Promise<boolean> {
    const r = this.provider.client()
    if (r.status !== 'ready') return false
    try {
      const tokenKey = `${this.prefix}q:{${tenant}}:rc:${token}`
      const args = [quotaKeys.kind(this.prefix, tenant, kind), quotaKeys.budget(this.prefix, tenant), tokenKey, units, day, shape?.capacity ?? 0, shape?.bucketMs ?? 0, shape?.buckets ?? 0, RECONCILE_TOKEN_TTL_MS]
      if (unlessRan === undefined) await withCommands(r).igwQuotaReconcile(3, ...args)
      else await withCommands(r).igwQuotaReconcile(4, ...args.slice(0, 3), unlessRan.marker, ...args.slice(3), unlessRan.seq)
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

  /**
   * The budget units each budget hash holds in its window now (gauges on scrape); -1 where Redis
   * refused the key; undefined when Redis does not answer.
   */
  async budgetTotals(keys: string[], ms: number): Promise<number[] | undefined> {
    const r = this.provider.client()
    if (r.status !== 'ready' || keys.length === 0) return undefined
    try {
      return await withTimeout(withCommands(r).igwQuotaBudgetTotals(keys.length, ...keys), ms)
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
