// The composition point between the proxy and the filters: filter name → module. The proxy
// imports this list, never a filter directly; a filter issue adds one line here and one
// schema line in config/filters/index.ts.
import type { FilterEntry, FilterName } from '../config/filters/index.ts'
import type { FilterModule } from '../proxy/filter.ts'
import { cacheFilter } from './cache/index.ts'
import { dlpFilter } from './dlp/index.ts'
import { persistedFilter } from './persisted/index.ts'
import { quotaFilter } from './quota/index.ts'
import { requestIdFilter } from './request-id/index.ts'
import { subscriptionsFilter } from './subscriptions/index.ts'
import { tenantFilter } from './tenant/index.ts'

export type FilterModules = { [K in FilterName]: FilterModule<Extract<FilterEntry, { name: K }>> }

export const filterModules: FilterModules = {
  'request-id': requestIdFilter,
  tenant: tenantFilter,
  persisted: persistedFilter,
  cache: cacheFilter,
  quota: quotaFilter,
  subscriptions: subscriptionsFilter,
  dlp: dlpFilter,
}
