// REST resources are views onto parts of the ONE config document. A write copies the head
// document, replaces one part, and the whole result is validated with the proxy's own zod schema
// before it becomes a new version. Adding a resource for a new schema section is one entry here.
import type { z } from 'zod'
import { persistedOperation } from '../config/persisted-documents.ts'
import { budgetConfig, quotasConfig } from '../config/quotas.ts'
import { dlpConfig, dlpPreset, SEED_PRESETS } from '../config/dlp.ts'
import { subscriptionsConfig } from '../config/subscriptions.ts'
import { looksLikeUrl, routeConfig, tenantConfig, upstreamConfig } from '../config/schema.ts'

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json }
export type Doc = Record<string, unknown>

/** A named collection inside the document: a map (`tenants.<id>`) or a list of `{name}` items. */
export interface CollectionSpec {
  /** URL segment under /v1/. */
  name: string
  shape: 'map' | 'list'
  /** Where the collection lives in the document. */
  path: readonly string[]
  /** For maps: the item is this key inside each entry (e.g. a tenant's `budget`), not the entry. */
  leaf?: string
  /** Item schema (input side) for the OpenAPI document. */
  schema: z.ZodType
  description: string
  /** What an item is called in a refusal ("upstream"). */
  noun?: string
  /** What else in the document names item `id` (a DELETE that would leave them dangling is a 409). */
  referencedBy?: (doc: Doc, id: string) => Reference[]
}

/** A place in the document that names an item: its path, and the REST resource to change to drop it. */
export interface Reference {
  path: string
  resource: string
}

/** A singleton part of the document (a top-level section such as `cache:`). */
export interface SectionSpec {
  name: string
  path: readonly string[]
  schema: z.ZodType
  description: string
}

type FilterShape = { name?: unknown; defaultTenant?: unknown; preset?: unknown }
type RouteShape = { name?: unknown; upstream?: unknown; filters?: FilterShape[] }

function routesOf(doc: Doc): RouteShape[] {
  return Array.isArray(doc.routes) ? (doc.routes as unknown[]).filter((r): r is RouteShape => r !== null && typeof r === 'object') : []
}

function filtersOf(r: RouteShape): FilterShape[] {
  return Array.isArray(r.filters) ? r.filters.filter((f): f is FilterShape => f !== null && typeof f === 'object') : []
}

const mapAt = (doc: Doc, path: readonly string[]): Record<string, unknown> => {
  const m = at(doc, path)
  return m !== null && typeof m === 'object' && !Array.isArray(m) ? (m as Record<string, unknown>) : {}
}

/** Routes whose `upstream` is this name (an inline URL is not a reference: it works without the entry). */
function upstreamReferences(doc: Doc, id: string): Reference[] {
  if (looksLikeUrl(id)) return []
  return routesOf(doc).flatMap((r, i) => (r.upstream === id ? [{ path: `routes[${i}].upstream`, resource: `routes/${String(r.name)}` }] : []))
}

/**
 * A tenant's own entries (quotas, budget, DLP preset) and tenant filters defaulting to it. Its own
 * entries are not removed with it: each is a resource of its own, authorized and audited as one
 * (a policy may let an admin delete a tenant but not change its quotas).
 */
function tenantReferences(doc: Doc, id: string): Reference[] {
  const out: Reference[] = []
  if (Object.hasOwn(mapAt(doc, ['quotas', 'tenants']), id)) out.push({ path: `quotas.tenants.${id}`, resource: `quota-limits/${id}` })
  if (Object.hasOwn(mapAt(doc, ['dlp', 'tenants']), id)) out.push({ path: `dlp.tenants.${id}`, resource: `dlp-tenants/${id}` })
  routesOf(doc).forEach((r, i) =>
    filtersOf(r).forEach((f, j) => {
      // Not refused by the schema (an unlisted default tenant gets the default tier), but the
      // route's anonymous traffic would go on as the deleted tenant.
      if (f.name === 'tenant' && f.defaultTenant === id) out.push({ path: `routes[${i}].filters[${j}].defaultTenant`, resource: `routes/${String(r.name)}/filters/tenant` })
    }),
  )
  return out
}

