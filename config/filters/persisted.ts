import { z } from 'zod'
import { byteSize, durationMs, filterBase, tenantId } from '../primitives.ts'
import { headerName } from './tenant.ts'

const safelistMode = z.enum(['off', 'enforce', 'log-unknown'])

/**
 * Persisted queries: Apollo APQ, the persisted-documents manifest (top-level
 * `persistedDocuments`), safelisting, per-id policy, cost hints toward the backend and static
 * cost estimation for everything else.
 */
export const persistedFilterConfig = z.strictObject({
  name: z.literal('persisted'),
  ...filterBase,
  apq: z
    .strictObject({
      /** Accept Automatic Persisted Queries registrations (hash + document) from clients. */
      enabled: z.boolean().default(true),
      /** Registered documents kept per worker thread (LRU). */
      maxEntries: z.int().min(1).default(10_000),
      /** Registered documents kept in Redis (when `redis:` is configured), shared and surviving restarts; 0 = no expiry. */
      redisTtlSeconds: z.int().nonnegative().default(7 * 24 * 3600),
      /** Time to wait for Redis on an LRU miss before answering PERSISTED_QUERY_NOT_FOUND. */
      redisTimeoutMs: durationMs.min(1).default(50),
    })
    .prefault({}),
  safelist: z
    .strictObject({
      /**
       * off: any operation runs. enforce: only manifest operations (PERSISTED_QUERY_NOT_ALLOWED
       * otherwise). log-unknown: everything runs, unknown operations are logged and counted.
       */
      mode: safelistMode.default('off'),
      /** Per-tenant overrides of mode, to roll enforcement out tenant by tenant. */
      tenants: z.record(tenantId, safelistMode).default({}),
    })
    .prefault({}),
  limits: z
    .strictObject({
      /** Longest query text accepted (400 above). */
      maxQueryBytes: byteSize.default(64 * 1024),
      /** Deepest selection nesting accepted, fragments expanded (400 above). 0 disables. */
      maxDepth: z.int().nonnegative().default(15),
    })
    .prefault({}),
  cost: z
    .strictObject({
      /** SDL file whose @cost / @listSize directives refine the estimate. */
      schemaFile: z.string().min(1).optional(),
      /** Items a list field is assumed to return when nothing says otherwise. */
      defaultListSize: z.int().min(1).default(10),
      /** Weight of a field returning an object (interface, union). */
      objectCost: z.number().nonnegative().default(1),
      /** Weight of a field returning a scalar or enum. */
      scalarCost: z.number().nonnegative().default(0),
      /** Added once for a mutation (writes cost more than reads). */
      mutationCost: z.number().nonnegative().default(10),
      /** Arguments whose value bounds a list's size (without a schema they also mark a field as a list). */
      slicingArguments: z.array(z.string().min(1)).default(['first', 'last', 'limit', 'pageSize', 'take', 'top']),
    })
    .prefault({}),
  hints: z
    .strictObject({
      /** Body extension carrying the matched id's hints to the backend; false to not send it. */
      extension: z.union([z.string().min(1), z.literal(false)]).default('costHints'),
      /** Header carrying the same hints as base64url JSON; false to not send it. */
      header: z.union([headerName(true), z.literal(false)]).default('x-igw-cost-hints'),
    })
    .prefault({}),
})
export type PersistedFilterConfig = z.infer<typeof persistedFilterConfig>
