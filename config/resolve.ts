// Lookups on a validated config document. Zod-free, so worker threads can use them.
import type { GatewayConfig, RouteConfig, UpstreamConfig } from './schema.ts'

/**
 * The upstream a route points at. Validation already turned inline URLs into named upstreams
 * (named by the URL itself), so this is a plain lookup.
 */
export function resolveRouteUpstream(cfg: GatewayConfig, route: RouteConfig): { name: string; def: UpstreamConfig } {
  const def = cfg.upstreams[route.upstream]
  if (def === undefined) throw new Error(`route ${route.name}: upstream "${route.upstream}" is not in the validated config`)
  return { name: route.upstream, def }
}