/** Where a DLP preset is named. The seed's presets outlive a delete (it drops the document's redefinition). */
function dlpPresetReferences(doc: Doc, id: string): Reference[] {
  if (Object.hasOwn(SEED_PRESETS, id)) return []
  const out: Reference[] = []
  const dlp = mapAt(doc, ['dlp'])
  if (dlp.defaultPreset === id) out.push({ path: 'dlp.defaultPreset', resource: 'dlp' })
  for (const [tenant, t] of Object.entries(mapAt(doc, ['dlp', 'tenants']))) {
    if ((t as { preset?: unknown } | null)?.preset === id) out.push({ path: `dlp.tenants.${tenant}.preset`, resource: `dlp-tenants/${tenant}` })
  }
  const allowed = at(doc, ['dlp', 'policy', 'allowedPresets'])
  if (Array.isArray(allowed)) allowed.forEach((p, i) => p === id && out.push({ path: `dlp.policy.allowedPresets[${i}]`, resource: 'dlp' }))
  routesOf(doc).forEach((r, i) =>
    filtersOf(r).forEach((f, j) => {
      if (f.name === 'dlp' && f.preset === id) out.push({ path: `routes[${i}].filters[${j}].preset`, resource: `routes/${String(r.name)}/filters/dlp` })
    }),
  )
  return out
}

export const COLLECTIONS: CollectionSpec[] = [
  {
    name: 'tenants',
    shape: 'map',
    path: ['tenants'],
    schema: tenantConfig,
    description: 'Tenants: tier, time zone, display name (document `tenants.<id>`); each also has a stable UUID',
    noun: 'tenant',
    referencedBy: tenantReferences,
  },
  { name: 'upstreams', shape: 'map', path: ['upstreams'], schema: upstreamConfig, description: 'Upstream origins and their pools (document `upstreams.<name>`)', noun: 'upstream', referencedBy: upstreamReferences },
  { name: 'routes', shape: 'list', path: ['routes'], schema: routeConfig, description: 'Routes with their filter chains (document `routes[]`, keyed by name)' },
  {
    name: 'quota-limits',
    shape: 'map',
    path: ['quotas', 'tenants'],
    schema: quotasConfig.shape.defaults,
    description: 'A tenant’s cost controls per kind — token bucket (rate, burst), daily quota (limitPerDay), concurrency — and budget (document `quotas.tenants.<tenant>`)',
  },
  { name: 'budgets', shape: 'map', path: ['quotas', 'tenants'], leaf: 'budget', schema: budgetConfig, description: 'A tenant’s rolling budget with its alert thresholds (document `quotas.tenants.<tenant>.budget`)' },
  {
    name: 'dlp-presets',
    shape: 'map',
    path: ['dlp', 'presets'],
    schema: dlpPreset,
    description: 'DLP presets: sensitive type → mask | tokenize | hash | redact | block (document `dlp.presets.<name>`; the seed’s mask_basic and tokenize_strict always exist)',
    noun: 'DLP preset',
    referencedBy: dlpPresetReferences,
  },
  { name: 'dlp-tenants', shape: 'map', path: ['dlp', 'tenants'], schema: dlpConfig.shape.tenants.unwrap().valueType, description: 'A tenant’s DLP preset, which wins over the route’s (document `dlp.tenants.<tenant>`)' },
  { name: 'subscription-topics', shape: 'map', path: ['subscriptions', 'topics'], schema: subscriptionsConfig.shape.topics.unwrap().valueType, description: 'Named subscription topics (document `subscriptions.topics.<name>`)' },
  { name: 'persisted-documents', shape: 'map', path: ['persistedDocuments', 'operations'], schema: persistedOperation, description: 'Persisted documents with per-id policy: cost, timeout, cache TTL/tags, planner hints, tier (document `persistedDocuments.operations.<id>`)' },
]

