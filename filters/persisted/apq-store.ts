// Documents registered through Automatic Persisted Queries: a bounded LRU per worker thread,
// and Redis when configured (shared by every proxy, surviving restarts). The LRU lives at
// module level so registrations survive config reloads.
import { LRUCache } from 'lru-cache'
import { readyWithin, type RedisProvider } from '../../proxy/filter.ts'

let shared: { max: number; lru: LRUCache<string, string> } | undefined

/**
 * Bytes of registered documents kept per worker, whatever maxEntries says: registration is
 * open to any client, and 10 000 documents at the 64 KiB query limit would be 640 MiB.
 */
export const APQ_MAX_BYTES = 64 * 1024 * 1024

/** The worker's registrations (one LRU for every route and config version of equal size). */
export function apqLru(maxEntries: number): LRUCache<string, string> {
  if (shared === undefined || shared.max !== maxEntries) {
    const lru = new LRUCache<string, string>({ max: maxEntries, maxSize: APQ_MAX_BYTES, sizeCalculation: (query, hash) => query.length + hash.length + 64 })
    // A resize keeps what it can: registrations are cheap for clients to redo, but not free.
    if (shared !== undefined) for (const [k, v] of shared.lru.entries()) if (lru.size < maxEntries) lru.set(k, v)
    shared = { max: maxEntries, lru }
  }
  return shared.lru
}

/** Registrations held while Redis (re)connects; the queries are the LRU's own strings. */
const MAX_PENDING = 1024

export type ApqLookup = { query: string | undefined; redisError: boolean }

export class ApqStore {
  readonly #lru: LRUCache<string, string>
  readonly #redis: RedisProvider | undefined
  readonly #ttlSeconds: number
  readonly #timeoutMs: number
  readonly #onRedisError: (op: string, err: unknown) => void

  constructor(maxEntries: number, redis: RedisProvider | undefined, ttlSeconds: number, timeoutMs: number, onRedisError: (op: string, err: unknown) => void) {
    this.#lru = apqLru(maxEntries)
    this.#redis = redis
    this.#ttlSeconds = ttlSeconds
    this.#timeoutMs = timeoutMs
    this.#onRedisError = onRedisError
    redis?.client() // connect now, not on the first request
  }

  get hasRedis(): boolean {
    return this.#redis !== undefined
  }

  /** Synchronous: the worker's LRU only. */
  local(hash: string): string | undefined {
    return this.#lru.get(hash)
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
      this.#lru.set(hash, query)
      return { query, redisError: false }
    } catch (err) {
      this.#onRedisError('get', err)
      return { query: undefined, redisError: true }
    } finally {
      clearTimeout(timer)
    }
  }

  register(hash: string, query: string): void {
    if (this.#lru.get(hash) === query) return
    this.#lru.set(hash, query)
    const redis = this.#redis
    if (redis === undefined) return
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
        else this.#onRedisError('set', new Error(`redis not ready within 2 s: ${batch.size} registration(s) kept in this worker only`))
      })
    }
    if (pending.size < MAX_PENDING) pending.set(key, query)
  }

  #pending: Map<string, string> | undefined = undefined

  #write(key: string, query: string): void {
    const redis = this.#redis!
    const p = this.#ttlSeconds > 0 ? redis.client().set(key, query, 'EX', this.#ttlSeconds) : redis.client().set(key, query)
    p.catch((err: unknown) => this.#onRedisError('set', err))
  }
}
