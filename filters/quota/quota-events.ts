// Budget-threshold and anomaly events: always a log line and a metric, and a webhook POST when
// one is configured — retried with exponential backoff on network errors, 408, 429 and 5xx
// (each wait at most a minute; a 429's or 503's Retry-After is honoured within that minute).
// Every event carries an id that stays the same across retries (`igw-event-id` header and
// body `id`), so a receiver that saw an attempt whose answer got lost can drop the repeat.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { Counter } from 'prom-client'
import { Agent, request } from 'undici'
import type { QuotasConfig } from '../../config/quotas.ts'
import { LogWindow } from '../../proxy/filter.ts'
import { retryAfterMs } from '../../proxy/headers.ts'

export interface BudgetEvent {
  type: 'budget.threshold'
  id: string
  tenant: string
  threshold: number
  usedUnits: number
  limitUnits: number
  ratio: number
  windowMs: number
  hardCap: boolean
  at: string
  proxy: string
}

export interface AnomalyEvent {
  type: 'anomaly.rate'
  id: string
  tenant: string
  requests: number
  intervalMs: number
  baseline: number
  stddev: number
  z: number
  at: string
  proxy: string
}

export type QuotaEvent = BudgetEvent | AnomalyEvent

export interface EventMetrics {
  events: Counter<'type'>
  deliveries: Counter<'result'>
}

type Webhook = NonNullable<QuotasConfig['events']['webhook']>

/** Deliveries under way at once (a connection each): a receiver that hangs ties up no more. */
export const MAX_CONCURRENT_DELIVERIES = 8
/**
 * Events waiting for or under delivery. Beyond this, while the receiver cannot keep up, new
 * events are not queued for the webhook (they are still logged and counted as events) but
 * counted as `igw_quota_webhook_deliveries_total{result="dropped"}`: memory stays bounded
 * however many tenants cross thresholds or turn anomalous at once.
 */
export const MAX_PENDING_EVENTS = 1000
/**
 * The longest wait before a retry. Without a ceiling, backoffMs × 2ⁿ reaches hours at the
 * attempts the config allows (250 ms × 2¹⁸ ≈ 18 h before the 20th): events delivered a day late,
 * and eight of them in backoff held every delivery slot. A receiver's `Retry-After` is honoured
 * up to the same ceiling.
 */
export const MAX_RETRY_WAIT_MS = 60_000
/** At most one line per this period per kind of delivery trouble (the rest are counted in it). */
export const DELIVERY_LOG_MS = 10_000

export { retryAfterMs } from '../../proxy/headers.ts'

/**
 * The URL to POST to, without credentials, and the Basic authorization they stand for. A URL
 * `https://user:pass@host/…` passes validation (and is redacted as a secret), but undici drops
 * a URL's userinfo: a receiver behind basic auth answered every event 401 (not retried: every
 * event lost). Sent as Basic credentials (RFC 7617, UTF-8); an explicit `authorization` header wins.
 */
function webhookTarget(hook: Webhook): { url: string; authorization: string | undefined } {
  const u = URL.parse(hook.url)
  if (u === null || (u.username === '' && u.password === '')) return { url: hook.url, authorization: undefined }
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s)
    } catch {
      return s // a stray '%': taken as written
    }
  }
  const authorization = `Basic ${Buffer.from(`${decode(u.username)}:${decode(u.password)}`).toString('base64')}`
  u.username = ''
  u.password = ''
  const explicit = Object.keys(hook.headers).some((k) => k.toLowerCase() === 'authorization')
  return { url: u.href, authorization: explicit ? undefined : authorization }
}

interface Pending {
  ev: QuotaEvent
  hook: Webhook
}

export class EventSink {
  webhook: Webhook | undefined
  readonly #logger: Logger
  readonly #metrics: EventMetrics
  readonly #queue: Pending[] = []
  #running = 0
  #idle: (() => void)[] = []
  readonly #failedLog = new LogWindow(DELIVERY_LOG_MS)
  readonly #droppedLog = new LogWindow(DELIVERY_LOG_MS)
  /** Webhook connections of their own, never more than the deliveries that may run at once. */
  #agent: Agent | undefined
  /** Aborted by close(): deliveries under way (in an attempt or waiting to retry) stop at once. */
  #stop = new AbortController()

  constructor(logger: Logger, metrics: EventMetrics, webhook: Webhook | undefined) {
    this.#logger = logger
    this.#metrics = metrics
    this.webhook = webhook
  }

  /** Events queued or under delivery. */
  get pending(): number {
    return this.#queue.length + this.#running
  }

