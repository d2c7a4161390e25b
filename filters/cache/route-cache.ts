// One route's cache in one worker thread: the byte-bounded LRU of entries, the fills in flight
// (single-flight waiters), and the BroadcastChannel that hands every fill to the other workers
// of the process (their waiters wake, their LRUs get the entry). Lives at module level, keyed
// by route and cache settings, so a config reload that keeps the settings keeps the entries.
import { BroadcastChannel } from 'node:worker_threads'
import { LRUCache } from 'lru-cache'
import type { CacheShared } from './shared-state.ts'

export interface CacheEntry {
  readonly key: string
  readonly status: number
  /** Stored response headers (an allowlist of the upstream's: content-type, cache-control, …). */
  readonly headers: Record<string, string>
  readonly body: Buffer
  /** Date.now() ms: stored, fresh until, served stale (SWR) until, served on error until. */
  readonly created: number
  readonly freshUntil: number
  readonly staleUntil: number
  readonly errorUntil: number
  /**
   * Date.now() ms when stored here (`created` is earlier by the upstream's Age): refresh-ahead's
   * "at most half of the TTL" is half of the life in this cache, not of the response's whole life.
   */
  readonly stored?: number
  /** Invalidation sequence when its upstream request started, and its tags' slots. */
  readonly seq: number
  readonly slots: readonly number[]
  /** Counter slot of its persisted id (-1: none). */
  readonly statSlot: number
  /** Tags by name (L2 needs names; the process-local table needs only slots). */
  readonly tags: readonly string[]
  revalidating: boolean
}

interface FillMessage {
  k: string
  e: Omit<CacheEntry, 'revalidating' | 'body'> & { body: Uint8Array } | undefined
  /** The leader gave up before any response (its client left, a filter after the cache refused it). */
  a?: 1
}

/**
 * What a waiter hears when the leader gave up before it had a response (its client went away,
 * a filter after the cache refused it): nothing is known about the key, so the waiters elect a
 * new leader among themselves instead of all going upstream at once.
 */
export const ABANDONED = 'abandoned'
export type FillOutcome = CacheEntry | undefined | typeof ABANDONED

type Waiter = (e: FillOutcome) => void

interface Flight {
  waiters: Waiter[]
  timer: NodeJS.Timeout | undefined
}

const stores = new Map<string, RouteCache>()
const EMPTY = Buffer.alloc(0)

/**
 * What an entry weighs in the LRU: its body, its key (UTF-16), its tags, its headers and the
 * objects that hold them. The tags count: an entry of many small entities carries a `Type:id`
 * string per entity (and a slot), about 40 bytes each beyond their text (measured), which for
 * small bodies weighs more than the body; left out, the L1 held 1.5–3× `maxBytes`.
 */
function entrySize(e: { body: Buffer; key: string; tags?: readonly string[]; headers?: Record<string, string> }): number {
  let n = e.body.length + e.key.length * 2 + ENTRY_OVERHEAD
  const tags = e.tags
  if (tags !== undefined) for (let i = 0; i < tags.length; i++) n += tags[i]!.length * 2 + TAG_OVERHEAD
  const h = e.headers
  if (h !== undefined) for (const k in h) n += h[k]!.length * 2 + HEADER_OVERHEAD
  return n
}
/**
 * Per entry beyond its body, key, tags and headers (measured, Node 24): the entry object with
 * its boxed timestamps, the Buffer object of its body, its headers, tags and slots arrays, and
 * the LRU's bookkeeping. Counted as 256 (with the key kept as a string tree and an Int32Array
 * per entry), a cache of small entries held about twice its `maxBytes`.
 */
const ENTRY_OVERHEAD = 512
/** Per tag beyond its characters: the string's header, its array slot, its slot number. */
const TAG_OVERHEAD = 44
/** Per stored header beyond its value's characters: the property and the string's header. */
const HEADER_OVERHEAD = 32

export function acquireRouteCache(id: string, maxBytes: number, shared: CacheShared, broadcast: boolean): RouteCache {
  let s = stores.get(id)
  if (s === undefined) {
    s = new RouteCache(id, maxBytes, shared, broadcast)
    stores.set(id, s)
  }
  s.refs++
  return s
}

function onFlightTimeout(f: { store: RouteCache; key: string }): void {
  f.store.settle(f.key, undefined)
}

/** How often a follower of another thread's fill checks that its leader still holds the slot. */
const WATCH_MS = 100

function onFlightWatch(w: { store: RouteCache; key: string; until: number; slot: number; fp: number }): void {
  // Freed before the broadcast came: its thread died (releaseWorker). The waiters elect a new
  // leader rather than wait out a lease nobody will end.
  if (!w.store.shared.held(w.slot, w.fp)) w.store.settle(w.key, ABANDONED)
  else if (performance.now() >= w.until) w.store.settle(w.key, undefined)
}

