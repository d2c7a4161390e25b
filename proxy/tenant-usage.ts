// Per-tenant usage counters of one worker thread, drained by the supervisor every few seconds
// and posted to the control plane (statements, usedToday, budget alerts). Plain objects keyed by
// tenant: tenants are bounded by config (others count as "_unlisted"), so this stays small, and
// recording is a few integer adds at the end of a request.
import { addCounters, addTo, emptyCounters, type TenantCounters } from '../config/usage-report.ts'
import { chargedCost, type RequestContext } from './context.ts'

export type { TenantCounters } from '../config/usage-report.ts'

export type UsageSnapshot = Record<string, TenantCounters>

/** Error codes that are the gateway refusing a request (not the upstream failing). */
const NOT_REJECTIONS = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'INTERNAL_SERVER_ERROR', 'NOT_FOUND'])

export const UNLISTED_TENANT = '_unlisted'

/**
 * The rejections key of a quota refusal of a request that can never fit (400 BAD_REQUEST, reason
 * "too_expensive": the quota filter's only BAD_REQUEST). Counted under BAD_REQUEST, these were
 * mixed with malformed requests, and a usage or billing consumer could not tell a tenant sending
 * broken requests from one whose operations outgrew its limits. Lower case, as the reason in the
 * error's extensions and in igw_quota_rejections_total: never one of the gateway's error codes.
 */
export const TOO_EXPENSIVE = 'too_expensive'

const empty = emptyCounters

export class TenantUsage {
  #known: ReadonlySet<string> = new Set()
  #counters: UsageSnapshot = {}

  setTenants(names: Iterable<string>): void {
    this.#known = new Set(names)
  }

  #slot(tenant: string): TenantCounters {
    return slotOf(this.#counters, this.#known.has(tenant) ? tenant : UNLISTED_TENANT)
  }

  /**
   * A finished HTTP request (unattributed requests — no tenant resolved — are not counted).
   * `bytesOut`: response bytes sent, measured only on export (`type: http`) routes, else 0.
   */
  request(ctx: RequestContext, status: number, bytesOut = 0): void {
    const tenant = ctx.tenant
    if (tenant === undefined) return
    const c = this.#slot(tenant)
    c.requests++
    if (status >= 500) c.errors++
    if (bytesOut > 0) c.bytesExported += bytesOut
    const dlp = ctx.dlpActions
    if (dlp !== undefined) for (const k in dlp) addTo(c.dlpActions, k, dlp[k]!)
    const code = ctx.errorCode
    // APQ's first step (a hash the gateway does not know yet; the client sends it again with its
    // query, which is charged): the protocol working, not a refusal. Counted as one, every Apollo
    // client's cold start inflated the statement's rejections and fed the rejections anomaly.
    if (code === 'PERSISTED_QUERY_NOT_FOUND') return
    if (code !== undefined && !NOT_REJECTIONS.has(code)) {
      const key = code === 'BAD_REQUEST' && ctx.answeredBy === 'quota' ? TOO_EXPENSIVE : code
      addTo(c.rejections, key, 1)
      return
    }
    // What the quota charges: an estimate may be absurd or infinite, a report must stay a sum, and
    // a fractional cost (a plugin's hint) is charged rounded up. Summed as set, 0.4-unit requests
    // were billed 0.4 where the quota's daily counter took 1 (usedToday from reports disagreed
    // with Redis's), each report rounded its fraction (one such request per interval: 0, never
    // billed at all) and the sums drifted (0.1 + 0.2).
    const cost = chargedCost(ctx.cost)
    c.costUnits += cost
    const kind = this.#kindOf(ctx.route)
    if (kind !== undefined) c.byKind[kind] = (c.byKind[kind] ?? 0) + cost
  }

  readonly #kinds = new WeakMap<RequestContext['route'], string | null>()

  /** The quota kind a route counts against: its quota filter's `kind`, else graphql for GraphQL routes. */
  #kindOf(route: RequestContext['route']): string | undefined {
    let k = this.#kinds.get(route)
    if (k === undefined) {
      const q = route.config.filters.find((f) => f.name === 'quota') as { kind?: string } | undefined
      k = q?.kind ?? (route.type === 'graphql' ? 'graphql' : null)
      this.#kinds.set(route, k)
    }
    return k ?? undefined
  }

  /** A WebSocket (subscription) connection was accepted. */
  subscription(ctx: RequestContext, status: number): void {
    if (ctx.tenant === undefined || status !== 101) return
    const c = this.#slot(ctx.tenant)
    c.byKind.subscriptions = (c.byKind.subscriptions ?? 0) + 1
  }

  /** Hand over what was counted since the last drain and start again from zero. */
  drain(): UsageSnapshot {
    const out = this.#counters
    this.#counters = {}
    return out
  }
}

/**
 * The counters of `tenant` in a snapshot, created when absent. Own properties only: tenant ids
 * such as "constructor", "toString" or "valueOf" are valid config ids, and `counters[id] ??=`
 * found Object.prototype's function instead of creating a slot, so every request of such a
 * tenant threw in the worker (a TypeError on its byKind) and its usage was never reported.
 */
function slotOf(counters: UsageSnapshot, tenant: string): TenantCounters {
  return Object.hasOwn(counters, tenant) ? counters[tenant]! : (counters[tenant] = empty())
}

/** Sum worker snapshots (supervisor side). */
export function mergeUsage(into: UsageSnapshot, from: UsageSnapshot): UsageSnapshot {
  for (const [tenant, c] of Object.entries(from)) addCounters(slotOf(into, tenant), c)
  return into
}
