// Cache state every worker thread of one process sees at once, in one SharedArrayBuffer:
//  - the invalidation table: tag → sequence number of its last invalidation. An entry
//    remembers the sequence at which its upstream request started; it is dead as soon as one
//    of its tags was invalidated later. A mutation bumps the table before its response ends,
//    so a read that follows it, on any worker, cannot be served the old entry (read-your-writes).
//  - the single-flight table: key fingerprint → lease, so concurrent misses on one key in
//    different workers make one upstream request.
//  - hit/lookup counters per persisted id (the hit-ratio gauge reads them: exact across workers).
//  - a random nonce naming this process's BroadcastChannels (tests run several proxies in one process).
//  - the thread that counts remote invalidations (each worker thread hears every message).
// Tag and key hashing is lossy: a collision invalidates too much or skips coalescing, never
// serves a wrong entry (entries are found by their full key).

const INIT = 0
const NONCE = 1 // two words
const SEQ = 3
const REMOTE_COUNTER = 4 // workerId + 1 of the thread that counts remote invalidations (0: none)
const HEADER = 16
export const TAG_SLOTS = 1 << 16
const FLIGHT_BASE = HEADER + TAG_SLOTS
export const FLIGHT_SLOTS = 1 << 12
const FLIGHT_WORDS = 4 // fingerprint, leaseEnd, doneUntil, owner (leader's workerId + 1)
const STATS_BASE = FLIGHT_BASE + FLIGHT_SLOTS * FLIGHT_WORDS
export const STAT_SLOTS = 1 << 11
const STAT_WORDS = 3 // fingerprint, hits, lookups
const TOTAL_WORDS = STATS_BASE + STAT_SLOTS * STAT_WORDS

export const CACHE_SHARED_BYTES = TOTAL_WORDS * 4

