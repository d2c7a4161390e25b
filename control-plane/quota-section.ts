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
