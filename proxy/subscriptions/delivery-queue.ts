// One connection's delivery queue and its QoS rules, without sockets: what waits, what is
// dropped when a slow consumer falls behind, and how drops become gap notices. Bronze and
// silver drop the oldest events over their bound (each drop folds into one pending gap notice
// per subscription, written before that subscription's next message); gold never drops and
// reports overflow so the connection can be closed with 1013. Entries a replay read from the log
// go last: the client asked for them by cursor, and the feed only reads them while the queue has
// room, so dropping them for live events made a replay lose what the log still held.
import type { GapNotice, GapReason } from './protocols.ts'
import type { EpochMark, LogEvent } from './replay-ring.ts'

/** What the queue needs of a subscription. */
export interface GapHolder {
  /** Cursor of the last event (or gap) written to the client; before the first, where it started (null: nowhere known). */
  lastCursor: string | null
  /** A gap notice owed to the client, written before its next message. */
  pendingGap: GapNotice | undefined
  /** The client ended it: its queued items are discarded. */
  closed: boolean
  /** Its items in the queue now (kept by the queue): ending it scans the queue only when some are. */
  queued?: number
  /** Of those, the ones a replay read from the log (kept by the queue). */
  replayQueued?: number
}

/** A gap known when it is queued (replay: cursor invalid, log trimmed or expired). */
export interface GapEntry {
  readonly kind: 'gap'
  readonly gap: GapNotice
}
export interface CompleteEntry {
  readonly kind: 'complete'
}
export interface ErrorEntry {
  readonly kind: 'error'
  readonly errors: readonly unknown[]
}
export type QueuedEntry = LogEvent | EpochMark | GapEntry | CompleteEntry | ErrorEntry

export const COMPLETE: CompleteEntry = { kind: 'complete' }

export interface QueueItem<S extends GapHolder> {
  readonly sub: S
  readonly entry: QueuedEntry
  readonly bytes: number
  /** Read from the log by a replay (not a live fan-out). */
  readonly replay?: boolean
}

export interface QueuePolicy {
  /** false for gold: never drop, report overflow instead. */
  readonly drops: boolean
  readonly maxQueue: number
  readonly maxQueueBytes: number
}

const STRENGTH: Record<GapReason, number> = { dropped: 0, trimmed: 1, expired: 2, epoch: 3, invalid: 4 }

function stronger(a: GapReason, b: GapReason): GapReason {
  return STRENGTH[a] >= STRENGTH[b] ? a : b
}

/**
 * Fold a discarded entry into the subscription's pending gap notice. Returns true when an
 * event was lost (what `igw_qos_drops_total` counts).
 */
export function foldIntoGap(sub: GapHolder, entry: LogEvent | EpochMark | GapEntry): boolean {
  const g = sub.pendingGap
  if (entry.kind === 'event') {
    if (g === undefined) sub.pendingGap = { reason: 'dropped', from: sub.lastCursor, to: entry.cursor, missed: 1 }
    else {
      g.to = entry.cursor
      if (g.missed !== undefined) g.missed++
    }
    return true
  }
  const reason = entry.kind === 'epoch' ? 'epoch' : entry.gap.reason
  const to = entry.kind === 'epoch' ? entry.cursor : entry.gap.to
  if (g === undefined) {
    sub.pendingGap = { reason, from: entry.kind === 'gap' ? entry.gap.from : sub.lastCursor, to }
  } else {
    g.reason = stronger(g.reason, reason)
    g.to = to
    delete g.missed
  }
  return false
}

/** An item the queue may drop before replayed ones: freed, or the oldest of a live subscription. */
function shedsFirst(item: QueueItem<GapHolder>): boolean {
  return item.sub.closed || (item.replay !== true && !item.sub.replayQueued)
}

/** A growable circular FIFO. */
export class Fifo<T> {
  #buf: (T | undefined)[] = new Array(16)
  #head = 0
  #size = 0

  get length(): number {
    return this.#size
  }