/** FNV-1a over UTF-16 code units; `seed` gives independent hashes of one string. */
export function fnv1a(s: string, seed = 0x811c9dc5): number {
  let h = seed
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** Wall-clock ms as a wrapping int32: comparable across threads with serial arithmetic. */
function now32(): number {
  return Date.now() % 4294967296 | 0
}

/** a is later than b (serial-number arithmetic, valid while they are < 2^31 apart). */
function after(a: number, b: number): boolean {
  return ((a - b) | 0) > 0
}

function live(t: number, now: number): boolean {
  return t !== 0 && after(t, now)
}

function nonZero(x: number): number {
  return x === 0 ? 1 : x
}

export type Claim = 'leader' | 'follower' | 'done' | 'collision'

export class CacheShared {
  readonly i32: Int32Array
  readonly nonce: string
  /** This thread's workerId + 1, recorded in the flight slots it leads (0: unknown). */
  readonly #owner: number

  constructor(sab: SharedArrayBuffer | undefined, workerId = -1) {
    this.#owner = workerId + 1
    // Without a process buffer (a proxy built outside the supervisor), state is per thread.
    const buf = sab !== undefined && sab.byteLength >= CACHE_SHARED_BYTES ? sab : new SharedArrayBuffer(CACHE_SHARED_BYTES)
    this.i32 = new Int32Array(buf, 0, TOTAL_WORDS)
    this.nonce = this.#initNonce()
  }

  #initNonce(): string {
    const a = this.i32
    if (Atomics.compareExchange(a, INIT, 0, 1) === 0) {
      Atomics.store(a, NONCE, (Math.random() * 2 ** 32) | 0)
      Atomics.store(a, NONCE + 1, (Math.random() * 2 ** 32) | 0)
      Atomics.store(a, INIT, 2)
      Atomics.notify(a, INIT)
    } else {
      while (Atomics.load(a, INIT) !== 2) Atomics.wait(a, INIT, 1, 5)
    }
    return `${(Atomics.load(a, NONCE) >>> 0).toString(36)}${(Atomics.load(a, NONCE + 1) >>> 0).toString(36)}`
  }

  // --- invalidation ------------------------------------------------------------------------

  /** The sequence an upstream request starting now records. */
  seq(): number {
    return Atomics.load(this.i32, SEQ)
  }

  tagSlot(tag: string): number {
    return HEADER + (fnv1a(tag) & (TAG_SLOTS - 1))
  }

  /**
   * Slot indices of tags, deduplicated (what an entry keeps). A plain array of small integers:
   * an Int32Array per entry weighs about 230 bytes (its ArrayBuffer and backing store).
   */
  slots(tags: Iterable<string>): readonly number[] {
    const set = new Set<number>()
    for (const t of tags) set.add(this.tagSlot(t))
    return [...set]
  }

  /** Mark tags invalidated now; every entry that started before this and carries one is dead. */
  invalidate(tags: Iterable<string>): number {
    const a = this.i32
    const s = nonZero((Atomics.add(a, SEQ, 1) + 1) | 0)
    for (const t of tags) {
      const slot = this.tagSlot(t)
      for (;;) {
        const cur = Atomics.load(a, slot)
        if (cur !== 0 && !after(s, cur)) break
        if (Atomics.compareExchange(a, slot, cur, s) === cur) break
      }
    }
    return s
  }

  /** No tag of the entry was invalidated after `seq`. */
  valid(slots: ArrayLike<number>, seq: number): boolean {
    const a = this.i32
    for (let i = 0; i < slots.length; i++) {
      const v = Atomics.load(a, slots[i]!)
      if (v !== 0 && after(v, seq)) return false
    }
    return true
  }

  /**
   * This thread counts the invalidations other proxies publish: every worker thread subscribes
   * and applies each message, but the process applied it once. The first thread to hear one
   * after the counting thread exited takes over (releaseWorker frees the claim).
   */
  countsRemote(): boolean {
    const me = this.#owner
    if (me === 0) return true
    const cur = Atomics.load(this.i32, REMOTE_COUNTER)
    return cur === me || (cur === 0 && Atomics.compareExchange(this.i32, REMOTE_COUNTER, 0, me) === 0)
  }

  // --- single flight -----------------------------------------------------------------------

  flightSlot(key: string): { slot: number; fp: number } {
    const h = fnv1a(key)
    return { slot: FLIGHT_BASE + (h & (FLIGHT_SLOTS - 1)) * FLIGHT_WORDS, fp: nonZero(fnv1a(key, 0x9747b28c) | 0) }
  }

  /**
   * leader: fetch it and call finish(). follower: another thread is fetching it. done: another
   * thread just filled it (its broadcast is on the way). collision: another key holds the slot.
   */
  claim(slot: number, fp: number, leaseMs: number, retry = true): Claim {
    const a = this.i32
    const now = now32()
    const cur = Atomics.load(a, slot)
    const lease = Atomics.load(a, slot + 1)
    const done = Atomics.load(a, slot + 2)
    if (cur === fp) {
      if (live(lease, now)) return 'follower'
      if (live(done, now)) return 'done'
    } else if (cur !== 0 && (live(lease, now) || live(done, now))) {
      return 'collision'
    }
    Atomics.store(a, slot + 1, nonZero((now + leaseMs) | 0))
    Atomics.store(a, slot + 2, 0)
    if (Atomics.compareExchange(a, slot, cur, fp) === cur) {
      Atomics.store(a, slot + 3, this.#owner)
      return 'leader'
    }
    return retry ? this.claim(slot, fp, leaseMs, false) : 'collision'
  }

  /** The leader is done: `filled` keeps the slot "done" for graceMs so late misses wait for the broadcast. */
  finish(slot: number, fp: number, filled: boolean, graceMs: number): void {
    const a = this.i32
    if (Atomics.load(a, slot) !== fp) return
    if (filled) {
      Atomics.store(a, slot + 2, nonZero((now32() + graceMs) | 0))
      Atomics.store(a, slot + 1, 0)
    } else {
      Atomics.store(a, slot + 1, 0)
      Atomics.store(a, slot + 2, 0)
      Atomics.compareExchange(a, slot, fp, 0)
    }
  }

  /** The slot is still leased or done for fp: its followers keep waiting for the broadcast. */
  held(slot: number, fp: number): boolean {
    const a = this.i32
    const now = now32()
    return Atomics.load(a, slot) === fp && (live(Atomics.load(a, slot + 1), now) || live(Atomics.load(a, slot + 2), now))
  }

  /**
   * Worker thread `workerId` is gone (crashed, stopped by the watchdog): free the flight slots it
   * led. Its fills will never finish, and until their leases ran out (up to two minutes) every
   * miss on those keys, in every other thread and in its replacement, waited for them.
   */
  releaseWorker(workerId: number): number {
    const a = this.i32
    const now = now32()
    Atomics.compareExchange(a, REMOTE_COUNTER, workerId + 1, 0)
    let n = 0
    for (let slot = FLIGHT_BASE; slot < STATS_BASE; slot += FLIGHT_WORDS) {
      if (Atomics.load(a, slot + 3) !== workerId + 1 || !live(Atomics.load(a, slot + 1), now)) continue
      const fp = Atomics.load(a, slot)
      if (fp === 0 || Atomics.compareExchange(a, slot, fp, 0) !== fp) continue
      Atomics.store(a, slot + 1, 0)
      Atomics.store(a, slot + 2, 0)
      Atomics.store(a, slot + 3, 0)
      n++
    }
    return n
  }

  /** Ms until the slot's lease ends (0 when it has). */
  leaseLeft(slot: number): number {
    const lease = Atomics.load(this.i32, slot + 1)
    const d = (lease - now32()) | 0
    return lease === 0 || d < 0 ? 0 : d
  }

  // --- per persisted-id hit counters ---------------------------------------------------------

  /** A counter slot for a persisted id (linear probing); -1 when the table is full. */
  statSlot(id: string): number {
    const a = this.i32
    const fp = nonZero(fnv1a(id, 0x2545f491) | 0)
    const start = fnv1a(id) & (STAT_SLOTS - 1)
    for (let i = 0; i < 32; i++) {
      const slot = STATS_BASE + ((start + i) & (STAT_SLOTS - 1)) * STAT_WORDS
      const cur = Atomics.load(a, slot)
      if (cur === fp) return slot
      if (cur === 0 && (Atomics.compareExchange(a, slot, 0, fp) === 0 || Atomics.load(a, slot) === fp)) return slot
    }
    return -1
  }

  countLookup(slot: number, hit: boolean): void {
    if (slot < 0) return
    Atomics.add(this.i32, slot + 2, 1)
    if (hit) Atomics.add(this.i32, slot + 1, 1)
  }

  hitRatio(slot: number): number | undefined {
    if (slot < 0) return undefined
    const lookups = Atomics.load(this.i32, slot + 2) >>> 0
    return lookups === 0 ? undefined : (Atomics.load(this.i32, slot + 1) >>> 0) / lookups
  }
}
