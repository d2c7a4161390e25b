// The quota state every worker thread of a process shares: one SharedArrayBuffer (allocated once
// by the supervisor, `quotaFilter.sharedBytes`) laid out as a fixed header, a hash table of
// tenants (open addressing, bounded), and a pool of rolling-budget rings.
//
//   header   Int32 × 64: init flag, locks, process in-flight, live proxies, job leases …
//            Float64 × 32: epoch
//   slots    TENANT_CAPACITY × (Int32 × 24 | Float64 × 40 | key bytes × 128)
//            per kind (4): lock, concurrent count, mode | tokens, last refill, day, used, …
//   rings    RING_CAPACITY × (Int32 lock | Int32 holder | Float64 × RING_F64)
//   ledgers  WORKER_LEDGERS × Int32 × (1 + TENANT_CAPACITY × KINDS): what each worker thread holds
//            of the in-flight count and of every concurrency count (see releaseWorker)
//
// Slot 0 and ring 0 are the overflow: tenants that find the table full (or whose id cannot be
// stored) share them, so they are limited together rather than not at all.
//
// Slots of unlisted tenants are reclaimed when the table is full (see #reclaimSlot). A slot number
// held outside this file (a thread's caches, work continuing after a Redis call) goes with the
// slot's generation (S_GEN) as it was then: a holder touches the slot (S_TOUCH) and then checks the
// generation before using it, and a slot touched in the last SLOT_IDLE_S is never reclaimed.
import { localDayNumber, zoneOfCode } from '../../config/quota-usage.ts'
import { lock, unlock } from './shared-mutex.ts'
import { R_BUCKETS, R_BUCKET_MS, R_HEAD, RING_F64, RING_HEADER } from './rolling-budget.ts'

export const KINDS = 4
export const TENANT_CAPACITY = 4096
/** Inserts stop at this fill so probe sequences stay short. */
const MAX_FILL = Math.floor(TENANT_CAPACITY * 0.9)
/**
 * Tenants not listed in the config (`allowUnlisted`) stop at this fill: a client inventing
 * tenant ids must not be able to push a listed tenant into the shared overflow slot.
 */
const UNLISTED_FILL = Math.floor(TENANT_CAPACITY * 0.75)
export const RING_CAPACITY = 1024
/** Rings tenants not listed in the config may take (as UNLISTED_FILL for slots). */
const UNLISTED_RINGS = Math.floor(RING_CAPACITY * 0.75)
export const KEY_BYTES = 128
export const OVERFLOW_SLOT = 0
export const OVERFLOW_RING = 0
/** The table key of requests without a tenant (a tenant of its own, never unlisted). */
export const ANONYMOUS = '_anonymous'

// Header Int32 words.
export const H_INIT = 0 // 0 fresh, 1 being initialized, 2 ready
export const H_TABLE_LOCK = 1
export const H_INFLIGHT = 2
export const H_LIVE_PROXIES = 3
// Int32 words 4-6 (they held the periodic jobs' period counts, see HB_*): the state file's writes
// across the worker threads: the number of the newest write started, the newest one on disk, and
// the lock that makes "is a newer one on disk? else rename" one step (state-file.ts).
export const H_STATE_SEQ = 4
export const H_STATE_LANDED = 5
export const H_STATE_LOCK = 6
export const H_RING_NEXT = 7
export const H_SLOTS_USED = 8
export const H_OVERFLOWS = 9
/** Rings held by tenants that were unlisted when they took them (at most UNLISTED_RINGS). */
export const H_RINGS_UNLISTED = 10
/** Where the next search for a slot to reclaim starts (see #reclaimSlot). */
export const H_SLOT_CURSOR = 11
const HEADER_I32 = 64
const HEADER_F64 = 32
// Header BigInt64 words (BigInt64Array indices; Int32 words 12-17): the start, in ms since the
// Unix epoch, of the last period each periodic job ran for. A period count would not do: a config
// reload that lengthens the period restarts the count lower, and the job would wait until the new
// count passed the old one (hours) before running again.
export const HB_FLUSH_AT = 6
export const HB_ANOMALY_AT = 7
export const HB_HEARTBEAT_AT = 8
// Header Float64 words: Float64Array indices, after the Int32 words.
export const HF_EPOCH = (HEADER_I32 * 4) / 8 + 0
/**
 * Until when (ms) the ring pool is not searched again for a ring to reclaim, for unlisted tenants
 * and (+ 1) for listed ones: the last search found none.
 */
