// Documents registered through Automatic Persisted Queries: a bounded LRU per worker thread,
// and Redis when configured (shared by every proxy, surviving restarts). The LRU lives at
// module level so registrations survive config reloads.
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { readyWithin, type RedisProvider } from '../../proxy/filter.ts'

/**
 * Bytes of registered documents kept per worker, whatever maxEntries says: registration is
 * open to any client, and 10 000 documents at the 64 KiB query limit would be 640 MiB.
 */
export const APQ_MAX_BYTES = 64 * 1024 * 1024

/**
 * The worker's LRUs, one per maxEntries value (every route and config version of equal size
 * shares one), held weakly: an LRU no filter uses any more (its config version replaced) goes
 * with it. One module-level LRU replaced by each size asked for lost registrations on every
 * reload when two routes had different sizes: the first route's filter shrank it to its size,
 * the second's grew it back from what was left.
 */
const bySize = new Map<number, WeakRef<LRUCache<string, string>>>()
/** The LRU asked for last: a new size starts from its registrations. */
let latest: WeakRef<LRUCache<string, string>> | undefined

/** The worker's registrations for this maxEntries. */
export function apqLru(maxEntries: number): LRUCache<string, string> {
  let lru = bySize.get(maxEntries)?.deref()
  if (lru === undefined) {
    lru = new LRUCache<string, string>({ max: maxEntries, maxSize: APQ_MAX_BYTES, sizeCalculation: (query, hash) => query.length + hash.length + 64 })
    // A resize keeps what it can: registrations are cheap for clients to redo, but not free.
    // From least to most recently used, so the new LRU keeps their order (the most recent last,
    // the first kept when it is smaller) and evicts the coldest first.
    const from = latest?.deref()
    if (from !== undefined) for (const k of from.rkeys()) lru.set(k, from.peek(k)!)
    for (const [size, ref] of bySize) if (ref.deref() === undefined) bySize.delete(size)
    bySize.set(maxEntries, new WeakRef(lru))
  }
  latest = new WeakRef(lru)
  return lru
}

/** Registrations held while Redis (re)connects; the queries are the LRU's own strings. */
const MAX_PENDING = 1024

/**
 * When this worker last wrote each registration to Redis (by hash), per Redis provider (a reload
 * keeping the same Redis keeps them). A hit served from the LRU never touched Redis, so a document
 * in use every second still expired there after redisTtlSeconds: every proxy started later (a
 * deploy, a scale-out) answered PersistedQueryNotFound for it. And a registration of a document
 * this worker already held was not written at all, so a document missing from Redis (expired,
 * flushed) could never get back there through this proxy: with two proxies behind a round-robin
 * balancer, the one without it said "not found", the client's registration landed on the other,
 * and so on, forever.
 */
const writtenAt = new WeakMap<RedisProvider, LRUCache<string, number>>()
/** A registration of a document the worker holds is written again at most this often. */
const REWRITE_MS = 10_000

export type ApqLookup = { query: string | undefined; redisError: boolean }

export class ApqStore {
  readonly #lru: LRUCache<string, string>
  readonly #redis: RedisProvider | undefined
  readonly #ttlSeconds: number
  readonly #timeoutMs: number
  readonly #onRedisError: (op: string, err: unknown) => void
  readonly #written: LRUCache<string, number> | undefined
  /** A hit refreshes the Redis copy when its last write is older than this (half the TTL). */
  readonly #refreshMs: number

  constructor(maxEntries: number, redis: RedisProvider | undefined, ttlSeconds: number, timeoutMs: number, onRedisError: (op: string, err: unknown) => void) {
    this.#lru = apqLru(maxEntries)
    this.#redis = redis
    this.#ttlSeconds = ttlSeconds
    this.#timeoutMs = timeoutMs
    this.#onRedisError = onRedisError
    this.#refreshMs = ttlSeconds > 0 ? ttlSeconds * 500 : Infinity
    if (redis !== undefined) {
      let w = writtenAt.get(redis)
      if (w === undefined) writtenAt.set(redis, (w = new LRUCache<string, number>({ max: 100_000 })))
      this.#written = w
    }
    redis?.client() // connect now, not on the first request
  }

  get hasRedis(): boolean {
    return this.#redis !== undefined
  }

