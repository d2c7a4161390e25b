// Resolves who the request is for: a verified JWT claim when tokens are configured (the header
// is then ignored; the token from jwt.header, else the jwt.cookie cookie), else the x-tenant-id
// header; else a configured default. Unknown tenants are refused (UNKNOWN_TENANT) unless a
// default exists.
// The resolved tenant replaces whatever tenant header the client sent toward the backend.
import type { TenantFilterConfig } from '../../config/filters/index.ts'
import { configuredTier } from '../../config/defaults.ts'
import { TENANT_ID } from '../../config/primitives.ts'
import { errorReply, type Decision, type Filter, type FilterDeps, type FilterModule, type RequestContext } from '../../proxy/filter.ts'
import type { Registry } from 'prom-client'
import { gauge, PlainCounter, type PlainCounterSeries } from '../../proxy/metrics.ts'
import { claimAt, JwtVerifier, tokenHints, type Refusal } from './jwt-verifier.ts'

/**
 * Per worker registry and route: the live tenant filters that read key files, and whether each
 * keeps keys older than a file on disk. igw_jwt_key_files_stale{route} says whether any does, and
 * is gone once none is left: set by each instance alone, a 1 outlived the filter that set it —
 * the route removed, or its keys moved to `secret`, by a reload — and alerted until a restart.
 */
const keyFileFilters = new WeakMap<Registry, Map<string, Map<object, boolean>>>()

/** The token after `prefix` (lower case) in the header's value; a value without it holds none. */
function tokenIn(value: string | string[] | undefined, prefix: string): string | undefined {
  if (typeof value !== 'string') return undefined
  if (value.length <= prefix.length || value.slice(0, prefix.length).toLowerCase() !== prefix) return undefined
  const token = value.slice(prefix.length).trim()
  return token === '' ? undefined : token
}

/** `s` without RFC 6265 §4.2.1 OWS (SP, HTAB) on either side; no other character is space there. */
function trimOws(s: string): string {
  let a = 0
  let b = s.length
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--
  return s.slice(a, b)
}

/**
 * The value of cookie `name` in a Cookie header (RFC 6265 §4.2.1: `a=1; b="2"`; node joins
 * repeated Cookie headers with "; "), its double quotes removed; undefined when absent or empty.
 * Names match exactly (case-sensitive) and the first occurrence wins, as browsers send the most
 * specific (longest path) cookie first (§5.4). A piece without "=" names no cookie.
 */
function cookieIn(header: string | string[] | undefined, name: string): string | undefined {
  if (typeof header !== 'string') return undefined
  // The next "=" is kept across pieces: searched afresh from each, "a;a;a;…;x=1" cost the square
  // of a header that may be 1 MiB long.
  let eq = -2
  for (let at = 0; at < header.length; ) {
    let end = header.indexOf(';', at)
    if (end === -1) end = header.length
    if (eq < at) eq = header.indexOf('=', at)
    if (eq === -1) return undefined // no piece left names a cookie
    if (eq < end && trimOws(header.slice(at, eq)) === name) {
      let value = trimOws(header.slice(eq + 1, end))
      if (value.length >= 2 && value.charCodeAt(0) === 34 && value.charCodeAt(value.length - 1) === 34) value = value.slice(1, -1)
      return value === '' ? undefined : value
    }
    at = end + 1
  }
  return undefined
}

/**
 * True when the request carries header `name` (lower case) more than once. Node keeps only the
 * first Authorization (and Proxy-Authorization) of a request and joins other repeated headers,
 * but the proxy forwards every copy: the tenant would come from the first token while a backend
 * that reads the last (or each) authenticates another user, of another tenant.
 */
function repeated(raw: string[], name: string): boolean {
  let seen = false
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!
    if (k.length !== name.length || k.toLowerCase() !== name) continue
    if (seen) return true
    seen = true
  }
  return false
}

/**
 * True when the URL's query carries an RFC 6750 §2.3 `access_token` parameter — also with its
 * name percent-encoded (`access%5Ftoken`), which backends decode as the same parameter: the
 * plain-text look alone let such a token past. Parsed only when the query could hold one.
 */
function tokenInQuery(url: string): boolean {
  const q = url.indexOf('?')
  return q !== -1 && (url.includes('access_token', q) || url.includes('%', q)) && new URLSearchParams(url.slice(q + 1)).has('access_token')
}

// RFC 6750 §3: error_description is a quoted-string of %x20-21 / %x23-5B / %x5D-7E only, so
// the reason's quotes (claim names: token has no "org.id" claim) must not end it early.
const NOT_DESCRIPTION_CHAR = /[^\x20\x21\x23-\x5b\x5d-\x7e]/g

