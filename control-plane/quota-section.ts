// Where daily quotas (the seed's api_quotas: tenant × kind → limit per day) live in the config
// document: `quotas.tenants.<tenant>.<kind>.limitPerDay` (the quota filter's section, see
// config/quotas.ts). This adapter is the one place that knows it, so the REST/GraphQL quota
// resources and the api_quotas projection follow that section. `quotas.defaults` applies to
// tenants without their own entry; it is not a per-tenant row and so not in api_quotas.
import { QUOTA_KINDS } from '../config/quota-usage.ts'
import type { Doc } from './resources.ts'

export { QUOTA_KINDS }
export type QuotaKind = (typeof QUOTA_KINDS)[number]

export interface QuotaLimit {
  tenant: string
  kind: QuotaKind
  limitPerDay: number
}

export function isQuotaKind(k: string): k is QuotaKind {
  return (QUOTA_KINDS as readonly string[]).includes(k)
}

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v)

/** Every (tenant, kind) daily limit the document sets (null = explicitly unlimited: no row). */
export function readQuotaLimits(doc: Doc): QuotaLimit[] {
  const out: QuotaLimit[] = []
  const tenants = isObj(doc.quotas) && isObj(doc.quotas.tenants) ? doc.quotas.tenants : {}
  for (const [tenant, q] of Object.entries(tenants)) {
    if (!isObj(q)) continue
    for (const kind of QUOTA_KINDS) {
      const k = q[kind]
      if (isObj(k) && typeof k.limitPerDay === 'number') out.push({ tenant, kind, limitPerDay: k.limitPerDay })
    }
  }
  return out
}

/**
 * The daily limit the quota filter enforces for a tenant and kind, as filters/quota/rules.ts
 * resolves it: the tenant's own `limitPerDay` (null: none), else `quotas.defaults.<kind>`. The
 * gateway's own pools (`_anonymous`, `_overflow`) have none. `limited` says whether any kind has
 * one for the tenant (only those tenants' usage is read for the budget alerts).
 */
export interface DailyLimits {
  of(tenant: string, kind: string): number | undefined
  limited(tenant: string): boolean
}

export function dailyLimits(doc: Doc): DailyLimits {
  const quotas = isObj(doc.quotas) ? doc.quotas : {}
  const tenants = isObj(quotas.tenants) ? quotas.tenants : {}
  const defaults = isObj(quotas.defaults) ? quotas.defaults : {}
  const of = (tenant: string, kind: string): number | undefined => {
    if (tenant.startsWith('_') || !isQuotaKind(kind)) return undefined
    const own = Object.hasOwn(tenants, tenant) && isObj(tenants[tenant]) ? (tenants[tenant] as Obj)[kind] : undefined
    if (isObj(own) && Object.hasOwn(own, 'limitPerDay')) return typeof own.limitPerDay === 'number' ? own.limitPerDay : undefined
    const def = defaults[kind]
    return isObj(def) && typeof def.limitPerDay === 'number' ? def.limitPerDay : undefined
  }
  return { of, limited: (tenant) => QUOTA_KINDS.some((k) => of(tenant, k) !== undefined) }
}

/** The document with one limit set (undefined removes it; emptied objects are dropped). */
export function writeQuotaLimit(doc: Doc, tenant: string, kind: QuotaKind, limitPerDay: number | undefined): Doc {
  const quotas: Obj = isObj(doc.quotas) ? { ...doc.quotas } : {}
  const tenants: Obj = isObj(quotas.tenants) ? { ...quotas.tenants } : {}
  const t: Obj = isObj(tenants[tenant]) ? { ...(tenants[tenant] as Obj) } : {}
  const k: Obj = isObj(t[kind]) ? { ...(t[kind] as Obj) } : {}
  if (limitPerDay === undefined) delete k.limitPerDay
  else k.limitPerDay = limitPerDay
  if (Object.keys(k).length) t[kind] = k
  else delete t[kind]
  if (Object.keys(t).length) tenants[tenant] = t
  else delete tenants[tenant]
  quotas.tenants = tenants
  return { ...doc, quotas }
}
