// Resolves who the request is for: a verified JWT claim, else the x-tenant-id header, else a
// configured default. Unknown tenants are refused (UNKNOWN_TENANT) unless a default exists.
// The resolved tenant replaces whatever tenant header the client sent toward the backend.
import type { TenantFilterConfig } from '../../config/filters/index.ts'
import { DEFAULT_TIER } from '../../config/defaults.ts'
import { errorReply, type Decision, type Filter, type FilterDeps, type FilterModule, type RequestContext } from '../../proxy/filter.ts'
import { claimAt, JwtVerifier } from './jwt-verifier.ts'

function bearer(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined
  if (value.length < 8 || value.slice(0, 7).toLowerCase() !== 'bearer ') return undefined
  const token = value.slice(7).trim()
  return token === '' ? undefined : token
}

function unauthenticated(reason: string): Decision {
  return errorReply('UNAUTHENTICATED', reason, undefined, { 'www-authenticate': `Bearer error="invalid_token", error_description="${reason}"` })
}

class TenantFilter implements Filter {
  readonly name = 'tenant'
  readonly #cfg: TenantFilterConfig
  readonly #tenants: FilterDeps['config']['tenants']
  readonly #jwt: JwtVerifier | undefined

  constructor(cfg: TenantFilterConfig, deps: FilterDeps) {
    this.#cfg = cfg
    this.#tenants = deps.config.tenants
    this.#jwt = cfg.jwt ? new JwtVerifier(cfg.jwt) : undefined
  }

  onRequest(ctx: RequestContext): Decision | Promise<Decision> {
    const jwt = this.#cfg.jwt
    if (jwt !== undefined && this.#jwt !== undefined) {
      const token = bearer(ctx.req.headers[jwt.header])
      if (token !== undefined) {
        const cached = this.#jwt.cached(token)
        if (cached !== undefined) return this.#fromOutcome(ctx, cached)
        return this.#jwt.verify(token).then((o) => this.#fromOutcome(ctx, o))
      }
      if (jwt.required) return unauthenticated('missing bearer token')
    }
    const header = ctx.req.headers[this.#cfg.header]
    return this.#admit(ctx, typeof header === 'string' ? header : undefined)
  }

  #fromOutcome(ctx: RequestContext, o: Awaited<ReturnType<JwtVerifier['verify']>>): Decision {
    if (!o.ok) return unauthenticated(o.reason)
    const value = claimAt(o.claims, this.#cfg.jwt!.claim)
    if (typeof value !== 'string' || value === '') return unauthenticated(`token has no "${this.#cfg.jwt!.claim}" claim`)
    ctx.claims = o.claims
    return this.#admit(ctx, value)
  }

  #admit(ctx: RequestContext, named: string | undefined): Decision {
    let tenant = named
    if (tenant === undefined || !(Object.hasOwn(this.#tenants, tenant) || this.#cfg.allowUnlisted)) {
      if (this.#cfg.defaultTenant === undefined) {
        return errorReply('UNKNOWN_TENANT', tenant === undefined ? `no tenant given (send ${this.#cfg.header} or a token)` : `unknown tenant "${tenant.slice(0, 128)}"`)
      }
      tenant = this.#cfg.defaultTenant
    }
    ctx.tenant = tenant
    ctx.tier = this.#tenants[tenant]?.tier ?? DEFAULT_TIER
    ctx.setUpstreamHeader(this.#cfg.forwardHeader, tenant)
    return undefined
  }
}

export const tenantFilter: FilterModule<TenantFilterConfig> = {
  create: (cfg, deps) => new TenantFilter(cfg, deps),
}
