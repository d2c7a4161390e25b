// The replay log in Redis Streams, written through beside the in-memory ring so a restarted
// gateway (or another replica) can replay what a client missed. One Redis stream per (stream,
// epoch); entry ids are "<offset>-0" so a cursor maps to an exclusive XRANGE start. Count is
// bounded by XADD MAXLEN, age by XTRIM MINID (from the writer's ring) and a key TTL refreshed
// while the stream lives. Writes are fire-and-forget: Redis trouble never delays delivery.
import type { Logger } from 'pino'
import { readyWithin, type RedisProvider } from '../redis.ts'
import { oncePer } from '../log.ts'
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

const MAX_PENDING = 10_000
/**
 * Event text parked per worker while Redis is away. The count alone let an outage hold 10,000
 * events of any size (100 KiB each: 1 GiB of heap, long after the memory rings let them go: each
 * is bounded by replay.maxBytes) until the worker ran out of memory, taking its connections along.
 */
const MAX_PENDING_BYTES = 64 * 1024 * 1024
const READY_WAIT_MS = 1_000

export class RedisReplayLog {
  readonly #redis: RedisProvider
  readonly #metrics: HubMetrics
  readonly #logger: Logger
  #maxEvents: number
  #maxAgeMs: number
  readonly #logNow = oncePer(5_000)
  /**
   * A reload pointed the replay log elsewhere (another URL or key prefix, or no Redis): the
   * streams opened before it still write their epochs here while they last, but only while this
   * Redis is ready — nothing is parked for a Redis the config no longer names (it may be gone for
   * good), and what was parked is dropped.
   */
  #retired = false
  #closed = false

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

  /** See #retired. */
  retire(): void {
    this.#retired = true
    this.#dropPending()
  }

  /** No stream writes here any more: drop what waits and close the connection (it is not reopened). */
  close(): Promise<void> {
    this.#closed = true
    this.#dropPending()
    return this.#redis.close()
  }

  #dropPending(): void {
    const n = this.#pending.length
    if (n === 0) return
    this.#pending.length = 0
    this.#pendingBytes = 0
    this.#metrics.redisErrors.labels('pending_dropped').inc(n)
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
    if (this.#closed) return
    const client = this.#redis.client()
    const key = this.key(streamId, epoch)
    if (client.status !== 'ready') {
      if (this.#retired) this.#metrics.redisErrors.labels('pending_dropped').inc()
      else this.#park(key, offset, ts, payload)
      return
    }
    this.#xadd(key, offset, ts, payload)
  }

  #xadd(key: string, offset: number, ts: number, payload: string): void {
    this.#redis
      .client()
      .xadd(key, 'MAXLEN', String(this.#maxEvents), `${offset}-0`, 'p', payload, 't', String(ts))
      .catch((err: Error) => this.#failed('xadd', err))
  }

  // Commands fail fast while Redis is (re)connecting; events logged meanwhile wait here, bounded,
  // and go out in order once it is ready. What overflows is missing from the log, and a reader
  // reports the hole as a gap.
  readonly #pending: { key: string; offset: number; ts: number; payload: string }[] = []
  #pendingBytes = 0
  #waiting = false

  #park(key: string, offset: number, ts: number, payload: string): void {
    // Oldest first: the newest events are the likeliest to be replayed.
    while (this.#pending.length > 0 && (this.#pending.length >= MAX_PENDING || this.#pendingBytes + payload.length > MAX_PENDING_BYTES)) {
      this.#pendingBytes -= this.#pending.shift()!.payload.length
      this.#metrics.redisErrors.labels('pending_overflow').inc()
    }
    this.#pending.push({ key, offset, ts, payload })
    this.#pendingBytes += payload.length
    if (this.#waiting) return
    this.#waiting = true
    this.#redis.client().once('ready', () => {
      this.#waiting = false
      if (this.#closed) return
      const keys = new Set<string>()
      this.#pendingBytes = 0
      for (const p of this.#pending.splice(0)) {
        this.#xadd(p.key, p.offset, p.ts, p.payload)
        keys.add(p.key)
      }
      // maintain() skipped these keys while Redis was away; a stream that is quiet from now on
      // would never refresh them, and XADD alone leaves a key that never expires.
      const client = this.#redis.client()
      for (const key of keys) client.pexpire(key, this.#maxAgeMs + 5_000).catch((err: Error) => this.#failed('pexpire', err))
    })
  }

  /** Refresh the key's TTL and drop events older than the age bound (minOffset: first one to keep). */
  maintain(streamId: string, epoch: string, minOffset: number | undefined): void {
    if (this.#closed) return
    const key = this.key(streamId, epoch)
    const client = this.#redis.client()
    if (client.status !== 'ready') return
    client.pexpire(key, this.#maxAgeMs + 5_000).catch((err: Error) => this.#failed('pexpire', err))
    if (minOffset !== undefined) client.xtrim(key, 'MINID', `${minOffset}-0`).catch((err: Error) => this.#failed('xtrim', err))
  }

  /**
   * Events after `offset` of (stream, epoch), at most `count` of them (a replay reads the log page
   * by page, as its client takes them); undefined when Redis could not answer.
   */
  async since(streamId: string, epoch: string, offset: number, count = this.#maxEvents): Promise<StoredRange | undefined> {
    if (this.#closed) return undefined
    const key = this.key(streamId, epoch)
    try {
      const client = this.#redis.client()
      // A subscribe can arrive while the connection is still being made (a gateway just
      // started): wait for it briefly rather than answer with a gap it could have avoided.
      if (client.status !== 'ready' && !(await readyWithin(client, READY_WAIT_MS))) throw new Error(`redis not ready (${client.status})`)
      // COUNT is what was asked, not cut to this process's maxEvents: a key written under a larger
      // bound (a restart or replica after lowering it) holds more, and the reader takes a page
      // shorter than it asked for as the end of the log (the rest was skipped with an epoch gap).
      //
      // Both go through the auto-pipeline, as append's XADDs do, so they reach Redis after every
      // XADD issued before them: a MULTI is written at once, ahead of XADDs still queued behind an
      // auto-pipeline in flight, and under continuous traffic a bridge read a log without the
      // events the ring had just evicted — and announced them as a trimmed gap.
      const [exists, range] = await Promise.all([client.exists(key), client.xrange(key, `(${offset}-0`, '+', 'COUNT', Math.max(1, count))])
      const entries: StoredEvent[] = []
      for (const [id, fields] of range) {
        let payload: string | undefined
        let ts = 0
        for (let i = 0; i < fields.length; i += 2) {
          if (fields[i] === 'p') payload = fields[i + 1]
          else if (fields[i] === 't') ts = Number(fields[i + 1])
        }
        const off = Number(id.slice(0, id.indexOf('-')))
        if (payload !== undefined && Number.isSafeInteger(off)) entries.push({ offset: off, ts, payload })
      }
      return { exists: exists === 1, entries }
    } catch (err) {
      this.#failed('xrange', err as Error)
      return undefined
    }
  }

  #failed(op: string, err: Error): void {
    this.#metrics.redisErrors.labels(op).inc()
    if (this.#logNow()) this.#logger.warn({ op, err: { message: err.message } }, 'replay log: redis operation failed; delivery continues from memory')
  }
}