/**
 * RFC 6750 §3: every challenge names the same protection space. The refused-token ones lacked the
 * realm the missing-token one sent, so a client that keys its credentials by realm (RFC 9110
 * §11.5) took them for another space's.
 */
const CHALLENGE = 'Bearer realm="igw"'
const INVALID_REQUEST = `${CHALLENGE}, error="invalid_request"`

function unauthenticated(reason: string): Decision {
  const description = reason.replace(NOT_DESCRIPTION_CHAR, "'")
  return errorReply('UNAUTHENTICATED', reason, undefined, { 'www-authenticate': `${CHALLENGE}, error="invalid_token", error_description="${description}"` })
}

/**
 * RFC 6750 §3.1: a request that carries no credentials gets a bare challenge — no error code
 * (`invalid_token` told clients and their auth libraries that a token was sent and refused, so
 * they dropped a token they never sent, or reported a revoked one). As Envoy's jwt_authn sends
 * `Bearer realm="…"`. The JSON body keeps UNAUTHENTICATED.
 */
const MISSING_TOKEN = errorReply('UNAUTHENTICATED', 'missing bearer token', undefined, { 'www-authenticate': CHALLENGE })

/**
 * igw_jwt_verifications_total's results (Envoy's jwt_authn allowed/denied): `ok`, `missing` (no
 * token: refused, or anonymous when optional), `invalid_request` (several tokens, one in the URL),
 * `invalid` (forged, malformed, of no configured key or algorithm), `expired`, `refused_claim`
 * (it verified, but a claim — iss, aud, nbf, exp, the tenant's — refused it).
 */
type Result = 'ok' | 'missing' | 'invalid_request' | Refusal
/** Where a verified token was read: `jwt.header`, or (none there) the `jwt.cookie` cookie. */
type TokenSource = 'header' | 'cookie'
const RESULTS: readonly Result[] = ['ok', 'missing', 'invalid_request', 'invalid', 'expired', 'refused_claim']
const VERIFICATIONS = 'igw_jwt_verifications_total'

/** The family, registered by every tenant filter (so /metrics always names it); series only for routes with `jwt`. */
function verificationCounter(registry: Registry): PlainCounter<'route' | 'result'> {
  const existing = registry.getSingleMetric(VERIFICATIONS)
  return existing instanceof PlainCounter ? (existing as PlainCounter<'route' | 'result'>) : new PlainCounter(registry, { name: VERIFICATIONS, help: 'Requests checked by the tenant filter\'s JWT auth, by route and result (ok, missing, invalid_request, invalid, expired, refused_claim); cached outcomes included', labelNames: ['route', 'result'] })
}

/** Each result's series of this route, resolved once: a request only adds to a number. */
function verificationSeries(c: PlainCounter<'route' | 'result'>, route: string): Record<Result, PlainCounterSeries> {
  return Object.fromEntries(RESULTS.map((r) => [r, c.series(route, r)])) as Record<Result, PlainCounterSeries>
}

/**
 * A tenant id a client may name: the syntax config ids have. Anything else (empty, padded,
 * "a, b" from a repeated header, non-ASCII, longer than 128, or the gateway's own "_anonymous"
 * and "_overflow" pools) never becomes a tenant, even with allowUnlisted.
 */
function wellFormed(id: string): boolean {
  return TENANT_ID.test(id) // the schema's own pattern, without a zod error per made-up id
}

/**
 * Why claim `claim` (holding `raw`) names no tenant. An integer beyond 2^53 was "not a string or an
 * integer": it is one, but JSON parsing already rounded it (9007199254740993 reads as …992), so
 * it could name another organisation's id — the issuer must send it as a string.
 */
function claimProblem(claim: string, raw: unknown): string {
  if (raw === undefined || raw === null) return `token has no "${claim}" claim`
  if (raw === '') return `token claim "${claim}" is empty`
  if (Number.isInteger(raw)) return `token claim "${claim}" is an integer beyond 2^53, which cannot be read exactly (send it as a string)`
  return `token claim "${claim}" is not a string or an integer`
}

