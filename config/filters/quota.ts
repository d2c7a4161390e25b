import { z } from 'zod'
import { filterBase } from '../primitives.ts'
import { quotaKind } from '../quotas.ts'

/**
 * Cost controls for the route's requests: the tenant's token bucket, daily quota and rolling
 * budget for this route's `kind`, plus QoS shedding. The limits themselves live in `quotas:`.
 */
export const quotaFilterConfig = z.strictObject({
  name: z.literal('quota'),
  ...filterBase,
  /** Which quota this route's requests count against. */
  kind: quotaKind.default('graphql'),
  /** Decide and count, never reject (every rule on this route, QoS included). */
  shadow: z.boolean().default(false),
  headers: z
    .strictObject({
      /** IETF draft-ietf-httpapi-ratelimit-headers-11 `RateLimit-Policy` and `RateLimit`. */
      ratelimit: z.boolean().default(true),
      /** Also `X-RateLimit-Limit/-Remaining/-Reset` for the most constrained policy (old clients). */
      legacy: z.boolean().default(false),
    })
    .prefault({}),
})
export type QuotaFilterConfig = z.infer<typeof quotaFilterConfig>
