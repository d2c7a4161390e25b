// The in-memory replay log of one stream: the last events (bounded by count, bytes and age) and
// the epoch changes between them, in order. Pure: no sockets, no clocks (time is passed in).
// It answers "what comes after (epoch, offset)?" — the events, or why some of them are gone.

/** The part of an upstream result the gateway reads (GraphQL ExecutionResult shape). */
export interface ExecutionResultLike {
  data?: unknown
  errors?: readonly unknown[]
  extensions?: Record<string, unknown>
}

export interface LogEvent {
  readonly kind: 'event'
  readonly epoch: string
  readonly offset: number
  /** Wall-clock ms when logged (age bound, Redis, cursor). */
  readonly ts: number
  readonly cursor: string
  /** `,"payload":{…"extensions":{"cursor":…}}}`: the shared tail of every protocol's event message. */
  readonly tail: string
  /** The parsed result, for per-client event filters. */
  readonly result: ExecutionResultLike
  /** performance.now() when it came from the upstream; NaN for events read back from Redis. */
  readonly receivedAt: number
}

/** The stream started a new epoch: what came before cannot be continued exactly. */
export interface EpochMark {
  readonly kind: 'epoch'
  readonly epoch: string
  readonly offset: 0
  readonly ts: number
  /** Cursor of the new epoch's start. */
  readonly cursor: string
}

export type LogEntry = LogEvent | EpochMark
export type EvictReason = 'trimmed' | 'expired'

export type SinceResult =
  /** Everything after the position is here (possibly nothing). */
  | { readonly kind: 'ok'; readonly entries: LogEntry[] }
  /**
   * Events right after the position are gone; delivery continues after (epoch, offset). "epoch":
   * what is gone includes the start of a later epoch (its mark), so the stream restarted in between.
   */
  | { readonly kind: 'gap'; readonly reason: EvictReason | 'epoch'; readonly entries: LogEntry[]; readonly resumeEpoch: string; readonly resumeOffset: number; readonly resumeTs: number }
  /** This log never had the epoch (or no longer remembers it). */
  | { readonly kind: 'unknown' }

/**
 * Like SinceResult, without copying the entries: `seq` is the sequence number (see
 * `ReplayRing.startSeq`) of the first entry after the position, read them with `at(seq)`.
 */
export type LocateResult =
  | { readonly kind: 'ok'; readonly seq: number }
  | { readonly kind: 'gap'; readonly reason: EvictReason | 'epoch'; readonly seq: number; readonly resumeEpoch: string; readonly resumeOffset: number; readonly resumeTs: number }
  | { readonly kind: 'unknown' }

/**
 * How many events a `gap` answer of locate() skips after (epoch, offset), for the notice's
 * `missed`: known when it stays in that epoch (trimmed, expired: offsets number its events), not
 * across a restart (what the upstream sent while it was down is unknown).
 */
export function missedBetween(epoch: string, offset: number, r: Extract<LocateResult, { kind: 'gap' }>): number | undefined {
  return r.reason !== 'epoch' && r.resumeEpoch === epoch ? r.resumeOffset - offset : undefined
}

interface EpochInfo {
  /** Highest offset logged. */
  last: number
  /** Highest offset evicted (0: none). */
  evictedThrough: number
  evictedTs: number
  /** Entries of this epoch still in the ring. */
  retained: number
  /** Why offsets were evicted: consecutive ranges ending at `through`, oldest first. */
  spans: { through: number; reason: EvictReason }[]
  /**
   * Evicted events sampled about every maxAgeMs / AGE_MARK_STEPS, oldest first: every offset up
   * to a mark's is at most its ts old (an epoch's ts never go back). They tell how far a copy of
   * the log may trim by age, however long ago the ring pushed those events out (firstOffsetSince).
   */
  ageMarks: { offset: number; ts: number }[]
}

const MAX_EPOCHS = 16
const MAX_SPANS = 16
const AGE_MARK_STEPS = 16
const MAX_AGE_MARKS = 2 * AGE_MARK_STEPS

/** What an entry counts against maxBytes: its event text (an epoch mark: a few bytes). */
function entryBytes(e: LogEntry): number {
  return e.kind === 'event' ? e.tail.length : 64
}

export class ReplayRing {
  readonly maxEvents: number
  readonly maxAgeMs: number
  /** Event text kept (the newest event always is, whatever its size: it is bounded by maxMessageBytes). */
  readonly maxBytes: number
  #buf: (LogEntry | undefined)[] = new Array(8)
  #head = 0
  #size = 0
  #bytes = 0
  /** Entries evicted since creation: the sequence number of the oldest entry held. */
  #evicted = 0
  readonly #epochs = new Map<string, EpochInfo>()
  /** The newest position logged (or the registered first epoch's start). */
  #headEpoch: string | undefined
  #headOffset = 0
  #headTs = 0

