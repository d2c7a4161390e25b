// Per-tenant usage counters of one worker thread, drained by the supervisor every few seconds
// and posted to the control plane (statements, usedToday, budget alerts). Plain objects keyed by
// tenant: tenants are bounded by config (others count as "_unlisted"), so this stays small, and
// recording is a few integer adds at the end of a request.
import { addCounters, emptyCounters, type TenantCounters } from '../config/usage-report.ts'
import { MAX_REQUEST_COST, type RequestContext } from './context.ts'

export type { TenantCounters } from '../config/usage-report.ts'

export type UsageSnapshot = Record<string, TenantCounters>

/** Error codes that are the gateway refusing a request (not the upstream failing). */
const NOT_REJECTIONS = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'INTERNAL_SERVER_ERROR', 'NOT_FOUND'])

export const UNLISTED_TENANT = '_unlisted'

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
    if (dlp !== undefined) for (const k in dlp) c.dlpActions[k] = (c.dlpActions[k] ?? 0) + dlp[k]!
    const code = ctx.errorCode
    if (code !== undefined && !NOT_REJECTIONS.has(code)) {
      c.rejections[code] = (c.rejections[code] ?? 0) + 1
      return
    }
    // What the quota charges: an estimate may be absurd or infinite, a report must stay a sum.
    const cost = ctx.cost >= 0 ? Math.min(ctx.cost, MAX_REQUEST_COST) : 1
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