export const SECTIONS: SectionSpec[] = [
  { name: 'quota-defaults', path: ['quotas', 'defaults'], schema: quotasConfig.shape.defaults, description: 'Limits every tenant gets unless its own entry overrides them (document `quotas.defaults`)' },
  { name: 'qos', path: ['quotas', 'qos'], schema: quotasConfig.shape.qos, description: 'QoS load shedding by tier (document `quotas.qos`)' },
  { name: 'tiers', path: ['quotas', 'tiers'], schema: quotasConfig.shape.tiers, description: 'QoS tiers: rate/burst multipliers per tier (document `quotas.tiers`)' },
  { name: 'alert-sinks', path: ['quotas', 'events'], schema: quotasConfig.shape.events, description: 'Where budget and anomaly events go: webhook (document `quotas.events`)' },
  { name: 'dlp', path: ['dlp'], schema: dlpConfig, description: 'The DLP section: rule pack, presets, default preset, keyring location, export policy (document `dlp`)' },
  { name: 'subscriptions', path: ['subscriptions'], schema: subscriptionsConfig, description: 'Terminated subscriptions: protocols, upstream sharing, replay log, cursors (document `subscriptions`)' },
  { name: 'subscription-qos', path: ['subscriptions', 'qos'], schema: subscriptionsConfig.shape.qos, description: 'QoS delivery tiers of subscription streams (document `subscriptions.qos`)' },
  { name: 'anomaly', path: ['quotas', 'anomaly'], schema: quotasConfig.shape.anomaly, description: 'Anomaly detection settings (document `quotas.anomaly`)' },
]

export function collection(name: string): CollectionSpec | undefined {
  return COLLECTIONS.find((c) => c.name === name)
}

export function section(name: string): SectionSpec | undefined {
  return SECTIONS.find((s) => s.name === name)
}

function at(doc: Doc, path: readonly string[]): unknown {
  let cur: unknown = doc
  for (const p of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined
    cur = (cur as Record<string, unknown>)[p]
  }
  return cur
}

/** A copy of doc with the value at path replaced (undefined removes the key). */
export function setAt(doc: Doc, path: readonly string[], value: unknown): Doc {
  if (path.length === 0) return value as Doc
  const [head, ...rest] = path as [string, ...string[]]
  const out: Doc = { ...doc }
  const child = out[head]
  const next = setAt(child !== null && typeof child === 'object' && !Array.isArray(child) ? (child as Doc) : {}, rest, value)
  if (next === undefined) delete out[head]
  else out[head] = next
  return out
}

export function getAt(doc: Doc, path: readonly string[]): unknown {
  return at(doc, path)
}

export function listItems(doc: Doc, spec: CollectionSpec): { id: string; value: unknown }[] {
  const c = at(doc, spec.path)
  if (spec.shape === 'map') {
    if (c === null || typeof c !== 'object' || Array.isArray(c)) return []
    const entries = Object.entries(c as Record<string, unknown>)
    if (spec.leaf === undefined) return entries.map(([id, value]) => ({ id, value }))
    const leaf = spec.leaf
    return entries.map(([id, e]) => ({ id, value: (e as Record<string, unknown> | null)?.[leaf] })).filter((i) => i.value !== undefined)
  }
  if (!Array.isArray(c)) return []
  return c.map((value) => ({ id: String((value as { name?: unknown } | null)?.name ?? ''), value }))
}

export function getItem(doc: Doc, spec: CollectionSpec, id: string): unknown {
  return listItems(doc, spec).find((i) => i.id === id)?.value
}

/**
 * Set an own key. Plain assignment of an id from a URL would, for "__proto__", replace the
 * object's prototype and store nothing; as an own key it stays visible, and validateDocument
 * refuses it with its path.
 */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
}

/** The document with item `id` set to value (undefined deletes it). Lists keep their order. */
export function putItem(doc: Doc, spec: CollectionSpec, id: string, value: unknown): Doc {
  if (spec.shape === 'map') {
    const c = at(doc, spec.path)
    const map: Record<string, unknown> = c !== null && typeof c === 'object' && !Array.isArray(c) ? { ...(c as Record<string, unknown>) } : {}
    if (spec.leaf !== undefined) {
      const entry = { ...((Object.hasOwn(map, id) ? (map[id] as Record<string, unknown> | undefined) : undefined) ?? {}) }
      if (value === undefined) delete entry[spec.leaf]
      else setOwn(entry, spec.leaf, value)
      if (Object.keys(entry).length) setOwn(map, id, entry)
      else delete map[id]
    } else if (value === undefined) delete map[id]
    else setOwn(map, id, value)
    return setAt(doc, spec.path, map)
  }
  const c = at(doc, spec.path)
  const list = Array.isArray(c) ? [...c] : []
  const i = list.findIndex((v) => (v as { name?: unknown } | null)?.name === id)
  if (value === undefined) {
    if (i !== -1) list.splice(i, 1)
  } else {
    const item = { ...(value as Record<string, unknown>), name: id }
    if (i === -1) list.push(item)
    else list[i] = item
  }
  return setAt(doc, spec.path, list)
}