  constructor(maxEvents: number, maxAgeMs: number, maxBytes = Number.POSITIVE_INFINITY) {
    this.maxEvents = Math.max(1, maxEvents)
    this.maxAgeMs = maxAgeMs
    this.maxBytes = maxBytes
  }

  get size(): number {
    return this.#size
  }

  /** Event text held now (what maxBytes bounds). */
  get bytes(): number {
    return this.#bytes
  }

  /** The newest position logged (or the first epoch's start): where a reader that lost its place continues. */
  get head(): { readonly epoch: string; readonly offset: number; readonly ts: number } | undefined {
    return this.#headEpoch === undefined ? undefined : { epoch: this.#headEpoch, offset: this.#headOffset, ts: this.#headTs }
  }

  /** Register an epoch that has no entry yet (a stream's first epoch). */
  startEpoch(epoch: string, ts = 0): void {
    this.#info(epoch)
    this.#headEpoch = epoch
    this.#headOffset = 0
    this.#headTs = ts
  }

  push(entry: LogEntry, now: number): void {
    this.#evictExpired(now)
    if (this.#size >= this.maxEvents) this.#evict('trimmed')
    if (this.#size === this.#buf.length) this.#grow()
    this.#buf[(this.#head + this.#size) % this.#buf.length] = entry
    this.#size++
    this.#bytes += entryBytes(entry)
    const info = this.#info(entry.epoch)
    info.retained++
    if (entry.kind === 'event') info.last = entry.offset
    this.#headEpoch = entry.epoch
    this.#headOffset = entry.offset
    this.#headTs = entry.ts
    // Many large events (each up to maxMessageBytes) must not hold maxEvents × their size.
    while (this.#bytes > this.maxBytes && this.#size > 1) this.#evict('trimmed')
  }

  /** Sequence number of the oldest entry held (every entry pushed gets the next one). */
  get startSeq(): number {
    return this.#evicted
  }

  /** Sequence number the next entry pushed will get. */
  get endSeq(): number {
    return this.#evicted + this.#size
  }

  /** The entry of that sequence number, while it is held. */
  at(seq: number): LogEntry | undefined {
    const i = seq - this.#evicted
    return i >= 0 && i < this.#size ? this.#at(i) : undefined
  }

  /** Apply the age bound now (reads by sequence number do not). */
  trimAged(now: number): void {
    this.#evictExpired(now)
  }

  /** Entries after (epoch, offset), oldest first, including later epochs' marks and events. */
  since(epoch: string, offset: number, now: number): SinceResult {
    const r = this.locate(epoch, offset, now)
    if (r.kind === 'unknown') return r
    const entries: LogEntry[] = []
    for (let i = r.seq - this.#evicted; i < this.#size; i++) entries.push(this.#at(i))
    if (r.kind === 'ok') return { kind: 'ok', entries }
    return { kind: 'gap', reason: r.reason, entries, resumeEpoch: r.resumeEpoch, resumeOffset: r.resumeOffset, resumeTs: r.resumeTs }
  }

  /** Where the entries after (epoch, offset) start (since(), without copying them). */
  locate(epoch: string, offset: number, now: number): LocateResult {
    this.#evictExpired(now)
    const info = this.#epochs.get(epoch)
    if (info === undefined || offset > info.last || offset < 0) return { kind: 'unknown' }
    const start = this.#startIndex(epoch, offset, info)
    const seq = this.#evicted + start
    // A later epoch whose mark is gone (trimmed or aged out): the client would pass from its
    // epoch into the middle of another one — or, with nothing left, to live events of it —
    // without a word. The restart is announced, and delivery continues before what is left.
    const first = start < this.#size ? this.#at(start) : undefined
    if (first !== undefined ? first.kind === 'event' && first.epoch !== epoch : this.#headEpoch !== undefined && this.#headEpoch !== epoch) {
      if (first === undefined) return { kind: 'gap', reason: 'epoch', seq, resumeEpoch: this.#headEpoch!, resumeOffset: this.#headOffset, resumeTs: this.#headTs }
      // FIFO: the entry right before `first` was evicted last of its epoch (its mark, at offset 0).
      const prev = first.offset - 1
      const resumeTs = prev > 0 ? (this.#epochs.get(first.epoch)?.evictedTs ?? first.ts) : first.ts
      return { kind: 'gap', reason: 'epoch', seq, resumeEpoch: first.epoch, resumeOffset: prev, resumeTs }
    }
    if (offset >= info.evictedThrough) return { kind: 'ok', seq }
    return { kind: 'gap', reason: reasonFor(info, offset + 1), seq, resumeEpoch: epoch, resumeOffset: info.evictedThrough, resumeTs: info.evictedTs }
  }

  /**
   * Where a copy of this log (Redis) may start when trimming `epoch` by age: every offset before
   * the one returned is known to be older than `cutoffTs`; undefined when none is. Only age counts:
   * events this ring pushed out for its count or byte bound while they were fresh are not older
   * than the cutoff — the copy keeps them (it has its own count bound) until they are.
   */
  firstOffsetSince(epoch: string, cutoffTs: number): number | undefined {
    const info = this.#epochs.get(epoch)
    if (info === undefined) return undefined
    let through = 0
    if (info.evictedThrough > 0 && info.evictedTs < cutoffTs) through = info.evictedThrough
    else {
      const marks = info.ageMarks
      let n = 0
      while (n < marks.length && marks[n]!.ts < cutoffTs) n++
      if (n > 0) {
        through = marks[n - 1]!.offset
        // the cutoff only moves on: marks before this one will never be needed again
        marks.splice(0, n - 1)
      }
    }
    if (info.retained > 0 && info.last > through) {
      for (let i = 0; i < this.#size; i++) {
        const e = this.#at(i)
        if (e.kind !== 'event' || e.epoch !== epoch || e.offset <= through) continue
        if (e.ts >= cutoffTs) break
        through = e.offset
      }
    }
    return through > 0 ? through + 1 : undefined
  }

  /** Drop everything (the stream is gone). */
  clear(): void {
    this.#evicted += this.#size
    this.#buf = new Array(8)
    this.#head = 0
    this.#size = 0
    this.#bytes = 0
    this.#epochs.clear()
    this.#headEpoch = undefined
    this.#headOffset = 0
    this.#headTs = 0
  }

  #at(i: number): LogEntry {
    return this.#buf[(this.#head + i) % this.#buf.length]!
  }

  #startIndex(epoch: string, offset: number, info: EpochInfo): number {
    // FIFO eviction: an epoch with nothing left in the ring is older than everything retained.
    if (info.retained === 0) return 0
    let seen = false
    for (let i = 0; i < this.#size; i++) {
      const e = this.#at(i)
      if (e.epoch === epoch) {
        seen = true
        if (e.kind === 'event' && e.offset > offset) return i
      } else if (seen) {
        return i
      }
    }
    return this.#size
  }

  #info(epoch: string): EpochInfo {
    let info = this.#epochs.get(epoch)
    if (info === undefined) {
      info = { last: 0, evictedThrough: 0, evictedTs: 0, retained: 0, spans: [], ageMarks: [] }
      this.#epochs.set(epoch, info)
      if (this.#epochs.size > MAX_EPOCHS) {
        for (const [k, v] of this.#epochs) {
          if (v.retained === 0 && k !== epoch) {
            this.#epochs.delete(k)
            break
          }
        }
      }
    }
    return info
  }

  #evictExpired(now: number): void {
    const cutoff = now - this.maxAgeMs
    while (this.#size > 0 && this.#buf[this.#head]!.ts < cutoff) this.#evict('expired')
  }

  #evict(reason: EvictReason): void {
    const e = this.#buf[this.#head]!
    this.#buf[this.#head] = undefined
    this.#head = (this.#head + 1) % this.#buf.length
    this.#size--
    this.#evicted++
    this.#bytes -= entryBytes(e)
    const info = this.#epochs.get(e.epoch)
    if (info === undefined) return
    info.retained--
    if (e.kind !== 'event') return
    info.evictedThrough = e.offset
    info.evictedTs = e.ts
    const marks = info.ageMarks
    const mark = marks[marks.length - 1]
    if (mark === undefined || e.ts - mark.ts >= this.maxAgeMs / AGE_MARK_STEPS) {
      marks.push({ offset: e.offset, ts: e.ts })
      if (marks.length > MAX_AGE_MARKS) marks.shift()
    }
    const last = info.spans[info.spans.length - 1]
    if (last !== undefined && last.reason === reason) last.through = e.offset
    else {
      info.spans.push({ through: e.offset, reason })
      if (info.spans.length > MAX_SPANS) info.spans.shift()
    }
  }

  #grow(): void {
    const next = new Array<LogEntry | undefined>(Math.min(this.#buf.length * 2, Math.max(this.maxEvents, 8)))
    for (let i = 0; i < this.#size; i++) next[i] = this.#at(i)
    this.#buf = next
    this.#head = 0
  }
}

function reasonFor(info: EpochInfo, offset: number): EvictReason {
  for (const s of info.spans) if (s.through >= offset) return s.reason
  return info.spans[info.spans.length - 1]?.reason ?? 'trimmed'
}