  emit(ev: QuotaEvent): void {
    this.#metrics.events.labels(ev.type).inc()
    this.#logger.warn({ event: ev }, ev.type === 'budget.threshold' ? `tenant ${ev.tenant} reached ${Math.round(ev.threshold * 100)}% of its budget` : `tenant ${ev.tenant} request rate is anomalous (z=${ev.z.toFixed(1)})`)
    const hook = this.webhook
    if (hook === undefined) return
    if (this.pending >= MAX_PENDING_EVENTS) {
      this.#metrics.deliveries.labels('dropped').inc()
      const held = this.#droppedLog.take(Date.now())
      if (held !== undefined) this.#logger.error({ eventId: ev.id, pending: this.pending, alsoDropped: held }, 'quota event webhook backlog full: event not sent (it is in this log)')
      return
    }
    this.#queue.push({ ev, hook })
    this.#pump()
  }

  #pump(): void {
    while (this.#running < MAX_CONCURRENT_DELIVERIES && this.#queue.length > 0) {
      const next = this.#queue.shift()!
      this.#running++
      void this.#deliver(next.ev, next.hook, this.#stop.signal).finally(() => this.#done())
    }
  }

  #done(): void {
    this.#running--
    this.#pump()
    if (this.pending === 0) for (const wake of this.#idle.splice(0)) wake()
  }

  async #deliver(ev: QuotaEvent, hook: Webhook, stop: AbortSignal): Promise<void> {
    const body = JSON.stringify(ev)
    const { url, authorization } = webhookTarget(hook)
    const headers = { ...hook.headers, ...(authorization !== undefined ? { authorization } : {}), 'content-type': 'application/json', 'igw-event-id': ev.id, 'igw-event-type': ev.type }
    let lastProblem = ''
    let askedMs = 0
    for (let attempt = 1; attempt <= hook.maxAttempts; attempt++) {
      if (attempt > 1) {
        this.#metrics.deliveries.labels('retry').inc()
        const wait = Math.min(MAX_RETRY_WAIT_MS, Math.max(hook.backoffMs * 2 ** (attempt - 2), askedMs))
        const resumed = await sleep(wait, true, { signal: stop, ref: false }).catch(() => false)
        if (!resumed) return // closed: counted as dropped by close()
      }
      askedMs = 0
      // One deadline for the whole attempt — connect, headers and body: undici's own timeouts
      // are idle timeouts, and a receiver trickling a byte a second would hold the attempt open.
      const deadline = AbortSignal.timeout(hook.timeoutMs)
      const signal = AbortSignal.any([deadline, stop])
      try {
        this.#agent ??= new Agent({ connections: MAX_CONCURRENT_DELIVERIES })
        const res = await request(url, { method: 'POST', headers, body, signal, headersTimeout: hook.timeoutMs, bodyTimeout: hook.timeoutMs, dispatcher: this.#agent })
        // The status decides; the body (up to undici's dump limit, within the deadline) only frees the connection.
        await res.body.dump({ limit: 128 * 1024, signal }).catch(() => undefined)
        if (res.statusCode >= 200 && res.statusCode < 300) {
          this.#metrics.deliveries.labels('delivered').inc()
          return
        }
        lastProblem = `HTTP ${res.statusCode}`
        // 429 and 503 may say when to come back (RFC 9110 §10.2.3): sooner would only be refused again.
        if (res.statusCode === 429 || res.statusCode === 503) askedMs = retryAfterMs(res.headers['retry-after'], Date.now())
        if (res.statusCode < 500 && res.statusCode !== 408 && res.statusCode !== 429) break // the receiver refuses it (3xx included: never followed): retrying will not help
      } catch (err) {
        if (stop.aborted) return
        lastProblem = deadline.aborted ? `no answer within ${hook.timeoutMs} ms` : (err as Error).message
      }
      if (stop.aborted) return
    }
    this.#metrics.deliveries.labels('failed').inc()
    const held = this.#failedLog.take(Date.now())
    if (held !== undefined) this.#logger.error({ eventId: ev.id, type: ev.type, tenant: ev.tenant, problem: lastProblem, alsoFailed: held }, 'quota event webhook delivery failed')
  }

  /** Wait (bounded) for deliveries under way and queued, at shutdown. */
  async drain(ms: number): Promise<void> {
    if (this.pending === 0) return
    let t: NodeJS.Timeout | undefined
    let wake: (() => void) | undefined
    await Promise.race([new Promise<void>((r) => this.#idle.push((wake = r))), new Promise((r) => (t = setTimeout(r, ms)))])
    clearTimeout(t)
    if (wake !== undefined) this.#idle = this.#idle.filter((w) => w !== wake)
  }

  /**
   * The thread's last quota filter closed (after drain()): events still queued, under delivery or
   * waiting to retry are given up — counted as `dropped` and said in one line, not lost in silence
   * — and the webhook's keep-alive connections are closed. Emitting again starts afresh.
   */
  async close(): Promise<void> {
    const left = this.pending
    this.#queue.length = 0
    this.#stop.abort()
    this.#stop = new AbortController()
    if (left > 0) {
      this.#metrics.deliveries.labels('dropped').inc(left)
      this.#logger.error({ events: left }, 'quota event webhook: events not delivered at shutdown (they are in this log)')
    }
    const agent = this.#agent
    this.#agent = undefined
    await agent?.destroy().catch(() => undefined)
  }
}