class TenantFilter implements Filter {
  readonly name = 'tenant'
  readonly #cfg: TenantFilterConfig
  readonly #tenants: FilterDeps['config']['tenants']
  readonly #jwt: JwtVerifier | undefined
  readonly #verifications: Record<Result, PlainCounterSeries> | undefined
  readonly #prefix: string
  /**
   * The header a client names its tenant with, when the resolved tenant goes upstream under
   * another name (forwardHeader: x-org-id): not passed on. Sent as it came, the client's claim
   * reached the backend beside the tenant chosen — with JWT auth an unverified "x-tenant-id:
   * victim" next to the token's tenant, after a fallback to the default the tenant refused —
   * for any backend, middleware or log that reads the conventional name. (Never the token's own
   * header.)
   */
  readonly #dropClaimed: string | undefined
  readonly #logger: FilterDeps['logger']
  #closeKeyFiles = (): void => {}

  constructor(cfg: TenantFilterConfig, deps: FilterDeps) {
    this.#cfg = cfg
    this.#tenants = deps.config.tenants
    this.#dropClaimed = cfg.header !== cfg.forwardHeader && cfg.header !== cfg.jwt?.header ? cfg.header : undefined
    this.#prefix = cfg.jwt?.prefix.toLowerCase() ?? ''
    const log = (this.#logger = deps.logger)
    // 1 while a changed key file of this route's tenant filter does not load (the previous keys
    // stay in use: tokens of a new key are refused), else 0. The family is registered by every
    // tenant filter, so /metrics always names it (alerted on); series exist only for key files.
    const stale = gauge(deps.registry, {
      name: 'igw_jwt_key_files_stale',
      help: 'Routes whose tenant filter keeps older JWT keys because a changed key file (publicKeyFile, jwksFile) does not load (1), else 0',
      labelNames: ['route'],
      aggregator: 'max',
    })
    const verifications = verificationCounter(deps.registry)
    if (cfg.jwt === undefined) {
      this.#jwt = undefined
      return
    }
    this.#verifications = verificationSeries(verifications, deps.routeName)
    let onStale: ((stale: boolean) => void) | undefined
    let states: Map<object, boolean> | undefined
    let publish = (): void => {}
    if ([cfg.jwt, ...(cfg.jwt.keys ?? [])].some((k) => k.publicKeyFile !== undefined || k.jwksFile !== undefined)) {
      const route = deps.routeName
      let routes = keyFileFilters.get(deps.registry)
      if (routes === undefined) keyFileFilters.set(deps.registry, (routes = new Map()))
      const live = routes.get(route) ?? new Map<object, boolean>()
      routes.set(route, live)
      states = live
      publish = () => {
        if (live.size > 0) stale.labels(route).set([...live.values()].includes(true) ? 1 : 0)
        else {
          stale.remove(route)
          routes.delete(route)
        }
      }
      onStale = (s) => {
        if (!live.has(this)) return // closed
        live.set(this, s)
        publish()
      }
    }
    this.#jwt = new JwtVerifier(cfg.jwt, (file, message) => log.warn({ file, err: { message } }, 'tenant: a changed JWT key file cannot be loaded; the previous keys stay in use'), onStale)
    // Counted only once these keys loaded; a config refused after this filter was built closes it.
    states?.set(this, false)
    publish()
    this.#closeKeyFiles = () => {
      states?.delete(this)
      publish()
    }
  }

  /** A reload retired this instance (or the config it was built for was refused). */
  close(): void {
    this.#closeKeyFiles()
  }

