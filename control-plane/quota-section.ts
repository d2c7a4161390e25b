// Where daily quotas (the seed's api_quotas: tenant × kind → limit per day) live in the config
// document. The quota filter owns that section of the schema; this adapter is the one place that
// knows its shape, so the REST/GraphQL quota resources and the api_quotas projection follow it.
import type { Doc } from './resources.ts'

export const QUOTA_KINDS = ['graphql', 'ingest', 'embeddings', 'subscriptions'] as const
export type QuotaKind = (typeof QUOTA_KINDS)[number]

export interface QuotaLimit {
  tenant: string
  kind: QuotaKind
  limitPerDay: number
}

export function isQuotaKind(k: string): k is QuotaKind {
  return (QUOTA_KINDS as readonly string[]).includes(k)
}

/** Every (tenant, kind) daily limit the document sets. */
export function readQuotaLimits(_doc: Doc): QuotaLimit[] {
  return []
}

/** The document with one limit set (undefined removes it). */
export function writeQuotaLimit(_doc: Doc, _tenant: string, _kind: QuotaKind, _limitPerDay: number | undefined): Doc {
  throw new Error('the config schema has no quota section yet')
}