  push(v: T): void {
    if (this.#size === this.#buf.length) {
      const next = new Array<T | undefined>(this.#buf.length * 2)
      for (let i = 0; i < this.#size; i++) next[i] = this.#buf[(this.#head + i) % this.#buf.length]
      this.#buf = next
      this.#head = 0
    }
    this.#buf[(this.#head + this.#size) % this.#buf.length] = v
    this.#size++
  }

  peek(): T | undefined {
    return this.#size === 0 ? undefined : this.#buf[this.#head]
  }

  shift(): T | undefined {
    if (this.#size === 0) return undefined
    const v = this.#buf[this.#head]
    this.#buf[this.#head] = undefined
    this.#head = (this.#head + 1) % this.#buf.length
    this.#size--
    return v
  }

  /** Take out the first element `match` says to, keeping the others in order. */
  takeFirst(match: (v: T) => boolean): T | undefined {
    const len = this.#buf.length
    for (let i = 0; i < this.#size; i++) {
      const v = this.#buf[(this.#head + i) % len] as T
      if (!match(v)) continue
      // Move the ones before it up one slot: the head advances.
      for (let j = i; j > 0; j--) this.#buf[(this.#head + j) % len] = this.#buf[(this.#head + j - 1) % len]
      this.#buf[this.#head] = undefined
      this.#head = (this.#head + 1) % len
      this.#size--
      return v
    }
    return undefined
  }

  /** Take out every element `drop` says to, keeping the others in order; calls `dropped` for each taken. */
  removeIf(drop: (v: T) => boolean, dropped: (v: T) => void): void {
    // Rotate once through the ring: every element is shifted and pushed back unless dropped (no growth).
    for (let n = this.#size; n > 0; n--) {
      const v = this.shift() as T
      if (drop(v)) dropped(v)
      else this.push(v)
    }
  }
}

export type PushOutcome = 'queued' | 'overflow'

export class DeliveryQueue<S extends GapHolder> {
  readonly policy: QueuePolicy
  readonly #items = new Fifo<QueueItem<S>>()
  /** Subscriptions owed a gap notice, written before anything else. */
  readonly gapOwed = new Set<S>()
  /** Terminal messages (complete, error) that outlived a drop of everything before them. */
  readonly urgent: QueueItem<S>[] = []
  bytes = 0
  events = 0
  /** Events dropped since creation. */
  dropped = 0

  constructor(policy: QueuePolicy) {
    this.policy = policy
  }

  get length(): number {
    return this.#items.length
  }

  get empty(): boolean {
    return this.#items.length === 0 && this.gapOwed.size === 0 && this.urgent.length === 0
  }

  peek(): QueueItem<S> | undefined {
    return this.#items.peek()
  }

  /**
   * Queue an item; bronze/silver drop the oldest over the bounds, gold reports overflow. The
   * bounds are on buffering, not on message size (the route's websocket.maxMessageBytes is): one
   * item alone always stays. An event over maxQueueBytes that met a throttled or congested socket
   * with nothing queued was dropped at once (a `dropped` gap, for a replay too, for a client that
   * reads) or closed a gold connection with 1013, and its replay after the reconnect could again.
   */
  push(item: QueueItem<S>): PushOutcome {
    this.#items.push(item)
    item.sub.queued = (item.sub.queued ?? 0) + 1
    if (item.replay === true) item.sub.replayQueued = (item.sub.replayQueued ?? 0) + 1
    this.bytes += item.bytes
    if (item.entry.kind === 'event') this.events++
    if (!this.policy.drops) return this.bytes > this.policy.maxQueueBytes && this.#items.length > 1 ? 'overflow' : 'queued'
    while ((this.events > this.policy.maxQueue || this.bytes > this.policy.maxQueueBytes) && this.#items.length > 1 && this.dropOldest()) {}
    return 'queued'
  }

  shift(): QueueItem<S> | undefined {
    const item = this.#items.shift()
    if (item !== undefined) this.#left(item)
    return item
  }

  #left(item: QueueItem<S>): void {
    item.sub.queued = (item.sub.queued ?? 1) - 1
    if (item.replay === true) item.sub.replayQueued = (item.sub.replayQueued ?? 1) - 1
    this.bytes -= item.bytes
    if (item.entry.kind === 'event') this.events--
  }

  /**
   * The client ended `sub`: what it still had waiting goes now. Left in place until the pump
   * reached it, it counted against the bounds (a gold connection closed with 1013, live
   * subscriptions' events dropped for bronze/silver) and the worker's memory budget, while the
   * socket was congested, for messages nobody would ever be sent.
   */
  purge(sub: S): void {
    this.gapOwed.delete(sub)
    if (this.urgent.length > 0) {
      const keep = this.urgent.filter((item) => item.sub !== sub)
      this.urgent.length = 0
      this.urgent.push(...keep)
    }
    if (this.#items.length === 0 || !sub.queued) return
    this.#items.removeIf(
      (item) => item.sub === sub,
      (item) => {
        this.bytes -= item.bytes
        if (item.entry.kind === 'event') this.events--
      },
    )
    sub.queued = 0
    sub.replayQueued = 0
  }

  /**
   * Discard the oldest item: an event becomes (part of) a gap notice for its subscription, so
   * does an epoch mark or a replay gap (its reason and position live on in that notice), a
   * terminal message moves to `urgent`, an item of an ended subscription is just freed. One item
   * at a time: the caller re-checks its bound after each (taking out a large epoch mark or gap
   * may be enough, and the event behind it must not go as well). Returns false when nothing is
   * left to drop.
   *
   * A replay's entries go last: the oldest live item goes first, of a subscription with no replay
   * entries queued (a gap notice is written before the subscription's queued items, so it must be
   * its oldest). Only when there is none do replayed entries go, oldest first.
   */
  dropOldest(): boolean {
    const head = this.#items.peek()
    if (head === undefined) return false
    let item = head.replay === true && !head.sub.closed ? this.#items.takeFirst(shedsFirst) : undefined
    if (item !== undefined) this.#left(item)
    else item = this.shift()!
    const { sub, entry } = item
    if (sub.closed) return true
    if (entry.kind === 'complete' || entry.kind === 'error') {
      // It leaves the bounded queue without being dropped: written first at the next pump.
      this.urgent.push(item)
      return true
    }
    if (foldIntoGap(sub, entry)) this.dropped++
    this.gapOwed.add(sub)
    return true
  }
}