  onRequest(ctx: RequestContext): Decision | Promise<Decision> {
    const jwt = this.#cfg.jwt
    if (jwt !== undefined && this.#jwt !== undefined) {
      const counts = this.#verifications!
      const value = ctx.req.headers[jwt.header]
      // RFC 6750 §3.1: a request with more than one credential is invalid_request (400).
      if (value !== undefined && repeated(ctx.req.rawHeaders, jwt.header)) {
        counts.invalid_request.inc()
        const why = `several ${jwt.header} headers (send one bearer token)`
        this.#logRefusal(ctx, 'invalid_request', why)
        return errorReply('BAD_REQUEST', why, undefined, { 'www-authenticate': INVALID_REQUEST })
      }
      const headerToken = tokenIn(value, this.#prefix)
      // A token in the URL (RFC 6750 §2.3 access_token), which the gateway does not read but many
      // backends do: beside the header's it authenticated another user than the tenant's token
      // (§2: one method per request), and alone an optional token let the request through as
      // anonymous (the default tenant) while the backend served the token's user.
      if (tokenInQuery(ctx.url)) {
        const why = headerToken !== undefined ? `a bearer token in both the ${jwt.header} header and the access_token query parameter (send one)` : `a bearer token in the access_token query parameter is not accepted (send it in the ${jwt.header} header${jwt.cookie === undefined ? '' : ` or the ${jwt.cookie} cookie`})`
        counts.invalid_request.inc()
        this.#logRefusal(ctx, 'invalid_request', why)
        return errorReply('BAD_REQUEST', why, undefined, { 'www-authenticate': INVALID_REQUEST })
      }
      // The cookie only when the header holds no token (Envoy's jwt_authn: from_headers before
      // from_cookies). Browsers send cookies unasked, so one beside the header's token is no second
      // credential to refuse, as the URL's is: a stale session cookie would lock such clients out.
      const source: TokenSource = headerToken !== undefined ? 'header' : 'cookie'
      const token = headerToken ?? (jwt.cookie === undefined ? undefined : cookieIn(ctx.req.headers.cookie, jwt.cookie))
      if (token !== undefined) {
        const cached = this.#jwt.cached(token)
        if (cached !== undefined) return this.#fromOutcome(ctx, token, source, cached)
        return this.#jwt.verify(token).then((o) => this.#fromOutcome(ctx, token, source, o))
      }
      counts.missing.inc()
      if (jwt.required) return MISSING_TOKEN
      // An optional token that was not sent: the request is anonymous (the default tenant, if
      // any). The tenant header is no credential: anyone could name another tenant with it and
      // read its cache entries, spend its quota, and reach the backend as that tenant.
      return this.#admit(ctx, undefined)
    }
    const header = ctx.req.headers[this.#cfg.header]
    return this.#admit(ctx, typeof header === 'string' ? header : undefined)
  }

  #fromOutcome(ctx: RequestContext, token: string, source: TokenSource, o: Awaited<ReturnType<JwtVerifier['verify']>>): Decision {
    const counts = this.#verifications!
    if (!o.ok) {
      counts[o.kind].inc()
      this.#logRefusal(ctx, o.kind, o.reason, o.kind === 'invalid' ? token : undefined, source)
      return unauthenticated(o.reason)
    }
    const claim = this.#cfg.jwt!.claim
    const raw = claimAt(o.claims, claim)
    // Issuers often number their organisations ({"org_id": 42}): an integer names tenant "42".
    const value = typeof raw === 'number' && Number.isSafeInteger(raw) ? String(raw) : raw
    if (typeof value !== 'string' || value === '') {
      counts.refused_claim.inc()
      const why = claimProblem(claim, raw)
      this.#logRefusal(ctx, 'refused_claim', why, undefined, source)
      return unauthenticated(why)
    }
    counts.ok.inc()
    ctx.claims = o.claims
    return this.#admit(ctx, value)
  }

  /**
   * Why a request was refused, at debug (where Envoy's jwt_authn logs its verdicts): the reason
   * went to the client alone, the access line says only UNAUTHENTICATED — an operator had no way
   * to tell an unknown kid from a wrong issuer without the client's response. Never the token;
   * for one no key verified, the kid, alg and issuer its (unverified) header and payload name;
   * for a token that was read, where it came from (a stale cookie beside no header, say).
   */
  #logRefusal(ctx: RequestContext, result: Result, reason: string, token?: string, source?: TokenSource): void {
    if (!this.#logger.isLevelEnabled('debug')) return
    ctx.log.debug({ jwt: { result, reason, ...(source === undefined ? {} : { source }), ...(token === undefined ? {} : tokenHints(token)) } }, 'tenant: request refused')
  }

  #admit(ctx: RequestContext, named: string | undefined): Decision {
    let tenant = named
    if (tenant === undefined || !(Object.hasOwn(this.#tenants, tenant) || (this.#cfg.allowUnlisted && wellFormed(tenant)))) {
      if (this.#cfg.defaultTenant === undefined) {
        if (tenant === undefined) return errorReply('UNKNOWN_TENANT', this.#cfg.jwt !== undefined ? 'no tenant given (send a bearer token)' : `no tenant given (send ${this.#cfg.header} or a token)`)
        const shown = tenant.slice(0, 128)
        return errorReply('UNKNOWN_TENANT', this.#cfg.allowUnlisted ? `invalid tenant id "${shown}" (1-128 letters, digits, "_", ".", ":", "@" or "-", starting with a letter or digit)` : `unknown tenant "${shown}"`)
      }
      tenant = this.#cfg.defaultTenant
    }
    ctx.tenant = tenant
    ctx.tier = ctx.principalTier = configuredTier(this.#tenants, tenant)
    ctx.setUpstreamHeader(this.#cfg.forwardHeader, tenant)
    if (this.#dropClaimed !== undefined) ctx.setUpstreamHeader(this.#dropClaimed, null)
    return undefined
  }
}

export const tenantFilter: FilterModule<TenantFilterConfig> = {
  create: (cfg, deps) => new TenantFilter(cfg, deps),
}
