// One client's replay, read from the log as its connection takes it (flow control), instead of
// being pushed into its delivery queue all at once: a replay of any length fits the tier's queue
// bounds, and only a client that does not read falls behind. The feed reads the stream's
// in-memory ring by sequence number — first what the client missed, then, with no seam, the live
// events logged meanwhile (they are in the ring before they are fanned out) — or, for an epoch
// this process does not hold, Redis page by page first. Once it has read everything the ring
// holds, the subscription switches to live delivery. When the ring evicts entries before the feed
// read them (the client fell behind the log's bounds), the client gets the ring's gap notice
// (trimmed, expired, epoch) and the feed continues after it — unless Redis still holds them: the
// ring is bounded by bytes too (replay.maxBytes), Redis only by count and age, so what the ring
// pushed out is read back from Redis until the ring holds what follows (a bridge, see bridge()).
import type { Logger } from 'pino'
import type { CursorPosition } from './cursor.ts'
import { Fifo, type QueuedEntry } from './delivery-queue.ts'
import type { HubMetrics } from './metrics.ts'
import type { GapReason } from './protocols.ts'
import type { RedisReplayLog, StoredRange } from './redis-log.ts'
import { missedBetween, type ExecutionResultLike, type LocateResult, type ReplayRing } from './replay-ring.ts'
import { parseKeepingDigits } from '../../config/json-numbers.ts'

/** What a feed reads and reports to: its stream's log. */
export interface FeedSource {
  readonly ring: ReplayRing
  readonly streamId: string
  readonly maxAgeMs: number
  readonly metrics: HubMetrics
  readonly logger: Logger
  /** The stream's Redis log, when it writes one: where events the ring evicted may still be. */
  readonly redis?: RedisReplayLog | undefined
  cursor(epoch: string, offset: number, ts: number): string
}

/** Redis pages: the first one small, then sized to about REDIS_PAGE_BYTES of event text. */
const REDIS_FIRST_PAGE = 64
const REDIS_MAX_PAGE = 512
const REDIS_PAGE_BYTES = 1024 * 1024

interface RedisPart {
  readonly redis: RedisReplayLog
  readonly pos: CursorPosition
  /** The stream's head when the replay began: the epoch gap at the end leads there. */
  readonly head: string
  /** The client's cursor was older than the age bound when it came. */
  readonly aged: boolean
  /** Offset the next page reads after. */
  after: number
  /** The next offset a continuous log would hold. */
  expected: number
  /** Cursor of the last position handed out (where a gap notice starts). */
  from: string
  holes: number
  /** The replay was counted in igw_replay_requests_total{result="gap"} (once per replay, not per notice). */
  counted: boolean
  /** Entries skipped for their age, and the last of them. */
  stale: number
  lastStale: { offset: number; ts: number } | undefined
  fresh: number
  page: number
  first: boolean
  fetching: boolean
  /**
   * A bridge over what the ring evicted of an epoch it still knows: it ends where the ring holds
   * what follows (no seam, no notice), or, once Redis has nothing more, with the ring's own gap.
   */
  bridge: boolean
  /**
   * The epoch's newest offset this process had logged when the page in flight was asked for: its
   * XADDs went out before the XRANGE on the same connection, so Redis answers with everything up
   * to it that it kept. What the ring evicted after that may have been logged after the read.
   */
  sentHead: number | undefined
}

export class ReplayFeed {
  readonly #src: FeedSource
  /** Entries owed before reading on: gap notices, a page read from Redis. */
  readonly #owed = new Fifo<QueuedEntry>()
  /** The next ring sequence number to read. */
  #seq: number
  /** Ring entries before this one were logged before the replay began (what counts as replayed). */
  readonly #replayEnd: number
  /** The last position handed out from the ring (where a notice starts when the ring evicts ahead of the feed). */
  #epoch: string
  #offset: number
  #cursor: string
  #redis: RedisPart | undefined = undefined
  /** A replay from the ring whose igw_replay_requests_total outcome is still to be counted (see countOutcome). */
  #outcome = false
  #cancelled = false
  /** Called when the feed has entries again after `next()` answered null (a Redis page came). */
  onReady: (() => void) | undefined = undefined

  /** A feed reading the ring from `seq`, the client being at (epoch, offset) = `cursor`. */
  constructor(src: FeedSource, seq: number, epoch: string, offset: number, cursor: string) {
    this.#src = src
    this.#seq = seq
    this.#replayEnd = src.ring.endSeq
    this.#epoch = epoch
    this.#offset = offset
    this.#cursor = cursor
  }

