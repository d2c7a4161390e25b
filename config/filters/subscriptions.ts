import { z } from 'zod'
import { filterBase } from '../primitives.ts'

/**
 * Per-route policy for subscriptions the gateway terminates (routes with websocket.mode:
 * terminate): who shares an upstream subscription, which tier delivers, how many a connection
 * may hold. Runs in the request phase of every subscribe; a no-op for plain HTTP requests.
 */
export const subscriptionsFilterConfig = z.strictObject({
  name: z.literal('subscriptions'),
  ...filterBase,
  /**
   * Verified token claims (dotted paths, e.g. "sub" or "org.role") that, with the tenant, decide
   * who may share one upstream subscription. Absent: only clients with identical credentials
   * share (safe for any backend). []: everyone of a tenant shares (the backend's events depend
   * on the tenant alone). Without verified claims a subscribe falls back to credentials.
   */
  dedupClaims: z.array(z.string().min(1)).optional(),
  /** A verified claim naming the connection's delivery tier (gold/silver/bronze); overrides the tenant's. */
  tierClaim: z.string().min(1).optional(),
  /** Operations (subscriptions, and queries and mutations in flight) one connection may run at once on this route (the hub's own limit applies too). */
  maxPerConnection: z.int().min(1).optional(),
})
export type SubscriptionsFilterConfig = z.infer<typeof subscriptionsFilterConfig>
