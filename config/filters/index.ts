// The one list of filter config schemas. A filter issue adds its schema file next to these
// and one line below; the discriminated union turns an unknown name into a precise error.
import { z } from 'zod'
import { cacheFilterConfig } from './cache.ts'
import { dlpFilterConfig } from './dlp.ts'
import { persistedFilterConfig } from './persisted.ts'
import { quotaFilterConfig } from './quota.ts'
import { requestIdFilterConfig } from './request-id.ts'
import { subscriptionsFilterConfig } from './subscriptions.ts'
import { tenantFilterConfig } from './tenant.ts'

export const filterConfigs = [requestIdFilterConfig, tenantFilterConfig, persistedFilterConfig, cacheFilterConfig, quotaFilterConfig, dlpFilterConfig, subscriptionsFilterConfig] as const

export const filterEntry = z.discriminatedUnion('name', filterConfigs, {
  error: (iss) =>
    iss.code === 'invalid_union'
      ? `unknown filter; known filters: ${filterConfigs.map((f) => f.shape.name.value).join(', ')}`
      : undefined,
})
export type FilterEntry = z.infer<typeof filterEntry>
export type FilterName = FilterEntry['name']

export type { RequestIdFilterConfig } from './request-id.ts'
export type { TenantFilterConfig } from './tenant.ts'
export type { PersistedFilterConfig } from './persisted.ts'
export type { CacheFilterConfig } from './cache.ts'
export type { QuotaFilterConfig } from './quota.ts'
export type { DlpFilterConfig } from './dlp.ts'
export type { SubscriptionsFilterConfig } from './subscriptions.ts'
