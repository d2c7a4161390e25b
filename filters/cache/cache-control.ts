// What an upstream response allows a shared cache to do, pure. We are a shared cache:
// s-maxage wins over max-age; private, no-store and no-cache mean "do not store".

export interface StoreDecision {
  /** Seconds the entry may be served fresh; 0 with a reason when it must not be stored. */
  ttlSeconds: number
  reason: string | undefined
  /** How old the response already is (the upstream's Age): the entry's Age starts there. */
  ageSeconds: number
}

export function parseCacheControl(value: string | string[] | undefined): Map<string, string | true> {
  const out = new Map<string, string | true>()
  if (value === undefined) return out
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const part of line.split(',')) {
      const t = part.trim()
      if (t === '') continue
      const eq = t.indexOf('=')
      const name = (eq === -1 ? t : t.slice(0, eq).trim()).toLowerCase()
      const v: string | true = eq === -1 ? true : t.slice(eq + 1).trim().replace(/^"|"$/g, '')
      const prev = out.get(name)
      // A directive given twice with different values (`max-age=0, max-age=60`, often two
      // header lines from two layers) is invalid: '' is no number, so it counts as stale (RFC
      // 9111 4.2.1). The last one won: a layer's `max-age=0` was overridden by the other's 60.
      out.set(name, prev === undefined || prev === v ? v : '')
    }
  }
  return out
}

/** undefined: absent; NaN: present but not delta-seconds (`-1`, `1.5`, `abc`, a conflict). */
function seconds(v: string | true | undefined): number | undefined {
  if (v === undefined) return undefined
  return typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : Number.NaN
}

/** One value of a header that may have arrived more than once: the first. */
function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/**
 * The response's age when it reached us: its Age field (RFC 9111 4.2.3; a cache or CDN in
 * front of the upstream sets it). Not a non-negative integer → ignored (5.1).
 */
export function initialAge(headers: Record<string, string | string[] | undefined>): number {
  // A list ("20, 40"): its first member (5.1). Dates below hold commas of their own.
  const age = seconds(single(headers.age)?.split(',')[0]!.trim())
  return age === undefined || Number.isNaN(age) ? 0 : age
}

/**
 * The upstream's freshness lifetime (RFC 9111 4.2.1): s-maxage, else max-age, else Expires minus
 * Date (our clock when Date is missing or invalid). An Expires that is not a date ("0") means
 * already expired (5.3). Undefined: the upstream said nothing; the configured TTL applies.
 */
function freshnessLifetime(cc: Map<string, string | true>, headers: Record<string, string | string[] | undefined>, now: number): number | undefined {
  const max = seconds(cc.get('s-maxage')) ?? seconds(cc.get('max-age'))
  // Invalid freshness information counts as stale (RFC 9111 4.2.1): `max-age=-1`, a common
  // "never cache", was ignored and the response kept for the configured TTL.
  if (max !== undefined) return Number.isNaN(max) ? 0 : max
  const expires = single(headers.expires)
  if (expires === undefined) return undefined
  const at = Date.parse(expires)
  if (Number.isNaN(at)) return 0
  const date = Date.parse(single(headers.date) ?? '')
  return Math.floor((at - (Number.isNaN(date) ? now : date)) / 1000)
}

/**
 * Request headers a response may vary on and still be stored without them in the key: the
 * cache keeps identity bodies only (every client takes those, whatever its Accept-Encoding),
 * and the key holds which JSON media types the request's Accept admits (cache-key.ts
 * acceptClass), which is all a GraphQL server's Accept picks between for a stored result.
 */
const VARY_NEUTRAL = new Set(['accept-encoding', 'accept'])

/**
 * Does the cache key hold every request header the response varies on (RFC 9111 4.1)? The
 * key holds the route's `vary.headers` (lower-case) only: a response that says
 * `Vary: Accept-Language` while the key ignores that header would be served in one language to
 * requests in another (or, `Vary: Origin`, with one site's CORS grant to another). `*` never is.
 */
export function varyIsKeyed(vary: string | string[], keyedHeaders: readonly string[]): boolean {
  for (const line of Array.isArray(vary) ? vary : [vary]) {
    for (const part of line.split(',')) {
      const name = part.trim().toLowerCase()
      if (name === '' || VARY_NEUTRAL.has(name)) continue
      if (name === '*' || !keyedHeaders.includes(name)) return false
    }
  }
  return true
}