  /** Synchronous: the worker's LRU only. */
  local(hash: string): string | undefined {
    const query = this.#lru.get(hash)
    const written = this.#written
    if (query !== undefined && written !== undefined && this.#refreshMs !== Infinity) {
      const at = written.get(hash)
      if (at === undefined || Date.now() - at >= this.#refreshMs) this.#store(hash, query)
    }
    return query
  }

  /** Redis, bounded by a timeout (an outage reads as "not found": the client re-registers). */
  async remote(hash: string): Promise<ApqLookup> {
    const redis = this.#redis!
    let timer: NodeJS.Timeout | undefined
    try {
      const query = await Promise.race([
        redis.client().get(`${redis.keyPrefix}apq:${hash}`),
        new Promise<never>((_, reject) => (timer = setTimeout(reject, this.#timeoutMs, new Error(`redis did not answer within ${this.#timeoutMs} ms`)))),
      ])
      if (query === null) return { query: undefined, redisError: false }
      // Only a document that hashes to its key is served (and kept): whatever else wrote there
      // (another application on the same prefix, a hand edit) must not run under that hash.
      if (createHash('sha256').update(query).digest('hex') !== hash) {
        this.#onRedisError('verify', new Error(`the document stored in redis for ${hash} does not hash to it; ignored`))
        return { query: undefined, redisError: false }
      }
      this.#lru.set(hash, query)
      // Read from Redis: in use, so it lives another TTL there too.
      if (this.#ttlSeconds > 0) {
        this.#written?.set(hash, Date.now())
        redis
          .client()
          .expire(`${redis.keyPrefix}apq:${hash}`, this.#ttlSeconds)
          .catch((err: unknown) => this.#onRedisError('expire', err))
      }
      return { query, redisError: false }
    } catch (err) {
      this.#onRedisError('get', err)
      return { query: undefined, redisError: true }
    } finally {
      clearTimeout(timer)
    }
  }

  register(hash: string, query: string): void {
    if (this.#lru.get(hash) === query) {
      // Held here, but maybe no longer in Redis (a client registers after a "not found", which
      // may have come from another proxy): written again, at most every REWRITE_MS.
      const at = this.#written?.get(hash)
      if (this.#redis === undefined || (at !== undefined && Date.now() - at < Math.min(REWRITE_MS, this.#refreshMs))) return
    } else this.#lru.set(hash, query)
    this.#store(hash, query)
  }

  /** Write a registration to Redis (now, or once it is ready). */
  #store(hash: string, query: string): void {
    const redis = this.#redis
    if (redis === undefined) return
    this.#written!.set(hash, Date.now())
    const key = `${redis.keyPrefix}apq:${hash}`
    if (redis.ready) {
      this.#write(key, query)
      return
    }
    // Connecting (or reconnecting): a registration is worth a short wait, unlike a read. The ones
    // made meanwhile wait together, bounded (one listener, one timer), for up to 2 s; beyond
    // MAX_PENDING they stay in this worker only (the client re-registers if another proxy asks).
    let pending = this.#pending
    if (pending === undefined) {
      const batch = (pending = this.#pending = new Map())
      void readyWithin(redis.client(), 2_000).then((ready) => {
        this.#pending = undefined
        if (ready) for (const [k, q] of batch) this.#write(k, q)
        else {
          for (const k of batch.keys()) this.#unwritten(k)
          this.#onRedisError('set', new Error(`redis not ready within 2 s: ${batch.size} registration(s) kept in this worker only`))
        }
      })
    }
    if (pending.size < MAX_PENDING) pending.set(key, query)
    // Not queued: not written either. Marked written, its re-registrations were skipped for
    // REWRITE_MS while Redis never got it (other proxies answered "not found" meanwhile).
    else this.#written!.delete(hash)
  }

  #pending: Map<string, string> | undefined = undefined

  #write(key: string, query: string): void {
    const redis = this.#redis!
    const p = this.#ttlSeconds > 0 ? redis.client().set(key, query, 'EX', this.#ttlSeconds) : redis.client().set(key, query)
    p.catch((err: unknown) => {
      this.#unwritten(key)
      this.#onRedisError('set', err)
    })
  }

  /** Not written after all: the next use of the document tries again. */
  #unwritten(key: string): void {
    this.#written?.delete(key.slice(this.#redis!.keyPrefix.length + 4))
  }
}
