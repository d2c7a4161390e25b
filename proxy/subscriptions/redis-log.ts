// The replay log in Redis Streams, written through beside the in-memory ring so a restarted
// gateway (or another replica) can replay what a client missed. One Redis stream per (stream,
// epoch); entry ids are "<offset>-0" so a cursor maps to an exclusive XRANGE start. Count is
// bounded by XADD MAXLEN, age by XTRIM MINID (from the writer's ring) and a key TTL refreshed
// while the stream lives. Writes are fire-and-forget: Redis trouble never delays delivery.
import type { Logger } from 'pino'
import type { RedisProvider } from '../redis.ts'
import type { HubMetrics } from './metrics.ts'

export interface StoredEvent {
  offset: number
  ts: number
  /** The payload JSON as delivered (extensions.cursor included). */
  payload: string
}

export interface StoredRange {
  /** False when the key is gone (never written, or every event aged out). */
  exists: boolean
  entries: StoredEvent[]
}

export class RedisReplayLog {
  readonly #redis: RedisProvider
  readonly #metrics: HubMetrics
  readonly #logger: Logger
  #maxEvents: number
  #maxAgeMs: number
  #lastWarn = 0

  constructor(redis: RedisProvider, maxEvents: number, maxAgeMs: number, metrics: HubMetrics, logger: Logger) {
    this.#redis = redis
    this.#maxEvents = maxEvents
    this.#maxAgeMs = maxAgeMs
    this.#metrics = metrics
    this.#logger = logger
  }

  get provider(): RedisProvider {
    return this.#redis
  }

  setBounds(maxEvents: number, maxAgeMs: number): void {
    this.#maxEvents = maxEvents
    this.#maxAgeMs = maxAgeMs
  }

  key(streamId: string, epoch: string): string {
    // The hash tag keeps every epoch of a stream in one Redis Cluster slot.
    return `${this.#redis.keyPrefix}subs:{${streamId}}:${epoch}`
  }

  append(streamId: string, epoch: string, offset: number, ts: number, payload: string): void {
    this.#redis
      .client()
      .xadd(this.key(streamId, epoch), 'MAXLEN', String(this.#maxEvents), `${offset}-0`, 'p', payload, 't', String(ts))
      .catch((err: Error) => this.#failed('xadd', err))
  }

  /** Refresh the key's TTL and drop events older than the age bound (minOffset: first one to keep). */
  maintain(streamId: string, epoch: string, minOffset: number | undefined): void {
    const key = this.key(streamId, epoch)
    const client = this.#redis.client()
    client.pexpire(key, this.#maxAgeMs + 5_000).catch((err: Error) => this.#failed('pexpire', err))
    if (minOffset !== undefined) client.xtrim(key, 'MINID', `${minOffset}-0`).catch((err: Error) => this.#failed('xtrim', err))
  }

  /** Events after `offset` of (stream, epoch); undefined when Redis could not answer. */
  async since(streamId: string, epoch: string, offset: number): Promise<StoredRange | undefined> {
    const key = this.key(streamId, epoch)
    try {
      const res = await this.#redis
        .client()
        .multi()
        .exists(key)
        .xrange(key, `(${offset}-0`, '+', 'COUNT', this.#maxEvents)
        .exec()
      if (res === null) return undefined
      const [existsRes, rangeRes] = res as [[Error | null, number], [Error | null, [string, string[]][]]]
      if (existsRes[0] || rangeRes[0]) throw existsRes[0] ?? rangeRes[0]
      const entries: StoredEvent[] = []
      for (const [id, fields] of rangeRes[1]) {
        let payload: string | undefined
        let ts = 0
        for (let i = 0; i < fields.length; i += 2) {
          if (fields[i] === 'p') payload = fields[i + 1]
          else if (fields[i] === 't') ts = Number(fields[i + 1])
        }
        const off = Number(id.slice(0, id.indexOf('-')))
        if (payload !== undefined && Number.isSafeInteger(off)) entries.push({ offset: off, ts, payload })
      }
      return { exists: existsRes[1] === 1, entries }
    } catch (err) {
      this.#failed('xrange', err as Error)
      return undefined
    }
  }

  #failed(op: string, err: Error): void {
    this.#metrics.redisErrors.labels(op).inc()
    const now = Date.now()
    if (now - this.#lastWarn > 5_000) {
      this.#lastWarn = now
      this.#logger.warn({ op, err: { message: err.message } }, 'replay log: redis operation failed; delivery continues from memory')
    }
  }
}