/** `application/json`, `application/graphql-response+json` or another `+json` type. */
export function isJsonType(contentType: string): boolean {
  const semi = contentType.indexOf(';')
  const t = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
  return t === 'application/json' || (t.startsWith('application/') && t.endsWith('+json'))
}

/**
 * May this response be stored, and for how long? `ttlSeconds` is the configured TTL (per-id
 * policy or route), capped by what is left of the upstream's freshness lifetime: s-maxage /
 * max-age / Expires less the Age the response already has. `keyedHeaders`: the request headers
 * the key holds (the route's vary.headers), which a response's Vary may name.
 */
export function storeDecision(status: number, headers: Record<string, string | string[] | undefined>, ttlSeconds: number, now = Date.now(), keyedHeaders: readonly string[] = []): StoreDecision {
  if (status !== 200) return { ttlSeconds: 0, reason: 'status', ageSeconds: 0 }
  if (headers['set-cookie'] !== undefined) return { ttlSeconds: 0, reason: 'set_cookie', ageSeconds: 0 }
  const enc = headers['content-encoding']
  if (enc !== undefined && enc !== 'identity') return { ttlSeconds: 0, reason: 'encoded', ageSeconds: 0 }
  // Decided at the head: a stream (multipart incremental delivery, SSE, NDJSON) is no entry, and
  // the misses waiting on its key went upstream only when it ended (a live stream: never).
  const type = single(headers['content-type'])
  if (type !== undefined && !isJsonType(type)) return { ttlSeconds: 0, reason: 'not_json', ageSeconds: 0 }
  const vary = headers.vary
  if (vary !== undefined && !varyIsKeyed(vary, keyedHeaders)) return { ttlSeconds: 0, reason: 'vary', ageSeconds: 0 }
  const cc = parseCacheControl(headers['cache-control'])
  if (cc.has('no-store')) return { ttlSeconds: 0, reason: 'no_store', ageSeconds: 0 }
  if (cc.has('private')) return { ttlSeconds: 0, reason: 'private', ageSeconds: 0 }
  if (cc.has('no-cache')) return { ttlSeconds: 0, reason: 'no_cache', ageSeconds: 0 }
  let ttl = ttlSeconds
  const age = initialAge(headers)
  const lifetime = freshnessLifetime(cc, headers, now)
  if (lifetime !== undefined) {
    if (lifetime <= 0) return { ttlSeconds: 0, reason: 'max_age_0', ageSeconds: age }
    if (lifetime - age <= 0) return { ttlSeconds: 0, reason: 'stale', ageSeconds: age }
    if (lifetime - age < ttl) ttl = lifetime - age
  }
  if (ttl <= 0) return { ttlSeconds: 0, reason: 'max_age_0', ageSeconds: age }
  return { ttlSeconds: ttl, reason: undefined, ageSeconds: age }
}

/** Seconds past its freshness the upstream lets a shared cache serve a response from it. */
export interface StaleLimits {
  whileRevalidate: number
  ifError: number
}

const NO_STALE: StaleLimits = { whileRevalidate: 0, ifError: 0 }

/**
 * How far past its freshness the upstream lets us serve the response (undefined: it says
 * nothing, the route's windows apply). must-revalidate / proxy-revalidate: not at all (RFC 9111
 * 5.2.2.2, 5.2.2.8). s-maxage carries proxy-revalidate's meaning for a shared cache (5.2.2.10):
 * only as long as its own stale-while-revalidate / stale-if-error (RFC 5861) allow, as Vercel's
 * `s-maxage=1, stale-while-revalidate=59` asks; without them, not at all.
 */
export function staleLimits(cacheControl: string | string[] | undefined): StaleLimits | undefined {
  if (cacheControl === undefined) return undefined
  const cc = parseCacheControl(cacheControl)
  if (cc.has('must-revalidate') || cc.has('proxy-revalidate')) return NO_STALE
  if (!cc.has('s-maxage')) return undefined
  const window = (name: string): number => {
    const v = seconds(cc.get(name))
    return v === undefined || Number.isNaN(v) ? 0 : v
  }
  return { whileRevalidate: window('stale-while-revalidate'), ifError: window('stale-if-error') }
}