export const HF_RING_SCAN_AT = HF_EPOCH + 1
/** Until when (ms) the table is not searched again for a slot to reclaim (the last search found none). */
export const HF_SLOT_SCAN_AT = HF_EPOCH + 3
/** How long a fruitless search of the ring pool holds off the next (a flood of new ids scans once). */
const RING_SCAN_PAUSE_MS = 1_000
/**
 * A slot used this recently (s) is never reclaimed: longer than any use of a slot number after
 * its generation was checked (a Redis call's budget is at most 1 s).
 */
export const SLOT_IDLE_S = 60

// Slot Int32 words.
export const S_STATE = 0
export const S_KEYLEN = 1
export const S_RING = 2 // ring index + 1; 0 = none yet
export const S_REQUESTS = 3 // requests since the last anomaly interval
export const S_TENANT_LOCK = 4
export const S_GEN = 5 // bumped when the slot is reclaimed (or nearly: a reclaim that backed off)
export const S_TOUCH = 6 // clockSec of the slot's last use
export const S_FULL_AT = 7 // clockSec when all the slot's buckets are full again (raiseFullAt)
export const S_KIND_LOCK = 8 // + kind
export const S_CONCURRENT = 12 // + kind
export const S_MODE = 16 // + kind: 0 = Redis (or local-only), 1 = deciding locally during an outage
/**
 * + kind: the zoneCode of the time zone the kind's K_DAY is counted in (0: not known — a fresh
 * slot, or restored from an older file).
 */
export const S_ZONE = 20
const SLOT_I32 = 24

// Slot Float64 words: per kind at kind × K_STRIDE …
export const K_TOKENS = 0 // micro-units
export const K_LAST = 1 // ms of the last refill
export const K_DAY = 2 // local day number of `used`
export const K_USED = 3 // cost units used that day
export const K_BASE = 4 // `used` as Redis last reported it (outage arithmetic)
export const K_PENDING = 5 // units admitted locally during an outage, not yet in Redis
// Outage units of an earlier day (the outage spanned the tenant's midnight), not yet in Redis, and
// that day: they belong to it (and to the budget), not to the day that began.
export const K_PREV_PENDING = 6
export const K_PREV_DAY = 7
const K_STRIDE = 8
// … and per tenant at T_*.
export const T_BUDGET_MIRROR = 32 // the budget total Redis last reported
export const T_BUDGET_LOCAL = 33 // units admitted locally since then (during an outage)
export const T_ANOMALY = 34 // 5 fields: mean, variance, n, alerting, quiet
const SLOT_F64 = 40

const HEADER_BYTES = HEADER_I32 * 4 + HEADER_F64 * 8
const SLOT_I32_BASE = HEADER_BYTES
const SLOT_F64_BASE = SLOT_I32_BASE + TENANT_CAPACITY * SLOT_I32 * 4
const KEYS_BASE = SLOT_F64_BASE + TENANT_CAPACITY * SLOT_F64 * 8
const RING_LOCK_BASE = KEYS_BASE + TENANT_CAPACITY * KEY_BYTES
/** Per ring: its holder, slot + 1 (negative: taken by an unlisted tenant); 0 = free. */
const RING_HOLDER_BASE = RING_LOCK_BASE + RING_CAPACITY * 4
const RING_BASE = RING_HOLDER_BASE + RING_CAPACITY * 4

const LEDGER_BASE = RING_BASE + RING_CAPACITY * RING_F64 * 8

/**
 * Worker threads with a ledger of their own: one per worker id (config `workers` is at most 256).
 * A thread counts what it takes of the shared in-flight and concurrency counts in its ledger too,
 * so that when it dies without running its cleanups (uncaught exception, heap limit, watchdog)
 * the supervisor can give its share back: those counts are otherwise held until the process
 * restarts (a tenant refused for maxConcurrent forever, QoS shedding on load that is gone).
 * Pages of a ledger no thread touches are never backed by memory (the buffer is zero-allocated).
 */
export const WORKER_LEDGERS = 256
const LEDGER_I32 = 1 + TENANT_CAPACITY * KINDS
/** Ledger word 0: the thread's share of H_INFLIGHT; word 1 + slot × KINDS + kind: of S_CONCURRENT. */
const L_INFLIGHT = 0

