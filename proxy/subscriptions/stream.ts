// One shared upstream subscription and its replay log. Every event gets the next offset of the
// current epoch and a signed cursor, is logged (ring, and Redis when configured), then fanned
// out to the clients in order. A client joining with a cursor first gets what it missed from
// the log — or an explicit gap notice saying why it cannot — then live events, with nothing
// skipped or repeated in between. When the upstream connection drops and comes back, the
// backend cannot continue the old subscription: a new epoch starts and clients are told.
import { randomBytes } from 'node:crypto'
import type { ExecutionResult, SubscribePayload } from 'graphql-ws'
import type { Logger } from 'pino'
import { isRawJSON } from '../../config/json-numbers.ts'
import { EPOCH_BYTES, type CursorCodec } from './cursor.ts'
import { COMPLETE, type QueuedEntry } from './delivery-queue.ts'
import type { HubMetrics } from './metrics.ts'
import { graphqlErrors, type GapNotice, type GapReason } from './protocols.ts'
import type { RedisReplayLog } from './redis-log.ts'
import { ReplayFeed, type FeedSource } from './replay-feed.ts'
import { missedBetween, ReplayRing, type EpochMark, type ExecutionResultLike, type LogEvent } from './replay-ring.ts'
import { handshakeStatus, type UpstreamConnection, type UpstreamListener } from './upstream.ts'

/** A client subscription as the stream sees it. */
export interface StreamSubscriber {
  /** Position in the stream's subscriber list (-1 when not attached). */
  streamIndex: number
  /** Cursor of the last thing the client got (its own cursor while it replays). */
  lastCursor: string | null
  /** Deliver a live entry to this client (in order; while it replays, the feed reads logged entries itself). */
  push(entry: QueuedEntry): void
  /**
   * It resumes from a cursor: what it missed (and the live entries logged meanwhile) comes from
   * this feed, read as its connection takes it, before it receives live pushes again.
   */
  replayFrom(feed: ReplayFeed): void
}

/**
 * The upstream connection opened with one subscriber's own credentials (the pool's, opened if it
 * is not yet): what a shared stream moves to when the connection it rides drops.
 */
export type UpstreamOpener = () => UpstreamConnection

/** graphql-ws re-sends this very object on resubscribe, so it is kept mutable (lastEventId). */
export type UpstreamPayload = { -readonly [K in keyof SubscribePayload]: SubscribePayload[K] }

export interface StreamOptions {
  key: string
  streamId: string
  /**
   * The current cursor codec, asked for each cursor: a reload that rotates cursorKey reaches the
   * streams already flowing (they sign with the new key and verify cursors signed with it), not
   * only the streams opened after it.
   */
  codec: () => CursorCodec
  upstream: UpstreamConnection
  payload: UpstreamPayload
  maxEvents: number
  maxAgeMs: number
  /** Event text the memory ring keeps. */
  maxBytes: number
  lingerMs: number
  resume: boolean
  redis: RedisReplayLog | undefined
  metrics: HubMetrics
  logger: Logger
  onClosed: (s: Stream) => void
  /** Its last client left: it lingers (a candidate to close first when the worker is at maxStreams). */
  onIdle?: (s: Stream) => void
  /** A client attached to it while it lingered. */
  onBusy?: (s: Stream) => void
}

type State = 'live' | 'interrupted' | 'resuming' | 'done'

function newEpoch(): string {
  return randomBytes(EPOCH_BYTES).toString('hex')
}

/**
 * sink.error receives GraphQL errors, an Error, a close event, or a socket error event: make it a
 * GraphQL errors list. A close names the upstream's code and reason (4403 and 4401 call for
 * different fixes), a handshake the upstream answered without switching protocols its HTTP status.
 */
