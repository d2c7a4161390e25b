import { z } from 'zod'
import { cacheTag } from '../persisted-documents.ts'
import { byteSize, filterBase } from '../primitives.ts'

const headerName = z.string().min(1).toLowerCase()

/**
 * Read-through response cache for GraphQL queries with write-through invalidation by
 * mutations. Keys always include the tenant; entries never cross tenants.
 */
export const cacheFilterConfig = z.strictObject({
  name: z.literal('cache'),
  ...filterBase,
  /** TTL when neither the persisted id's policy nor the upstream's Cache-Control says less. */
  ttlSeconds: z.int().nonnegative().default(30),
  /** After the TTL, serve the stale entry (x-cache: STALE) while one background request refreshes it. */
  staleWhileRevalidateSeconds: z.int().nonnegative().default(0),
  /**
   * In the last N seconds of an entry's TTL (at most half of it), a hit also starts one
   * background refresh, so hot keys are renewed before they expire: no expiry miss on the
   * client's path and, unlike stale-while-revalidate, nothing older than the TTL is served.
   */
  refreshAheadSeconds: z.int().nonnegative().default(0),
  /** After the TTL, serve the stale entry when the upstream fails (5xx, timeout, unreachable). */
  staleIfErrorSeconds: z.int().nonnegative().default(0),
  /** Memory for entries per worker thread (LRU by bytes). */
  maxBytes: byteSize.default(64 * 1024 * 1024),
  /** Larger responses stream through uncached (capture stops at this size). */
  maxEntryBytes: byteSize.default(1024 * 1024),
  /** Concurrent misses on one key in this process make one upstream request. */
  singleFlight: z.boolean().default(true),
  /** Requests without a resolved tenant bypass the cache (put the tenant filter first), unless false. */
  requireTenant: z.boolean().default(true),
  vary: z
    .strictObject({
      /** Request headers whose values become part of the key (e.g. accept-language). */
      headers: z.array(headerName).default([]),
      /** Verified token claims whose values become part of the key (e.g. sub for per-user data). */
      claims: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  authorization: z
    .strictObject({
      /** Requests carrying any of these headers bypass the cache unless the header is in vary.headers (or scopes admit them). */
      privateHeaders: z.array(headerName).default(['authorization', 'cookie']),
      /**
       * A request with a verified token is cacheable when all its scopes are listed here; the
       * scopes then become part of the key. Empty: tokens bypass the cache.
       */
      scopes: z.array(z.string().min(1)).default([]),
      /** Claim holding the scopes: a space-separated string or an array. */
      scopeClaim: z.string().min(1).default('scope'),
    })
    .prefault({}),
  invalidation: z
    .strictObject({
      /** Mutations invalidate entries by tag (entities they return, per-id cacheTags, mutationTags). */
      writeThrough: z.boolean().default(true),
      /** Add __typename next to every selected `id` or `_id` (as Apollo Client does) so entities can be tagged. */
      injectTypename: z.boolean().default(true),
      /** Mutation root field → tags it invalidates ("createEntity: [Query.entities]"). */
      mutationTags: z.record(z.string().min(1), z.array(cacheTag)).default({}),
      /** Mutation responses read for entity tags up to this size; beyond it the whole route cache is dropped. */
      maxMutationBodyBytes: byteSize.default(1024 * 1024),
      /** Longest wait for Redis (L2 purge + publish) before a mutation's response completes. */
      redisTimeoutMs: z.int().min(1).default(100),
    })
    .prefault({}),
  redis: z
    .strictObject({
      /** Shared second-level cache in Redis (needs top-level `redis:`). */
      l2: z.boolean().default(false),
      /** Publish and receive invalidations through Redis pub/sub (needs top-level `redis:`). */
      pubsub: z.boolean().default(true),
      /** Time to wait for an L2 read before going upstream. */
      timeoutMs: z.int().min(1).default(20),
    })
    .prefault({}),
})
export type CacheFilterConfig = z.infer<typeof cacheFilterConfig>