  /** Hand out this entry before anything read from the log. */
  owe(entry: QueuedEntry): void {
    this.#owed.push(entry)
  }

  /**
   * Count this replay in igw_replay_requests_total once its outcome is known: "gap" when the ring
   * evicts what it had yet to read (a client reading more slowly than the log turns over), else
   * "resumed" once it caught up (or the client left). Counted at the subscribe, as before, every
   * replay the ring could start was "resumed", however it went on.
   */
  countOutcome(): void {
    this.#outcome = true
  }

  #count(result: 'resumed' | 'gap'): void {
    if (!this.#outcome) return
    this.#outcome = false
    this.#src.metrics.replayRequests.labels(result).inc()
  }

  /** Read (stream, pos.epoch) after pos.offset from Redis first; the ring part follows an epoch gap to `head`. */
  fromRedis(redis: RedisReplayLog, pos: CursorPosition, cursor: string, head: string): void {
    this.#redis = {
      redis,
      pos,
      head,
      aged: pos.ts > 0 && pos.ts < Date.now() - this.#src.maxAgeMs,
      after: pos.offset,
      expected: pos.offset + 1,
      from: cursor,
      holes: 0,
      counted: false,
      stale: 0,
      lastStale: undefined,
      fresh: 0,
      page: REDIS_FIRST_PAGE,
      first: true,
      fetching: false,
      bridge: false,
      sentHead: undefined,
    }
  }

  /**
   * The ring no longer holds what follows (epoch, offset) of an epoch it knows (the answer was a
   * gap): read it from Redis, which keeps maxEvents whatever the ring's byte bound, until the ring
   * holds the rest. Only what neither holds is announced (a hole in Redis, or the ring's gap from
   * where Redis ended). Its outcome is counted as the ring part's (countOutcome).
   */
  bridge(redis: RedisReplayLog, epoch: string, offset: number, ts: number, cursor: string): void {
    this.fromRedis(redis, { streamId: this.#src.streamId, epoch, offset, ts }, cursor, cursor)
    this.#redis!.bridge = true
    this.#epoch = epoch
    this.#offset = offset
    this.#cursor = cursor
  }

  /** The subscription ended: stop (a Redis read in flight is ignored when it comes back). */
  cancel(): void {
    if (this.#cancelled) return
    this.#cancelled = true
    this.#count('resumed')
    const rp = this.#redis
    // A replay the client left before its end resumed as far as it went.
    if (rp !== undefined && !rp.bridge && !rp.first && rp.holes === 0 && rp.stale === 0) this.#src.metrics.replayRequests.labels('resumed').inc()
    this.#redis = undefined
  }

  /**
   * The next entry to deliver; null while a Redis page is being read (onReady follows), undefined
   * once everything logged is read: the subscription continues with live events.
   */
  next(): QueuedEntry | null | undefined {
    if (this.#cancelled) return undefined
    const owed = this.#owed.shift()
    if (owed !== undefined) return owed
    const rp = this.#redis
    if (rp !== undefined) {
      if (!rp.fetching) this.#fetch(rp)
      return null
    }
    const ring = this.#src.ring
    ring.trimAged(Date.now())
    if (this.#seq < ring.startSeq) {
      // Read on from where that leaves the feed: its notice, a bridge's first page, or the ring.
      this.#fellBehind()
      return this.next()
    }
    const e = ring.at(this.#seq)
    if (e === undefined) {
      this.#count('resumed')
      return undefined
    }
    this.#seq++
    this.#epoch = e.epoch
    this.#offset = e.offset
    this.#cursor = e.cursor
    if (e.kind === 'event' && this.#seq <= this.#replayEnd) {
      this.#src.metrics.replayEvents.labels('memory').inc()
      // A re-send, not a live delivery: igw_subscription_delivery_seconds would take its age (the
      // time since it came from the upstream, minutes for a resume) as delivery latency. receivedAt
      // NaN marks it as replayed, like the events read back from Redis. Replays only: one copy each.
      return { ...e, receivedAt: Number.NaN }
    }
    return e
  }

  /** The ring evicted entries the feed had not read yet: say why, continue after them. */
  #fellBehind(): void {
    const src = this.#src
    const ring = src.ring
    const r = ring.locate(this.#epoch, this.#offset, Date.now())
    if (r.kind === 'gap' && src.redis?.provider.ready === true) {
      // Redis may still hold what the ring pushed out ahead of this reader.
      this.bridge(src.redis, this.#epoch, this.#offset, 0, this.#cursor)
      return
    }
    if (r.kind === 'gap') {
      this.#ringGap(r)
      return
    }
    if (r.kind === 'ok') {
      this.#seq = Math.max(r.seq, ring.startSeq)
      return
    }
    // The ring forgot the epoch altogether: it does only once MAX_EPOCHS newer ones started, so
    // the stream restarted since (an epoch gap, not a trim), and continue at its head — also when
    // everything it held aged out meanwhile: going live without a notice, the client passed into
    // another epoch without a word.
    this.#toHead()
  }

  /** The ring's gap notice from where the feed stands, and on after it. */
  #ringGap(r: Extract<LocateResult, { kind: 'gap' }>): void {
    const to = this.#src.cursor(r.resumeEpoch, r.resumeOffset, r.resumeTs)
    this.#count('gap')
    const missed = missedBetween(this.#epoch, this.#offset, r)
    this.#owed.push({ kind: 'gap', gap: missed === undefined ? { reason: r.reason, from: this.#cursor, to } : { reason: r.reason, from: this.#cursor, to, missed } })
    this.#seq = r.seq
    this.#epoch = r.resumeEpoch
    this.#offset = r.resumeOffset
    this.#cursor = to
  }

  /** An epoch gap from where the feed stands to the ring's head, and on from there. */
  #toHead(): void {
    const ring = this.#src.ring
    const head = ring.head
    this.#seq = ring.endSeq
    if (head === undefined) return
    const to = this.#src.cursor(head.epoch, head.offset, head.ts)
    this.#count('gap')
    this.#owed.push({ kind: 'gap', gap: { reason: 'epoch', from: this.#cursor, to } })
    this.#epoch = head.epoch
    this.#offset = head.offset
    this.#cursor = to
  }

  #fetch(rp: RedisPart): void {
    rp.fetching = true
    const asked = rp.page
    const head = this.#src.ring.head
    rp.sentHead = head !== undefined && head.epoch === rp.pos.epoch ? head.offset : undefined
    void rp.redis
      .since(this.#src.streamId, rp.pos.epoch, rp.after, asked)
      .then(
        (range) => this.#page(rp, range, asked),
        () => this.#page(rp, undefined, asked),
      )
      .catch((err: unknown) => {
        // A bug here must cost this replay, not the worker (an unhandled rejection).
        this.#src.logger.error({ err, streamId: this.#src.streamId }, 'replay from redis failed')
        if (this.#redis === rp) {
          if (rp.bridge) this.#joinRing(rp, true)
          else {
            this.#redis = undefined
            this.#owed.push({ kind: 'gap', gap: { reason: 'epoch', from: rp.from, to: rp.head } })
          }
          // next() said null (a page was coming): nothing else wakes the feed on a quiet stream.
          this.onReady?.()
        }
      })
  }

  #gap(rp: RedisPart, reason: GapReason, to: string, missed?: number): void {
    this.#countGap(rp)
    this.#owed.push({ kind: 'gap', gap: missed === undefined ? { reason, from: rp.from, to } : { reason, from: rp.from, to, missed } })
    rp.from = to
  }

  /**
   * The metric counts subscribes with a cursor by outcome: one replay meeting several holes in
   * the log is one request with a gap (each notice still counts in igw_replay_gaps_total).
   */
  #countGap(rp: RedisPart): void {
    if (rp.bridge) {
      this.#count('gap')
      return
    }
    if (rp.counted) return
    rp.counted = true
    this.#src.metrics.replayRequests.labels('gap').inc()
  }

  /**
   * A bridge read up to (epoch, expected - 1): continue in the ring when it holds what follows —
   * read on from Redis while it may have more — else (`exhausted`) with the ring's answer from
   * there: its gap notice, or, for an epoch it forgot meanwhile, an epoch gap to its head.
   */
  #joinRing(rp: RedisPart, exhausted: boolean): void {
    const epoch = rp.pos.epoch
    const at = rp.expected - 1
    const r = this.#src.ring.locate(epoch, at, Date.now())
    if (r.kind !== 'ok' && !exhausted) return
    this.#redis = undefined
    this.#epoch = epoch
    this.#offset = at
    this.#cursor = rp.from
    if (r.kind === 'ok') {
      this.#seq = r.seq
      return
    }
    if (r.kind === 'gap') this.#ringGap(r)
    else this.#toHead()
  }

  /** A page from Redis: its events (and the holes between them) become owed entries. */
  #page(rp: RedisPart, range: StoredRange | undefined, asked: number): void {
    if (this.#cancelled || this.#redis !== rp) return
    rp.fetching = false
    const src = this.#src
    const first = rp.first
    rp.first = false
    if (first && !rp.bridge && (range === undefined || !range.exists)) {
      // Nothing to replay from Redis: one notice, then this process's own epoch.
      this.#gap(rp, range !== undefined && rp.aged ? 'expired' : 'epoch', rp.head)
      this.#redis = undefined
      this.onReady?.()
      return
    }
    const entries = range?.entries ?? []
    const cutoff = Date.now() - src.maxAgeMs
    let bytes = 0
    let fresh = 0
    /** A bridge reached what the ring still holds: the rest of the page is not needed. */
    let joined = false
    for (const e of entries) {
      rp.after = Math.max(rp.after, e.offset)
      bytes += e.payload.length
      if (e.ts < cutoff) {
        rp.stale++
        rp.lastStale = { offset: e.offset, ts: e.ts }
        continue
      }
      // Holes: the head of the log trimmed or aged out, or events the writer could not log
      // (Redis was down). Each one is announced; nothing after a hole is passed off as continuous.
      if (e.offset > rp.expected) {
        // A bridge's hole (a write Redis lost) may lie in what the ring still holds: read on there.
        if (rp.bridge && src.ring.locate(rp.pos.epoch, rp.expected - 1, Date.now()).kind === 'ok') {
          joined = true
          break
        }
        const to = src.cursor(rp.pos.epoch, e.offset - 1, e.ts)
        // Offsets number the epoch's events: the hole is exactly the ones not read.
        this.#gap(rp, rp.holes === 0 && (rp.aged || rp.stale > 0) ? 'expired' : 'trimmed', to, e.offset - rp.expected)
        rp.holes++
      }
      if (e.offset < rp.expected) continue
      let result: ExecutionResultLike
      try {
        // With the upstream's digits kept, as live events are (topic filters compare them).
        result = parseKeepingDigits(e.payload) as ExecutionResultLike
      } catch {
        continue
      }
      const c = src.cursor(rp.pos.epoch, e.offset, e.ts)
      this.#owed.push({ kind: 'event', epoch: rp.pos.epoch, offset: e.offset, ts: e.ts, cursor: c, tail: `,"payload":${e.payload}}`, result, receivedAt: Number.NaN })
      rp.from = c
      rp.expected = e.offset + 1
      fresh++
    }
    rp.fresh += fresh
    if (fresh) src.metrics.replayEvents.labels('redis').inc(fresh)
    const avg = entries.length > 0 ? bytes / entries.length : 0
    rp.page = avg > 0 ? Math.max(1, Math.min(REDIS_MAX_PAGE, Math.floor(REDIS_PAGE_BYTES / avg))) : REDIS_MAX_PAGE
    if (rp.bridge) {
      const short = range === undefined || !range.exists || entries.length < asked
      // A short page (none at all: Redis has none of it either) ends the bridge with the ring's
      // answer — but only if Redis lacks something logged before the page was asked for:
      // under continuous traffic the ring (a few events when they are large) evicts events whose
      // XADD went out after the XRANGE, and announcing those as trimmed was a false gap. Read on.
      const raced = short && range !== undefined && range.exists && rp.sentHead !== undefined && rp.expected - 1 >= rp.sentHead
      this.#joinRing(rp, joined || (short && !raced))
      this.onReady?.()
      return
    }
    // A short page is the end of what that epoch's writer logged (or Redis stopped answering, or
    // the key is gone meanwhile: what follows is covered by the epoch gap).
    if (range === undefined || !range.exists || entries.length < asked) {
      if (rp.fresh === 0 && rp.lastStale !== undefined) this.#gap(rp, 'expired', src.cursor(rp.pos.epoch, rp.lastStale.offset, rp.lastStale.ts), rp.lastStale.offset - rp.expected + 1)
      // Redis stopped answering in the middle of the replay: the rest of what that epoch's writer
      // logged was not delivered, so it is a replay with a gap, not a resume.
      if (range === undefined) this.#countGap(rp)
      else if (rp.holes === 0 && rp.stale === 0) src.metrics.replayRequests.labels('resumed').inc()
      // What that epoch's writer logged is all there is; this process runs its own epoch.
      this.#owed.push({ kind: 'gap', gap: { reason: 'epoch', from: rp.from, to: rp.head } })
      this.#redis = undefined
    }
    this.onReady?.()
  }
}
