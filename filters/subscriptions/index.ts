// Per-route policy for subscriptions the gateway terminates, applied to every subscribe in the
// request phase (ctx.subscription is set by the hub; plain HTTP requests pass untouched):
//  - who may share one upstream subscription: with `dedupClaims`, clients of a tenant whose
//    verified claims match share it; otherwise only identical credentials do (the hub's default);
//  - the delivery tier, from a verified claim (`tierClaim`), over the tenant's;
//  - how many operations one connection may hold on this route.
import type { SubscriptionsFilterConfig } from '../../config/filters/index.ts'
import type { Tier } from '../../config/primitives.ts'
import { errorReply, type Decision, type Filter, type FilterDeps, type FilterModule, type RequestContext } from '../../proxy/filter.ts'
// One reading of a claim path for the filter and the hub (which works a connection's tier out again).
import { claimAt } from '../../proxy/claims.ts'

const TIERS: ReadonlySet<string> = new Set<Tier>(['gold', 'silver', 'bronze'])


/**
 * The sharing scope for these claims: equal for two clients exactly when every configured
 * claim is equal. "tenant" for an empty list (the hub always keys by tenant as well).
 * Undefined when a configured claim is absent (or null): two tokens that both lack `sub` are not
 * "the same user", so they get the hub's credential scope (identical credentials only), never
 * one shared stream opened with the first one's credentials. The token's issuer (`iss`) is part
 * of every claim scope: the same claims from two issuers are two principals.
 */
export function dedupScope(claims: Record<string, unknown>, paths: readonly string[]): string | undefined {
  if (paths.length === 0) return 'tenant'
  const values: unknown[] = []
  // A subject is unique only within its issuer (RFC 7519 §4.1.2; OIDC identifies a user by
  // iss + sub): when the verifier accepts several issuers (a secret, a key file and a JWKS, or a
  // JWKS merging two IdPs, without `issuer`), sub "42" of one is not sub "42" of the other.
  // The issuer always belongs to the scope, so they never share a stream opened with the other's
  // credentials; one user's refreshed tokens (same iss) still share.
  const iss = claims.iss
  if (iss !== undefined && iss !== null && !paths.includes('iss')) values.push(['iss', iss])
  for (const p of paths) {
    const v = claimAt(claims, p)
    if (v === undefined || v === null) return undefined
    values.push([p, v])
  }
  return `claims:${JSON.stringify(values)}`
}

class SubscriptionsFilter implements Filter {
  readonly name = 'subscriptions'
  readonly #dedupClaims: readonly string[] | undefined
  readonly #tierClaim: string | undefined
  readonly #max: number | undefined

  constructor(cfg: SubscriptionsFilterConfig) {
    this.#dedupClaims = cfg.dedupClaims
    this.#tierClaim = cfg.tierClaim
    this.#max = cfg.maxPerConnection
  }

  onRequest(ctx: RequestContext): Decision {
    const sub = ctx.subscription
    if (sub === undefined) return undefined
    // `active` counts every operation the connection runs (queries and mutations in flight too),
    // as the hub's maxSubscriptionsPerConnection does: the refusal says so.
    if (this.#max !== undefined && (sub.active ?? 0) >= this.#max) {
      return errorReply('QUOTA_EXCEEDED', `at most ${this.#max} operations per connection on this route (subscriptions, and queries and mutations in flight)`)
    }
    // Only verified claims decide: without them the hub falls back to identical credentials.
    const claims = ctx.claims
    if (claims === undefined) return undefined
    if (this.#tierClaim !== undefined) {
      const tier = claimAt(claims, this.#tierClaim)
      if (typeof tier === 'string' && TIERS.has(tier)) {
        // The claim is who asks (the connection's tier). A tier a filter before this one set for
        // this operation alone (a persisted operation's manifest `tier`: one other than the
        // tenant filter's principal tier) stays the operation's: it was overwritten, so with
        // `persisted` ahead of this filter a bronze manifest operation was counted, and charged,
        // at the claim's gold.
        if (ctx.principalTier === undefined || ctx.tier === ctx.principalTier) ctx.tier = tier as Tier
        ctx.principalTier = tier as Tier
      }
    }
    if (this.#dedupClaims !== undefined) {
      const scope = dedupScope(claims, this.#dedupClaims)
      if (scope !== undefined) sub.dedupScope = scope
    }
    return undefined
  }
}

/**
 * Settings of this filter that can never apply where it is configured, each with its config path.
 * They were taken without a word: on a passthrough route (the default websocket.mode) the hub never
 * runs the chain per subscribe, so `maxPerConnection: 10` limited nothing; before the tenant filter
 * (the one that verifies tokens) no claim is known yet, so `dedupClaims` and `tierClaim` never applied.
 */
export function ineffectiveSettings(cfg: SubscriptionsFilterConfig, deps: Pick<FilterDeps, 'config' | 'routeName'>): string[] {
  const i = deps.config.routes.findIndex((r) => r.name === deps.routeName)
  const route = deps.config.routes[i]
  if (route === undefined) return []
  const names = route.filters.map((f) => f.name)
  const at = `routes[${i}].filters[${names.indexOf('subscriptions')}]`
  if (route.websocket.mode !== 'terminate') {
    return [`${at}: route "${route.name}" relays WebSockets as they are (websocket.mode: ${route.websocket.mode}): this filter only applies to subscriptions the gateway terminates (websocket.mode: terminate), and does nothing here`]
  }
  const claimSettings = [cfg.dedupClaims !== undefined ? 'dedupClaims' : undefined, cfg.tierClaim !== undefined ? 'tierClaim' : undefined].filter((n) => n !== undefined)
  const tenant = names.indexOf('tenant')
  if (claimSettings.length > 0 && (tenant === -1 || tenant > names.indexOf('subscriptions'))) {
    return [`${at}: ${claimSettings.join(' and ')} read verified token claims, which the tenant filter sets: ${tenant === -1 ? 'none runs on this route' : 'it runs after this filter'}, so they never apply (put tenant first)`]
  }
  return []
}

export const subscriptionsFilter: FilterModule<SubscriptionsFilterConfig> = {
  create: (cfg, deps) => {
    // Once per config (every worker thread builds the same chain).
    if (deps.workerId === 0) for (const msg of ineffectiveSettings(cfg, deps)) deps.logger.warn({ route: deps.routeName }, `subscriptions filter: ${msg}`)
    return new SubscriptionsFilter(cfg)
  },
  // The hub's per-process cursor key (used when subscriptions.cursorKey is unset) lives here:
  // one random key shared by every worker thread (CURSOR_KEY_SHARED_BYTES in proxy/subscriptions/hub.ts).
  sharedBytes: 64,
}