export function upstreamErrors(err: unknown): unknown[] {
  // The upstream's own GraphQL errors; one graphql-ws let through without a string message is replaced.
  if (Array.isArray(err)) return graphqlErrors(err, { message: 'upstream subscription failed', code: 'INTERNAL_SERVER_ERROR' }).errors
  const e = err as { code?: unknown; reason?: unknown; message?: unknown } | null
  const status = handshakeStatus(err)
  let detail: string
  if (status !== undefined) detail = `upstream refused the WebSocket handshake with HTTP ${status}`
  else if (typeof e?.code === 'number') {
    const reason = typeof e.reason === 'string' && e.reason !== '' ? ` ${JSON.stringify(e.reason)}` : ''
    detail = `upstream connection closed with ${e.code}${reason}`
  } else detail = typeof e?.message === 'string' && e.message !== '' ? e.message : 'connection failed'
  return [{ message: `upstream subscription failed: ${detail}`, extensions: { code: 'UPSTREAM_UNAVAILABLE' } }]
}

/**
 * An upstream event id as the text we resubscribe with (and compare resumedFrom to): a string, a
 * number, or a number beyond 2^53 read with its digits kept (JSON.rawJSON, see upstream.ts) —
 * rounded, 64-bit ids resumed from another event than the last one received.
 */
function eventIdText(v: unknown): string | undefined {
  if (typeof v === 'string') return v
  if (typeof v === 'number') return String(v)
  return v !== null && typeof v === 'object' && isRawJSON(v) ? v.rawJSON : undefined
}

export class Stream implements UpstreamListener {
  readonly key: string
  readonly streamId: string
  readonly ring: ReplayRing
  epoch: string
  #offset = 0
  #lastTs = 0
  #head: string
  #state: State = 'live'
  readonly #subs: StreamSubscriber[] = []
  #fanning = false
  #removed: StreamSubscriber[] | undefined
  #linger: NodeJS.Timeout | undefined
  #unsubscribe: (() => void) | undefined
  /** The connection it rides: the one it was opened on, or a sharer's after a drop (#rehome). */
  #upstream: UpstreamConnection
  /**
   * Each attached subscriber's credentials (as a way to open the connection they give), in the
   * order they joined: the newest is the last. Only those that came with one.
   */
  readonly #openers = new Map<StreamSubscriber, UpstreamOpener>()
  #rehoming = false
  #lastEventId: string | undefined
  #maintAt = 0
  readonly #o: StreamOptions
  readonly #feedSource: FeedSource
  readonly #baseExtensions: Record<string, unknown> | undefined

  constructor(o: StreamOptions) {
    this.#o = o
    this.key = o.key
    this.streamId = o.streamId
    this.#upstream = o.upstream
    this.ring = new ReplayRing(o.maxEvents, o.maxAgeMs, o.maxBytes)
    this.epoch = newEpoch()
    this.#lastTs = Date.now()
    this.ring.startEpoch(this.epoch, this.#lastTs)
    this.#head = this.#cursor(this.epoch, 0, this.#lastTs)
    this.#baseExtensions = o.payload.extensions ?? undefined
    this.#feedSource = { ring: this.ring, streamId: this.streamId, maxAgeMs: o.maxAgeMs, metrics: o.metrics, logger: o.logger, redis: o.redis, cursor: (epoch, offset, ts) => this.#cursor(epoch, offset, ts) }
    o.metrics.upstreams.inc()
  }

  get subscriberCount(): number {
    return this.#subs.length
  }

  get done(): boolean {
    return this.#state === 'done'
  }

  get offset(): number {
    return this.#offset
  }

  /** Cursor of the newest position (last event, or the current epoch's start). */
  get headCursor(): string {
    return this.#head
  }

  /**
   * Its first client attaches right after (streamFor's caller, in the same turn). Until then it
   * lingers as if its last client had left: a subscribe that fails in between (a throw past the
   * chain) left a stream nothing would ever close, holding its upstream subscription and a place
   * under upstream.maxStreams for good. Armed first, so a throwing subscribe is covered too.
   */
  start(): void {
    this.#maybeLinger(true)
    this.#upstream.listeners.add(this)
    this.#unsubscribe = this.#upstream.subscribe(this.#o.payload, this)
  }

  /** The upstream connection it rides now. */
  get upstream(): UpstreamConnection {
    return this.#upstream
  }

  #cursor(epoch: string, offset: number, ts: number): string {
    return this.#o.codec().encode({ streamId: this.streamId, epoch, offset, ts })
  }

  // --- graphql-ws sink ------------------------------------------------------------------------

