// Defaults that runtime code needs without loading zod (worker threads never import the
// schema: zod alone costs ~20 MB of RSS per V8 isolate). The schema uses these same constants.
export const DEFAULT_TIER = 'silver' as const

/** A tenant's QoS tier as configured (`tenants.<id>.tier`), else the default; an unlisted or absent tenant gets the default. */
export function configuredTier<T extends string>(tenants: Readonly<Record<string, { tier?: T }>>, tenant: string | undefined): T | typeof DEFAULT_TIER {
  return (tenant !== undefined && Object.hasOwn(tenants, tenant) ? tenants[tenant]!.tier : undefined) ?? DEFAULT_TIER
}

/**
 * What /readyz asks of the health-checked upstreams when `admin.readiness.upstreams` is absent:
 * all of them in sidecar mode (the pod is its one app), none in ingress mode (one dead backend
 * must not take every gateway pod out of its Service, and every other route with it).
 */
export function defaultReadinessUpstreams(mode: 'sidecar' | 'ingress'): 'all' | 'none' {
  return mode === 'ingress' ? 'none' : 'all'
}