export const QUOTA_SHARED_BYTES = LEDGER_BASE + WORKER_LEDGERS * LEDGER_I32 * 4

export class QuotaTable {
  readonly buffer: SharedArrayBuffer
  readonly i32: Int32Array
  readonly f64: Float64Array
  readonly i64: BigInt64Array
  readonly #u8: Uint8Array
  /**
   * This thread's tenant → slot cache (the shared table is only locked on a miss): the slot plus
   * TENANT_CAPACITY × its generation when it was found.
   */
  readonly #slots = new Map<string, number>()
  /**
   * Is this tenant id listed in the config in force (see listedBy)? A ring held by a tenant that
   * is not — removed by a reload, or never listed — may go to a listed one.
   */
  #isListed: (tenant: string) => boolean = () => true
  /** zoneCode → its current day number, during one search for a slot to reclaim. */
  readonly #todays = new Map<number, number>()

  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength < QUOTA_SHARED_BYTES) throw new Error(`quota shared memory is ${buffer.byteLength} bytes, needs ${QUOTA_SHARED_BYTES}`)
    this.buffer = buffer
    this.i32 = new Int32Array(buffer)
    this.f64 = new Float64Array(buffer)
    this.i64 = new BigInt64Array(buffer, 0, HEADER_I32 / 2)
    this.#u8 = new Uint8Array(buffer)
  }

  // --- addressing ---------------------------------------------------------------------------

  /** Int32 index of a slot word. */
  si(slot: number, word: number): number {
    return (SLOT_I32_BASE >> 2) + slot * SLOT_I32 + word
  }

  /** Float64 index of a slot's per-kind field. */
  kf(slot: number, kind: number, field: number): number {
    return (SLOT_F64_BASE >> 3) + slot * SLOT_F64 + kind * K_STRIDE + field
  }

  /** Float64 index of a slot's per-tenant field. */
  tf(slot: number, field: number): number {
    return (SLOT_F64_BASE >> 3) + slot * SLOT_F64 + field
  }

  /** Float64 index of a ring's first word. */
  ringBase(ring: number): number {
    return (RING_BASE >> 3) + ring * RING_F64
  }

  ringLockIndex(ring: number): number {
    return (RING_LOCK_BASE >> 2) + ring
  }

  lockKind(slot: number, kind: number): void {
    lock(this.i32, this.si(slot, S_KIND_LOCK + kind))
  }

  unlockKind(slot: number, kind: number): void {
    unlock(this.i32, this.si(slot, S_KIND_LOCK + kind))
  }

  lockTenant(slot: number): void {
    lock(this.i32, this.si(slot, S_TENANT_LOCK))
  }

  unlockTenant(slot: number): void {
    unlock(this.i32, this.si(slot, S_TENANT_LOCK))
  }

  lockRing(ring: number): void {
    lock(this.i32, this.ringLockIndex(ring))
  }

  unlockRing(ring: number): void {
    unlock(this.i32, this.ringLockIndex(ring))
  }

  // --- per-worker ledgers (in-flight and concurrency held by each thread) ----------------------

  /** Int32 index of a worker's ledger word for the in-flight count. */
  inflightLedger(worker: number): number {
    return (LEDGER_BASE >> 2) + ledgerOf(worker) * LEDGER_I32 + L_INFLIGHT
  }

  /** Int32 index of a worker's ledger word for (slot, kind)'s concurrency count. */
  concurrentLedger(worker: number, slot: number, kind: number): number {
    return (LEDGER_BASE >> 2) + ledgerOf(worker) * LEDGER_I32 + 1 + slot * KINDS + kind
  }

  /**
   * Give back everything a worker thread that is gone still held (called once its thread has
   * exited, before a new thread takes its id): its share of the in-flight count and of every
   * tenant's concurrency counts. Returns the number of slots and in-flight requests released.
   */
  releaseWorker(worker: number): number {
    if (!(worker >= 0 && worker < WORKER_LEDGERS)) return 0
    const i32 = this.i32
    const base = (LEDGER_BASE >> 2) + worker * LEDGER_I32
    let released = 0
    const held = Atomics.exchange(i32, base + L_INFLIGHT, 0)
    if (held > 0) released += subAtMost(i32, H_INFLIGHT, held)
    for (let slot = 0; slot < TENANT_CAPACITY; slot++) {
      for (let k = 0; k < KINDS; k++) {
        const at = base + 1 + slot * KINDS + k
        if (i32[at] === 0) continue
        const n = Atomics.exchange(i32, at, 0)
        if (n > 0) released += subAtMost(i32, this.si(slot, S_CONCURRENT + k), n)
      }
    }
    return released
  }

  // --- the tenant hash table -----------------------------------------------------------------

  /**
   * The slot of a tenant, inserting it on first sight; OVERFLOW_SLOT when it cannot have one.
   * `listed`: a tenant of the config (it may use the table up to MAX_FILL; others UNLISTED_FILL).
   * The slot is touched: read genOf now to keep the number (see holdSlot).
   */
  slotOf(tenant: string, listed = true): number {
    const cached = this.#slots.get(tenant)
    if (cached !== undefined) {
      const slot = cached % TENANT_CAPACITY
      if (this.holdSlot(slot, (cached - slot) / TENANT_CAPACITY, clockSec(Date.now()))) return slot
    }
    const slot = this.#findOrInsert(tenant, listed ? MAX_FILL : UNLISTED_FILL)
    // The overflow is not remembered: the same id, listed by a later config, may get a slot.
    if (slot === OVERFLOW_SLOT) return slot
    if (this.#slots.size >= TENANT_CAPACITY * 2) this.#slots.clear() // bound the cache (ids of an unlisted flood)
    this.#slots.set(tenant, slot + TENANT_CAPACITY * this.genOf(slot))
    return slot
  }

  /** The slot's generation: it changes when the slot is reclaimed (compare it in holdSlot). */
  genOf(slot: number): number {
    return Atomics.load(this.i32, this.si(slot, S_GEN))
  }

  /**
   * Mark the slot used at `sec` (clockSec), then: is it still the one of generation `gen`? When
   * true it stays so for SLOT_IDLE_S (no reclaim takes a slot used since). The order matters: a
   * reclaim bumps the generation before it looks at the last use (see #reclaimSlot).
   */
  holdSlot(slot: number, gen: number, sec: number): boolean {
    const touch = this.si(slot, S_TOUCH)
    // Already this second (read atomically: as good as a store for the order above), not written
    // again: every request of a busy tenant would write the slot's cache line.
    if (Atomics.load(this.i32, touch) !== sec) Atomics.store(this.i32, touch, sec)
    return Atomics.load(this.i32, this.si(slot, S_GEN)) === gen
  }

  /** Every bucket of the slot is full again by `ms` at the latest (called on each decision). */
  raiseFullAt(slot: number, ms: number): void {
    const i = this.si(slot, S_FULL_AT)
    const sec = Math.min(0x7fffffff, clockSec(ms) + 1)
    let cur = Atomics.load(this.i32, i)
    while (sec > cur) {
      const seen = Atomics.compareExchange(this.i32, i, cur, sec)
      if (seen === cur) return
      cur = seen
    }
  }

  /** The slot of a tenant already in the table, or -1 (never inserts: for gauges). */
  peekSlot(tenant: string): number {
    const cached = this.#slots.get(tenant)
    if (cached !== undefined) {
      const slot = cached % TENANT_CAPACITY
      if (this.genOf(slot) === (cached - slot) / TENANT_CAPACITY) return slot
    }
    const len = tenant.length
    if (len === 0 || len > KEY_BYTES) return -1
    const start = (fnv1a(tenant) % (TENANT_CAPACITY - 1)) + 1
    for (let n = 0, s = start; n < TENANT_CAPACITY - 1; n++, s = next(s)) {
      const state = Atomics.load(this.i32, this.si(s, S_STATE))
      if (state === 0) return -1
      if (state === 1 && this.#keyEquals(s, tenant)) return s
    }
    return -1
  }

  /** Can this id have a slot of its own (ASCII, 1–128 characters)? */
  storable(tenant: string): boolean {
    const len = tenant.length
    if (len === 0 || len > KEY_BYTES) return false
    for (let i = 0; i < len; i++) {
      const c = tenant.charCodeAt(i)
      if (c < 0x20 || c > 0x7e) return false
    }
    return true
  }

  /**
   * Open addressing with removal markers: a lookup goes on past reclaimed slots (state 2) up to
   * the first empty one; an insert takes the first reclaimed slot it passed, else that empty one.
   */
  #findOrInsert(tenant: string, maxFill: number): number {
    if (!this.storable(tenant)) return this.#overflow()
    const len = tenant.length
    const start = (fnv1a(tenant) % (TENANT_CAPACITY - 1)) + 1
    const i32 = this.i32
    lock(i32, H_TABLE_LOCK)
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        let free = -1
        for (let n = 0, s = start; n < TENANT_CAPACITY - 1; n++, s = next(s)) {
          const state = Atomics.load(i32, this.si(s, S_STATE))
          if (state === 1) {
            if (this.#keyEquals(s, tenant)) {
              Atomics.store(i32, this.si(s, S_TOUCH), clockSec(Date.now()))
              return s
            }
            continue
          }
          if (free === -1) free = s
          if (state === 0) break
        }
        if (free === -1) break
        // Full: a slot reclaimed may have changed the probe sequence (a marker made empty), so probe again.
        if (Atomics.load(i32, H_SLOTS_USED) >= maxFill) {
          if (attempt === 0 && this.#reclaimSlot(Date.now())) continue
          break
        }
        const kb = KEYS_BASE + free * KEY_BYTES
        for (let i = 0; i < len; i++) this.#u8[kb + i] = tenant.charCodeAt(i)
        i32[this.si(free, S_KEYLEN)] = len
        Atomics.store(i32, this.si(free, S_TOUCH), clockSec(Date.now()))
        Atomics.add(i32, H_SLOTS_USED, 1)
        Atomics.store(i32, this.si(free, S_STATE), 1)
        return free
      }
    } finally {
      unlock(i32, H_TABLE_LOCK)
    }
    return this.#overflow()
  }

  /**
   * Reclaim one slot of a tenant the config does not list, under the table lock (an insert found
   * the table full): one whose tenant is gone, so nothing of it counts any more — not used for
   * SLOT_IDLE_S, its buckets full, no concurrency slot held (nor in any thread's ledger), nothing
   * owed to Redis, no usage in a day that is not over (readmitted the same day, it must not start
   * from zero), no budget ring with units still in its window. Such a tenant that comes back
   * starts as it would have. A search that finds none holds off the next for RING_SCAN_PAUSE_MS.
   */
  #reclaimSlot(now: number): boolean {
    const i32 = this.i32
    const f = this.f64
    if (now < f[HF_SLOT_SCAN_AT]!) return false
    const sec = clockSec(now)
    this.#todays.clear()
    const cursor = Atomics.load(i32, H_SLOT_CURSOR)
    for (let n = 0, s = cursor >= 1 && cursor < TENANT_CAPACITY ? cursor : 1; n < TENANT_CAPACITY - 1; n++, s = next(s)) {
      if (Atomics.load(i32, this.si(s, S_STATE)) !== 1 || !this.#idle(s, sec, now)) continue
      if (this.#isListed(this.keyOf(s))) continue
      // A thread may have checked the generation and not yet touched the slot: bumped first, the
      // touch looked at after, either that thread sees the new generation (and looks the tenant
      // up again, here, behind the table lock) or this sees its touch.
      Atomics.add(i32, this.si(s, S_GEN), 1)
      if (!this.#idle(s, sec, now)) continue
      // In the order decideLocal takes them (kinds, then the tenant).
      for (let k = 0; k < KINDS; k++) this.lockKind(s, k)
      this.lockTenant(s)
      try {
        if (!this.#idle(s, sec, now) || !this.#releaseRing(s, now)) continue
        i32.fill(0, this.si(s, S_KEYLEN), this.si(s, S_TENANT_LOCK))
        i32.fill(0, this.si(s, S_TOUCH), this.si(s, S_KIND_LOCK))
        i32.fill(0, this.si(s, S_CONCURRENT), this.si(s, SLOT_I32))
        f.fill(0, this.tf(s, 0), this.tf(s, SLOT_F64))
        this.#u8.fill(0, KEYS_BASE + s * KEY_BYTES, KEYS_BASE + (s + 1) * KEY_BYTES)
        Atomics.store(i32, this.si(s, S_STATE), 2)
        Atomics.sub(i32, H_SLOTS_USED, 1)
        // Followed by an empty slot, no key is found past it: it (and markers before it) can be empty.
        if (Atomics.load(i32, this.si(next(s), S_STATE)) === 0) {
          for (let b = s; Atomics.load(i32, this.si(b, S_STATE)) === 2; b = b === 1 ? TENANT_CAPACITY - 1 : b - 1) Atomics.store(i32, this.si(b, S_STATE), 0)
        }
        Atomics.store(i32, H_SLOT_CURSOR, next(s))
        return true
      } finally {
        this.unlockTenant(s)
        for (let k = KINDS - 1; k >= 0; k--) this.unlockKind(s, k)
      }
    }
    f[HF_SLOT_SCAN_AT] = now + RING_SCAN_PAUSE_MS
    return false
  }

  /**
   * Is nothing of the slot in use or still counting (see #reclaimSlot)? Read without its locks, a
   * hint; checked again under them. The budget ring is #releaseRing's.
   */
  #idle(s: number, sec: number, now: number): boolean {
    const i32 = this.i32
    const f = this.f64
    if (sec - Atomics.load(i32, this.si(s, S_TOUCH)) < SLOT_IDLE_S || Atomics.load(i32, this.si(s, S_FULL_AT)) > sec) return false
    for (let k = 0; k < KINDS; k++) {
      if (Atomics.load(i32, this.si(s, S_CONCURRENT + k)) !== 0) return false
      const b = this.kf(s, k, 0)
      if (f[b + K_PENDING] !== 0 || f[b + K_PREV_PENDING] !== 0) return false
      if (f[b + K_USED] !== 0 && f[b + K_DAY]! >= this.#today(i32[this.si(s, S_ZONE + k)]!, now)) return false
    }
    const plus1 = Atomics.load(i32, this.si(s, S_RING))
    if (plus1 > OVERFLOW_RING + 1) {
      const o = this.ringBase(plus1 - 1)
      const head = f[o + R_HEAD]!
      if (head !== 0 && Math.floor(now / f[o + R_BUCKET_MS]!) <= head + f[o + R_BUCKETS]!) return false
    }
    for (let k = 0; k < KINDS; k++) {
      for (let w = 0; w < WORKER_LEDGERS; w++) if (Atomics.load(i32, this.concurrentLedger(w, s, k)) !== 0) return false
    }
    return true
  }

  /**
   * The first day number that is not over yet in a zone (a zoneCode) at `now` (cached for one
   * search). A zone this thread does not know: the day before yesterday in UTC is over everywhere.
   */
  #today(code: number, now: number): number {
    let day = this.#todays.get(code)
    if (day === undefined) {
      const zone = zoneOfCode(code)
      day = zone !== undefined ? localDayNumber(zone, now) : Math.floor(now / 86_400_000) - 1
      this.#todays.set(code, day)
    }
    return day
  }

  /** Give back the slot's budget ring if nothing in it counts (under the table lock); false if something does. */
  #releaseRing(s: number, now: number): boolean {
    const plus1 = Atomics.load(this.i32, this.si(s, S_RING))
    if (plus1 <= OVERFLOW_RING + 1) return true
    const ring = plus1 - 1
    if (!this.holds(s, ring)) return true
    // A ring never used (head 0: taken, then the decisions went to Redis) holds nothing.
    return this.#free(ring, now, this.f64[this.ringBase(ring) + R_HEAD] === 0)
  }

  #overflow(): number {
    Atomics.add(this.i32, H_OVERFLOWS, 1)
    return OVERFLOW_SLOT
  }

  #keyEquals(slot: number, tenant: string): boolean {
    if (this.i32[this.si(slot, S_KEYLEN)] !== tenant.length) return false
    const kb = KEYS_BASE + slot * KEY_BYTES
    for (let i = 0; i < tenant.length; i++) if (this.#u8[kb + i] !== tenant.charCodeAt(i)) return false
    return true
  }

  /** The tenant id stored in a slot ('' for the overflow slot). */
  keyOf(slot: number): string {
    if (slot === OVERFLOW_SLOT) return ''
    const len = this.i32[this.si(slot, S_KEYLEN)]!
    const kb = KEYS_BASE + slot * KEY_BYTES
    return String.fromCharCode(...this.#u8.subarray(kb, kb + len))
  }

  /** Every occupied slot (for the state file, gauges and the anomaly pass). */
  forEachSlot(fn: (slot: number, tenant: string) => void): void {
    for (let s = 1; s < TENANT_CAPACITY; s++) {
      if (Atomics.load(this.i32, this.si(s, S_STATE)) !== 1) continue
      // The key as it was in one generation (a reclaim and a new tenant may be writing it).
      const gen = this.genOf(s)
      const key = this.keyOf(s)
      if (this.genOf(s) === gen && Atomics.load(this.i32, this.si(s, S_STATE)) === 1) fn(s, key)
    }
  }

  /**
   * The budget ring of a slot, allocated on first use; OVERFLOW_RING when none can be had.
   * Unlisted tenants (`listed` false; undefined: asked of isListed) may hold only UNLISTED_RINGS
   * of them, or a client inventing ids put every listed tenant seen later into the overflow ring,
   * whose budget all of them then shared (a hard cap refused them for strangers' usage).
   * Once the pool has been handed out, rings are reclaimed (see #reclaim): a tenant churn no
   * longer fills it for good. A tenant in the overflow ring tries again at most once a search pause.
   * The ring may be reclaimed as soon as this returns: use it through lockRingOf/heldRing.
   */
  ringOf(slot: number, listed?: boolean): number {
    const idx = this.si(slot, S_RING)
    const have = Atomics.load(this.i32, idx)
    if (have !== 0 && (have !== OVERFLOW_RING + 1 || slot === OVERFLOW_SLOT)) return have - 1
    const unlisted = !(listed ?? this.#isListed(this.keyOf(slot)))
    if (have !== 0 && Date.now() < this.f64[HF_RING_SCAN_AT + (unlisted ? 0 : 1)]!) return OVERFLOW_RING
    lock(this.i32, H_TABLE_LOCK)
    try {
      const again = Atomics.load(this.i32, idx)
      if (again !== 0 && again !== OVERFLOW_RING + 1) return again - 1
      let ring = OVERFLOW_RING
      if (slot !== OVERFLOW_SLOT) {
        const room = !unlisted || Atomics.load(this.i32, H_RINGS_UNLISTED) < UNLISTED_RINGS
        const next = Atomics.load(this.i32, H_RING_NEXT) + 1 // ring 0 is the overflow ring
        if (room && next < RING_CAPACITY) {
          Atomics.store(this.i32, H_RING_NEXT, next)
          ring = next
        } else ring = this.#reclaim(unlisted, room)
        if (ring !== OVERFLOW_RING) {
          Atomics.store(this.i32, this.#holderIndex(ring), unlisted ? -(slot + 1) : slot + 1)
          if (unlisted) Atomics.add(this.i32, H_RINGS_UNLISTED, 1)
        } else if (again === 0) Atomics.add(this.i32, H_OVERFLOWS, 1) // counted once per tenant
      }
      Atomics.store(this.i32, idx, ring + 1)
      return ring
    } finally {
      unlock(this.i32, H_TABLE_LOCK)
    }
  }

  /**
   * The config in force lists these tenants (the runtime, at start and on each reload). What can
   * be reclaimed (rings, slots) changed: a search that found nothing under the previous config is not waited out.
   */
  listedBy(isListed: (tenant: string) => boolean): void {
    this.#isListed = isListed
    this.f64[HF_RING_SCAN_AT] = 0
    this.f64[HF_RING_SCAN_AT + 1] = 0
    this.f64[HF_SLOT_SCAN_AT] = 0
  }

  #holderIndex(ring: number): number {
    return (RING_HOLDER_BASE >> 2) + ring
  }

  /**
   * A ring to reuse (under the table lock; OVERFLOW_RING: none). First one whose window has
   * passed in full since its last use: nothing in it counts any more, so it is taken from any
   * tenant. Failing that, for a listed tenant, the least recently used ring (a never used one
   * first) of a tenant not listed now (removed by a reload, or unlisted). A never used ring is
   * otherwise kept: it was just taken for a decision, or given to a listed tenant at start. An
   * unlisted tenant without `room` takes only another unlisted tenant's (the unlisted count stays
   * within UNLISTED_RINGS).
   * Its holder's slot is told (S_RING 0: it takes a ring again at its next request).
   */
  #reclaim(unlisted: boolean, room: boolean): number {
    const now = Date.now()
    const i32 = this.i32
    const f = this.f64
    const gate = HF_RING_SCAN_AT + (unlisted ? 0 : 1)
    if (now < f[gate]!) return OVERFLOW_RING
    let victim = OVERFLOW_RING
    let victimHead = Number.POSITIVE_INFINITY
    // Only rings handed out so far: the others are still the bump allocator's.
    const last = Atomics.load(i32, H_RING_NEXT)
    for (let ring = 1; ring <= last; ring++) {
      const holder = Atomics.load(i32, this.#holderIndex(ring))
      if (unlisted && !room && holder >= 0) continue
      const o = this.ringBase(ring)
      const head = f[o + R_HEAD]!
      // Read without the ring's lock: a hint, checked again under it.
      if (head !== 0 && Math.floor(now / f[o + R_BUCKET_MS]!) > head + f[o + R_BUCKETS]!) {
        if (this.#free(ring, now, false)) return ring
      } else if (!unlisted && head < victimHead && holder !== 0 && !this.#isListed(this.keyOf(Math.abs(holder) - 1))) {
        victim = ring
        victimHead = head
      }
    }
    if (victim !== OVERFLOW_RING && this.#free(victim, now, true)) return victim
    f[gate] = now + RING_SCAN_PAUSE_MS
    return OVERFLOW_RING
  }

  /** Take a ring from its holder (under the table lock): when it is expired (or `any`), cleared. */
  #free(ring: number, now: number, any: boolean): boolean {
    const i32 = this.i32
    const f = this.f64
    const o = this.ringBase(ring)
    this.lockRing(ring)
    try {
      const head = f[o + R_HEAD]!
      if (!any && (head === 0 || Math.floor(now / f[o + R_BUCKET_MS]!) <= head + f[o + R_BUCKETS]!)) return false
      const holder = Atomics.exchange(i32, this.#holderIndex(ring), 0)
      if (holder !== 0) {
        const slot = Math.abs(holder) - 1
        Atomics.compareExchange(i32, this.si(slot, S_RING), ring + 1, 0)
        if (holder < 0) Atomics.sub(i32, H_RINGS_UNLISTED, 1)
      }
      // Header too: the threshold markers and cached retry belonged to the old holder.
      f.fill(0, o, o + RING_HEADER)
      return true
    } finally {
      this.unlockRing(ring)
    }
  }

  /** Does `slot` hold `ring` (the overflow ring: whoever uses it)? Stable while the ring is locked. */
  holds(slot: number, ring: number): boolean {
    return ring === OVERFLOW_RING || Math.abs(Atomics.load(this.i32, this.#holderIndex(ring))) === slot + 1
  }

  /** The slot's budget ring, allocated if need be, locked: the caller unlocks it. */
  lockRingOf(slot: number, listed?: boolean): number {
    for (;;) {
      const ring = this.ringOf(slot, listed)
      this.lockRing(ring)
      if (this.holds(slot, ring)) return ring
      this.unlockRing(ring) // reclaimed between the two: take a ring again
    }
  }

  /** The slot's own budget ring, locked (the caller unlocks it); -1 when it holds none (or the overflow ring). */
  heldRing(slot: number): number {
    const plus1 = Atomics.load(this.i32, this.si(slot, S_RING))
    if (plus1 <= OVERFLOW_RING + 1) return -1
    const ring = plus1 - 1
    this.lockRing(ring)
    if (this.holds(slot, ring)) return ring
    this.unlockRing(ring)
    return -1
  }
}

/** A worker id's ledger; an id beyond the ledgers (none in a proxy: workers ≤ 256) shares the last one. */
function ledgerOf(worker: number): number {
  return worker >= 0 && worker < WORKER_LEDGERS ? worker : WORKER_LEDGERS - 1
}

/**
 * Subtract up to `n` from a count without taking it below zero (a thread cut off between its two
 * atomics may have counted one more in its ledger than in the count). Returns what was taken.
 */
function subAtMost(i32: Int32Array, i: number, n: number): number {
  for (;;) {
    const have = Atomics.load(i32, i)
    const take = Math.min(have, n)
    if (take <= 0) return 0
    if (Atomics.compareExchange(i32, i, have, have - take) === have) return take
  }
}

/** The slot after `s` in a probe sequence (slot 0, the overflow, is not in the hash table). */
function next(s: number): number {
  return s === TENANT_CAPACITY - 1 ? 1 : s + 1
}

/** Seconds on the scale of S_TOUCH and S_FULL_AT (since 2020-09-13: an Int32 until 2088). */
export function clockSec(ms: number): number {
  return Math.floor(ms / 1000) - 1_600_000_000
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}