export class RouteCache {
  readonly id: string
  readonly lru: LRUCache<string, CacheEntry>
  readonly shared: CacheShared
  readonly channel: BroadcastChannel | undefined
  readonly flights = new Map<string, Flight>()
  refs = 0

  constructor(id: string, maxBytes: number, shared: CacheShared, broadcast: boolean) {
    this.id = id
    this.shared = shared
    this.lru = new LRUCache<string, CacheEntry>({ maxSize: Math.max(maxBytes, 1024), sizeCalculation: entrySize })
    if (broadcast) {
      this.channel = new BroadcastChannel(`igw-cache:${shared.nonce}:${id}`)
      this.channel.unref()
      this.channel.onmessage = (ev) => this.#received((ev as unknown as { data: FillMessage }).data)
    }
  }

  /**
   * The largest body an entry under `key` can have and still be kept: the LRU silently drops
   * (and deletes the key's old entry on) a set larger than its whole size.
   */
  bodyBudget(key: string): number {
    return this.lru.maxSize - entrySize({ body: EMPTY, key })
  }

  /** A live entry (fresh or within a stale window), or undefined. Dead ones are dropped. */
  get(key: string, now: number): CacheEntry | undefined {
    const e = this.lru.get(key)
    if (e === undefined) return undefined
    if (now >= e.freshUntil && now >= e.staleUntil && now >= e.errorUntil) {
      this.lru.delete(key)
      return undefined
    }
    if (!this.shared.valid(e.slots, e.seq)) {
      this.lru.delete(key)
      return undefined
    }
    return e
  }

  set(e: CacheEntry): void {
    if (!this.shared.valid(e.slots, e.seq)) return
    // A body that is a view into a larger buffer (the upstream's socket read, with the response
    // head; a pooled slab) would keep all of it alive: kept as an exact copy, what is counted is
    // what is held.
    const b = e.body
    this.lru.set(e.key, b.byteLength === b.buffer.byteLength ? e : { ...e, body: Buffer.from(Uint8Array.prototype.slice.call(b).buffer) })
  }

  /** The entry (body, key and tags) fits in the LRU at all (a larger one would be dropped by set). */
  fits(e: CacheEntry): boolean {
    return entrySize(e) <= this.lru.maxSize
  }

  // --- single flight ----------------------------------------------------------------------

  /** True when this worker already has a fill in flight for key (the caller should wait). */
  inFlight(key: string): boolean {
    return this.flights.has(key)
  }

  /**
   * Register a fill this worker leads, or waits for (another worker leads it: `waitMs` bounds it;
   * `watch`: the process-wide slot it holds, whose release ends the wait early).
   */
  begin(key: string, waitMs?: number, watch?: { slot: number; fp: number }): void {
    const f: Flight = { waiters: [], timer: undefined }
    if (waitMs !== undefined) {
      f.timer = watch === undefined ? setTimeout(onFlightTimeout, waitMs, { store: this, key }) : setInterval(onFlightWatch, WATCH_MS, { store: this, key, until: performance.now() + waitMs, ...watch })
      f.timer.unref()
    }
    this.flights.set(key, f)
  }

  wait(key: string): Promise<FillOutcome> {
    const f = this.flights.get(key)!
    return new Promise<FillOutcome>((resolve) => f.waiters.push(resolve))
  }

  /** The fill for key ended (with an entry, without, or abandoned): wake its waiters. */
  settle(key: string, e: FillOutcome): void {
    const f = this.flights.get(key)
    if (f === undefined) return
    this.flights.delete(key)
    if (f.timer !== undefined) clearTimeout(f.timer)
    for (const w of f.waiters) w(e)
  }

  /** Tell the other workers: here is the entry for key (or: it was not cacheable). */
  publish(key: string, e: FillOutcome): void {
    if (this.channel === undefined) return
    const msg: FillMessage = { k: key, e: undefined }
    if (e === ABANDONED) msg.a = 1
    else if (e !== undefined) {
      // An exact copy: a pooled Buffer would clone its whole 8 KiB slab.
      const { revalidating: _r, body, ...rest } = e
      msg.e = { ...rest, body: Uint8Array.prototype.slice.call(body) }
    }
    this.channel.postMessage(msg)
  }

  #received(msg: FillMessage): void {
    let entry: FillOutcome
    if (msg.a === 1) entry = ABANDONED
    else if (msg.e !== undefined) {
      const b = msg.e.body
      entry = { ...msg.e, body: Buffer.from(b.buffer, b.byteOffset, b.byteLength), revalidating: false }
      this.set(entry)
      if (!this.shared.valid(entry.slots, entry.seq)) entry = undefined
    }
    this.settle(msg.k, entry)
  }

  release(): void {
    if (--this.refs > 0) return
    stores.delete(this.id)
    for (const key of [...this.flights.keys()]) this.settle(key, undefined)
    this.channel?.close()
    this.lru.clear()
  }
}
