// Budget-threshold and anomaly events: always a log line and a metric, and a webhook POST when
// one is configured — retried with exponential backoff on network errors, 408, 429 and 5xx.
// Every event carries an id that stays the same across retries (`igw-event-id` header and
// body `id`), so a receiver that saw an attempt whose answer got lost can drop the repeat.
import type { Logger } from 'pino'
import type { Counter } from 'prom-client'
import { request } from 'undici'
import type { QuotasConfig } from '../../config/quotas.ts'

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

export class EventSink {
  webhook: Webhook | undefined
  readonly #logger: Logger
  readonly #metrics: EventMetrics
  readonly #inflight = new Set<Promise<void>>()

  constructor(logger: Logger, metrics: EventMetrics, webhook: Webhook | undefined) {
    this.#logger = logger
    this.#metrics = metrics
    this.webhook = webhook
  }

  emit(ev: QuotaEvent): void {
    this.#metrics.events.labels(ev.type).inc()
    this.#logger.warn({ event: ev }, ev.type === 'budget.threshold' ? `tenant ${ev.tenant} reached ${Math.round(ev.threshold * 100)}% of its budget` : `tenant ${ev.tenant} request rate is anomalous (z=${ev.z.toFixed(1)})`)
    const hook = this.webhook
    if (hook === undefined) return
    const p = this.#deliver(ev, hook).finally(() => this.#inflight.delete(p))
    this.#inflight.add(p)
  }

  async #deliver(ev: QuotaEvent, hook: Webhook): Promise<void> {
    const body = JSON.stringify(ev)
    const headers = { ...hook.headers, 'content-type': 'application/json', 'igw-event-id': ev.id, 'igw-event-type': ev.type }
    let lastProblem = ''
    for (let attempt = 1; attempt <= hook.maxAttempts; attempt++) {
      if (attempt > 1) {
        this.#metrics.deliveries.labels('retry').inc()
        await new Promise((r) => setTimeout(r, hook.backoffMs * 2 ** (attempt - 2)).unref())
      }
      try {
        const res = await request(hook.url, { method: 'POST', headers, body, headersTimeout: hook.timeoutMs, bodyTimeout: hook.timeoutMs })
        await res.body.dump()
        if (res.statusCode >= 200 && res.statusCode < 300) {
          this.#metrics.deliveries.labels('delivered').inc()
          return
        }
        lastProblem = `HTTP ${res.statusCode}`
        if (res.statusCode < 500 && res.statusCode !== 408 && res.statusCode !== 429) break // the receiver refuses it: retrying will not help
      } catch (err) {
        lastProblem = (err as Error).message
      }
    }
    this.#metrics.deliveries.labels('failed').inc()
    this.#logger.error({ eventId: ev.id, type: ev.type, tenant: ev.tenant, problem: lastProblem }, 'quota event webhook delivery failed')
  }

  /** Wait (bounded) for deliveries under way, at shutdown. */
  async drain(ms: number): Promise<void> {
    if (this.#inflight.size === 0) return
    let t: NodeJS.Timeout | undefined
    await Promise.race([Promise.allSettled([...this.#inflight]), new Promise((r) => (t = setTimeout(r, ms)))])
    clearTimeout(t)
  }
}