  next(result: ExecutionResult<Record<string, unknown>, Record<string, unknown>>): void {
    if (this.#state === 'done') return
    // graphql-ws treats a throwing sink as a bad response and closes the shared connection.
    try {
      this.#next(result)
    } catch (err) {
      this.#o.logger.error({ err, streamId: this.streamId }, 'handling an upstream event failed')
    }
  }

  #next(result: ExecutionResult<Record<string, unknown>, Record<string, unknown>>): void {
    const receivedAt = performance.now()
    // graphql-ws checks only that the payload is an object: `extensions` may be null, a string,
    // an array. Anything but an object is no extensions at all (and must not throw: the event
    // would be lost without a gap).
    const raw: unknown = result.extensions
    const ext = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : undefined
    if (this.#state === 'resuming') {
      // The backend continued the old subscription only if it says so, for the id we sent.
      if (ext?.resumedFrom === undefined || eventIdText(ext.resumedFrom) !== this.#lastEventId) this.#startEpoch()
      this.#state = 'live'
    } else if (this.#state === 'interrupted') {
      this.#startEpoch()
      this.#state = 'live'
    }
    const eventId = this.#o.resume && ext !== undefined ? eventIdText(ext.eventId) : undefined
    if (eventId !== undefined) {
      this.#lastEventId = eventId
      // graphql-ws re-sends this same payload object when it resubscribes after a drop.
      this.#o.payload.extensions = { ...this.#baseExtensions, lastEventId: this.#lastEventId }
    }
    const now = Date.now()
    const ts = now > this.#lastTs ? now : this.#lastTs
    this.#lastTs = ts
    const offset = ++this.#offset
    const cursor = this.#cursor(this.epoch, offset, ts)
    let payload: string
    if (ext === undefined) {
      // Extensions that are not an object are dropped (an undefined value is not serialized).
      const json = JSON.stringify(raw === undefined ? result : { ...result, extensions: undefined })
      payload = `${json.slice(0, -1)}${json.length > 2 ? ',' : ''}"extensions":{"cursor":"${cursor}"}}`
    } else {
      payload = JSON.stringify({ ...result, extensions: { ...ext, cursor } })
    }
    const entry: LogEvent = { kind: 'event', epoch: this.epoch, offset, ts, cursor, tail: `,"payload":${payload}}`, result: result as ExecutionResultLike, receivedAt }
    this.ring.push(entry, ts)
    this.#head = cursor
    this.#o.metrics.events.inc()
    const redis = this.#o.redis
    if (redis !== undefined) {
      redis.append(this.streamId, this.epoch, offset, ts, payload)
      if (ts - this.#maintAt >= 1_000) {
        this.#maintAt = ts
        redis.maintain(this.streamId, this.epoch, this.ring.firstOffsetSince(this.epoch, ts - this.#o.maxAgeMs))
      }
    }
    this.#fanout(entry)
  }

  error(err: unknown): void {
    if (this.#state === 'done') return
    this.#o.logger.debug({ streamId: this.streamId, err: Array.isArray(err) ? err : { message: String((err as Error)?.message ?? err) } }, 'upstream subscription errored')
    this.#fanout({ kind: 'error', errors: upstreamErrors(err) })
    this.close()
  }

  complete(): void {
    if (this.#state === 'done') return
    this.#fanout(COMPLETE)
    this.close()
  }

  // --- upstream connection ----------------------------------------------------------------------

  upstreamLost(): void {
    if (this.#state === 'live' || this.#state === 'resuming') this.#state = 'interrupted'
    this.#scheduleRehome()
  }

  /**
   * A shared stream rides the connection opened with the credentials of whoever opened it. Under a
   * wider sharing scope (dedupClaims) other sharers hold other tokens, and that first token may
   * have expired or its holder left: reconnecting with it after a drop (a backend restart) would
   * be refused, for every sharer. So once the connection dropped, the stream moves to the
   * connection of the subscriber that joined last among those still attached (any sharer's
   * credentials are good for it: sharing already requires an equal scope), unless that is the
   * connection it rides. After the move the stream resubscribes there, as after any drop: an
   * epoch gap (or a resume). Done after the current turn: the old connection is in the middle of
   * its close handling, and a release may dispose it.
   */
  #scheduleRehome(): void {
    if (this.#rehoming || this.#state !== 'interrupted' || this.#openers.size === 0) return
    this.#rehoming = true
    queueMicrotask(() => {
      this.#rehoming = false
      this.#rehome()
    })
  }

  #rehome(): void {
    if (this.#state !== 'interrupted') return
    let open: UpstreamOpener | undefined
    for (const o of this.#openers.values()) open = o
    if (open === undefined) return
    const old = this.#upstream
    let next: UpstreamConnection
    try {
      next = open()
    } catch (err) {
      this.#o.logger.error({ err, streamId: this.streamId }, 'opening a sharer\'s upstream connection failed; the stream stays where it is')
      return
    }
    if (next === old) return
    const release = this.#unsubscribe
    old.listeners.delete(this)
    this.#upstream = next
    next.adoptAfterDrop()
    next.listeners.add(this)
    this.#unsubscribe = next.subscribe(this.#o.payload, this)
    // After the new subscribe: the old connection may go with this release (its last operation).
    release?.()
    this.#o.logger.info({ streamId: this.streamId, subscribers: this.#subs.length, up: next.up }, 'shared stream moved to the upstream connection of a subscriber still attached')
    if (next.up) this.upstreamRestored()
  }

  upstreamRestored(): void {
    if (this.#state !== 'interrupted') return
    if (this.#o.resume && this.#lastEventId !== undefined) {
      // Wait for the first event: it says whether the backend resumed after lastEventId.
      this.#state = 'resuming'
      return
    }
    this.#startEpoch()
    this.#state = 'live'
  }

  #startEpoch(): void {
    const ts = Math.max(Date.now(), this.#lastTs)
    this.#lastTs = ts
    this.epoch = newEpoch()
    this.#offset = 0
    // The new epoch is a new Redis key: its first event maintains it (TTL), however recently the
    // old one's was. XADD alone makes a key that never expires.
    this.#maintAt = 0
    const mark: EpochMark = { kind: 'epoch', epoch: this.epoch, offset: 0, ts, cursor: this.#cursor(this.epoch, 0, ts) }
    this.ring.push(mark, ts)
    this.#head = mark.cursor
    this.#o.logger.info({ streamId: this.streamId, epoch: this.epoch, subscribers: this.#subs.length }, 'stream restarted upstream: new epoch')
    this.#fanout(mark)
  }

  #fanout(entry: QueuedEntry): void {
    const subs = this.#subs
    this.#fanning = true
    try {
      for (let i = 0; i < subs.length; i++) {
        const sub = subs[i]!
        if (sub.streamIndex === -1) continue
        try {
          sub.push(entry)
        } catch (err) {
          this.#o.logger.error({ err, streamId: this.streamId }, 'delivering to a subscriber failed')
        }
      }
    } finally {
      this.#fanning = false
    }
    const removed = this.#removed
    if (removed !== undefined) {
      this.#removed = undefined
      for (const s of removed) this.#remove(s)
      this.#maybeLinger()
    }
  }

  // --- subscribers ------------------------------------------------------------------------------

  /**
   * Attach a client. With a cursor, what it missed comes first — read from the ring (or Redis,
   * for an epoch this process does not hold) by a feed as the client's connection takes it, not
   * pushed at once: a replay longer than the client's queue bounds loses nothing — then the live
   * events, with no seam: those logged meanwhile are read from the ring by the same feed.
   */
  attach(sub: StreamSubscriber, cursor: string | undefined, upstream?: UpstreamOpener): void {
    if (upstream !== undefined) {
      this.#openers.delete(sub)
      this.#openers.set(sub, upstream)
      // Joining while the connection is down: its credentials may be the ones that work.
      this.#scheduleRehome()
    }
    if (this.#linger !== undefined) {
      clearTimeout(this.#linger)
      this.#linger = undefined
      this.#o.onBusy?.(this)
    }
    sub.streamIndex = this.#subs.length
    this.#subs.push(sub)
    if (cursor === undefined) {
      // It starts at the head (what a topic client is acknowledged with): a gap before its first
      // event (dropped, epoch) runs from there, not from null — a client could not re-send from it.
      sub.lastCursor = this.#head
      return
    }
    const src = this.#feedSource
    const ring = this.ring
    // Where live delivery would start now: the feed ends up there after any notice.
    const live = (): ReplayFeed => new ReplayFeed(src, ring.endSeq, this.epoch, this.#offset, this.#head)
    const pos = this.#o.codec().decode(cursor)
    if (pos === undefined || pos.streamId !== this.streamId) {
      sub.lastCursor = null
      const feed = live()
      this.#replayGap(feed, 'invalid', null, this.#head)
      sub.replayFrom(feed)
      return
    }
    sub.lastCursor = cursor
    const r = ring.locate(pos.epoch, pos.offset, Date.now())
    if (r.kind === 'ok') {
      const feed = new ReplayFeed(src, r.seq, pos.epoch, pos.offset, cursor)
      feed.countOutcome()
      sub.replayFrom(feed)
      return
    }
    const redis = this.#o.redis
    if (r.kind === 'gap' && redis?.provider.ready === true) {
      // The ring pushed out what follows the cursor (its byte bound, replay.maxBytes, is not
      // Redis's): Redis may still hold it, as it would for another worker or replica. Read from
      // there until the ring holds the rest; only what neither holds is announced. (Not while
      // Redis is away: the ring's gap at once, rather than after waiting for it.)
      const feed = new ReplayFeed(src, r.seq, pos.epoch, pos.offset, cursor)
      feed.countOutcome()
      feed.bridge(redis, pos.epoch, pos.offset, pos.ts, cursor)
      sub.replayFrom(feed)
      return
    }
    if (r.kind === 'gap') {
      // The feed stands where the notice ends: should the ring evict again before it reads on,
      // the next notice starts there, not at the client's cursor (the same range reported twice).
      const to = this.#cursor(r.resumeEpoch, r.resumeOffset, r.resumeTs)
      const feed = new ReplayFeed(src, r.seq, r.resumeEpoch, r.resumeOffset, to)
      this.#replayGap(feed, r.reason, cursor, to, missedBetween(pos.epoch, pos.offset, r))
      sub.replayFrom(feed)
      return
    }
    const feed = live()
    if (redis === undefined) this.#replayGap(feed, pos.ts > 0 && pos.ts < Date.now() - this.#o.maxAgeMs ? 'expired' : 'epoch', cursor, this.#head)
    else feed.fromRedis(redis, pos, cursor, this.#head)
    sub.replayFrom(feed)
  }

  #replayGap(feed: ReplayFeed, reason: GapReason, from: string | null, to: string, missed?: number): void {
    this.#o.metrics.replayRequests.labels('gap').inc()
    const gap: GapNotice = missed === undefined ? { reason, from, to } : { reason, from, to, missed }
    feed.owe({ kind: 'gap', gap })
  }

  detach(sub: StreamSubscriber): void {
    if (sub.streamIndex === -1) return
    if (this.#fanning) {
      ;(this.#removed ??= []).push(sub)
      return
    }
    this.#remove(sub)
    this.#maybeLinger()
  }

  #remove(sub: StreamSubscriber): void {
    const i = sub.streamIndex
    if (i === -1 || this.#subs[i] !== sub) return
    if (this.#openers.delete(sub)) this.#scheduleRehome()
    const last = this.#subs.pop()!
    if (last !== sub) {
      this.#subs[i] = last
      last.streamIndex = i
    }
    sub.streamIndex = -1
  }

  /** `starting`: not attached yet (see start): even lingerMs 0 waits for the end of the turn. */
  #maybeLinger(starting = false): void {
    if (this.#subs.length > 0 || this.#state === 'done' || this.#linger !== undefined) return
    if (this.#o.lingerMs === 0 && !starting) {
      this.close()
      return
    }
    this.#linger = setTimeout(() => {
      this.#linger = undefined
      if (this.#subs.length === 0) this.close()
    }, this.#o.lingerMs)
    this.#linger.unref()
    this.#o.onIdle?.(this)
  }

  /** End the upstream subscription and forget the stream. */
  close(): void {
    if (this.#state === 'done') return
    this.#state = 'done'
    if (this.#linger !== undefined) clearTimeout(this.#linger)
    this.#openers.clear()
    this.#upstream.listeners.delete(this)
    this.#unsubscribe?.()
    this.#o.metrics.upstreams.dec()
    this.#o.onClosed(this)
  }
}
