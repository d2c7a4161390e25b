// Cache keys, pure: route + what the upstream is asked (path, Host) + operation identity +
// canonical variables + extensions + operation name + tenant + vary headers/claims/scopes. The tenant is
// always a component: an entry can only be found again by a request of the same tenant.
import { createHash } from 'node:crypto'
import { print, type DocumentNode } from 'graphql'

/** JSON with object keys sorted at every level, so {a,b} and {b,a} key the same entry. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null'
  if (Array.isArray(v)) {
    let s = '['
    for (let i = 0; i < v.length; i++) s += (i ? ',' : '') + canonicalJson(v[i] === undefined ? null : v[i])
    return `${s}]`
  }
  const o = v as Record<string, unknown>
  const keys = Object.keys(o).sort()
  let s = '{'
  let first = true
  for (const k of keys) {
    if (o[k] === undefined) continue
    s += `${first ? '' : ','}${JSON.stringify(k)}:${canonicalJson(o[k])}`
    first = false
  }
  return `${s}}`
}

/** A request whose variables hold such a number is not keyed at all: the cache is bypassed. */
export { hasInexactNumber } from '../../config/json-numbers.ts'

const normalized = new WeakMap<DocumentNode, string>()

/** sha256 of the printed document: formatting and comments do not split the cache. */
export function normalizedDocumentHash(doc: DocumentNode): string {
  let h = normalized.get(doc)
  if (h === undefined) {
    h = createHash('sha256').update(print(doc)).digest('hex')
    normalized.set(doc, h)
  }
  return h
}

export interface KeyParts {
  route: string
  /**
   * What the upstream is asked besides the GraphQL request (requestTarget): the path and the
   * other query parameters. A route (pathPrefix `/`, say) reaches every path of its upstream:
   * `/v1/graphql` and `/v2/graphql`, or Shopify's `/admin/api/2024-01/graphql.json` and
   * `…/2024-10/…`, answer one query differently.
   */
  target?: string
  /**
   * The client's Host (proxy/router.ts siteOf) when the upstream is sent it (no hostRewrite): a multi-site
   * backend (virtual hosts) answers one query per site.
   */
  host?: string
  /** A client's X-Forwarded-Host (proxy/router.ts siteOf) that the proxy relays (forwarded.trustIncoming). */
  forwardedHost?: string
  /** "p:<manifest id>" or "d:<normalized document hash>". */
  operation: string
  operationName: string | undefined
  tenant: string | undefined
  variables: Record<string, unknown> | undefined
  /**
   * The request's `extensions` as forwarded (the backend reads them: locale, client name, feature
   * flags; the demo backend's `echo { extensions }`). Unkeyed, one client's answer was served to
   * another that sent other extensions; a GET's `extensions` parameter is no part of the target.
   */
  extensions?: Record<string, unknown>
  /** Values of the configured vary headers, in config order (undefined: absent). */
  headers: readonly (string | undefined)[]
  /** Values of the configured vary claims, in config order. */
  claims: readonly unknown[]
  /** Sorted token scopes when scopes admit an authenticated request. */
  scopes: string | undefined
  /** The JSON media types the request accepts (acceptClass); '' or absent: both. */
  media?: string
  /**
   * The configured vary header names and claim paths. The values alone cannot tell `x-a: alice`
   * from `x-b: alice`: after a reload that renames a vary header, the shared L2 (which outlives
   * the reload, and is shared with proxies on the old config) would serve one's entry to the other.
   */
  varyNames?: string
}

/** The key part naming a route's vary settings (computed once per filter; '' when it has none). */
export function varyNamesPart(vary: { readonly headers: readonly string[]; readonly claims: readonly string[] }): string {
  return vary.headers.length > 0 || vary.claims.length > 0 ? `\nv:${JSON.stringify([vary.headers, vary.claims])}` : ''
}

/**
 * One string per distinct response. Components are separated by "\n", which none of them can
 * contain unescaped (JSON escapes it; header values and names cannot hold it).
 */
export function cacheKey(p: KeyParts): string {
  const k = [p.route, p.target ?? '']
  // Marked: neither can be read as the operation part that follows (`p:` / `d:`).
  if (p.host !== undefined) k.push(`H:${p.host}`)
  if (p.forwardedHost !== undefined) k.push(`F:${p.forwardedHost}`)
  k.push(p.operation, p.operationName ?? '', p.tenant === undefined ? '-' : `t:${p.tenant}`)
  k.push(p.variables === undefined || Object.keys(p.variables).length === 0 ? '{}' : canonicalJson(p.variables))
  // Marked, and only when there are some: keys of requests without extensions stay as they were.
  if (p.extensions !== undefined && Object.keys(p.extensions).length > 0) k.push(`x:${canonicalJson(p.extensions)}`)
  if (p.varyNames) k.push(p.varyNames.slice(1)) // varyNamesPart starts with its separator
  for (const h of p.headers) k.push(h === undefined ? '-' : `h:${h}`)
  for (const c of p.claims) k.push(c === undefined ? '-' : `c:${canonicalJson(c)}`)
  if (p.scopes !== undefined) k.push(`s:${p.scopes}`)
  if (p.media) k.push(`a:${p.media}`)
  // Joined, not concatenated: a key built with += is a tree of string pieces, which V8 keeps
  // (as the LRU's key) at about three times the flat string's size.
  return k.join('\n')
}

/** GraphQL over HTTP's GET parameters: keyed by what they mean (document, variables…), not as written. */
const GRAPHQL_GET_PARAMETERS = new Set(['query', 'operationName', 'variables', 'extensions', 'documentId'])

/**
 * The request target as a key part: a POST's as sent (its query string reaches the upstream
 * untouched); a GET's path and the query parameters that are not GraphQL's, in their order.
 */
export function requestTarget(url: string, get: boolean): string {
  const q = url.indexOf('?')
  if (q === -1 || !get) return url
  let rest = ''
  for (const [name, value] of new URLSearchParams(url.slice(q + 1))) {
    if (GRAPHQL_GET_PARAMETERS.has(name)) continue
    rest += `${rest === '' ? '?' : '&'}${encodeURIComponent(name)}=${encodeURIComponent(value)}`
  }
  return url.slice(0, q) + rest
}

// The Accept classes (shared with the persisted filter's strict APQ answers) live in proxy/errors.ts.
export { acceptClass } from '../../proxy/errors.ts'

/** The scopes a token grants, from a space-separated string or an array claim. */
export function tokenScopes(claim: unknown): string[] | undefined {
  if (typeof claim === 'string') return claim.split(' ').filter((s) => s !== '')
  if (Array.isArray(claim) && claim.every((s) => typeof s === 'string')) return claim as string[]
  return undefined
}

/** Sorted scopes joined by spaces when every scope is allowed; undefined when one is not. */
export function admittedScopes(scopes: readonly string[], allowed: ReadonlySet<string>): string | undefined {
  for (const s of scopes) if (!allowed.has(s)) return undefined
  return [...new Set(scopes)].sort().join(' ')
}
