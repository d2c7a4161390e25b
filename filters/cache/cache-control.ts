// What an upstream response allows a shared cache to do, pure. We are a shared cache:
// s-maxage wins over max-age; private, no-store and no-cache mean "do not store".

export interface StoreDecision {
  /** Seconds the entry may be served fresh; 0 with a reason when it must not be stored. */
  ttlSeconds: number
  reason: string | undefined
}

export function parseCacheControl(value: string | string[] | undefined): Map<string, string | true> {
  const out = new Map<string, string | true>()
  if (value === undefined) return out
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const part of line.split(',')) {
      const t = part.trim()
      if (t === '') continue
      const eq = t.indexOf('=')
      if (eq === -1) out.set(t.toLowerCase(), true)
      else out.set(t.slice(0, eq).trim().toLowerCase(), t.slice(eq + 1).trim().replace(/^"|"$/g, ''))
    }
  }
  return out
}

function seconds(v: string | true | undefined): number | undefined {
  if (typeof v !== 'string' || !/^\d+$/.test(v)) return undefined
  return Number(v)
}

/**
 * May this response be stored, and for how long? `ttlSeconds` is the configured TTL (per-id
 * policy or route), capped by the upstream's s-maxage / max-age.
 */
export function storeDecision(status: number, headers: Record<string, string | string[] | undefined>, ttlSeconds: number): StoreDecision {
  if (status !== 200) return { ttlSeconds: 0, reason: 'status' }
  if (headers['set-cookie'] !== undefined) return { ttlSeconds: 0, reason: 'set_cookie' }
  const enc = headers['content-encoding']
  if (enc !== undefined && enc !== 'identity') return { ttlSeconds: 0, reason: 'encoded' }
  const vary = headers.vary
  if (vary !== undefined && (Array.isArray(vary) ? vary.join(',') : vary).includes('*')) return { ttlSeconds: 0, reason: 'vary' }
  const cc = parseCacheControl(headers['cache-control'])
  if (cc.has('no-store')) return { ttlSeconds: 0, reason: 'no_store' }
  if (cc.has('private')) return { ttlSeconds: 0, reason: 'private' }
  if (cc.has('no-cache')) return { ttlSeconds: 0, reason: 'no_cache' }
  let ttl = ttlSeconds
  const cap = seconds(cc.get('s-maxage')) ?? seconds(cc.get('max-age'))
  if (cap !== undefined && cap < ttl) ttl = cap
  if (ttl <= 0) return { ttlSeconds: 0, reason: 'max_age_0' }
  return { ttlSeconds: ttl, reason: undefined }
}

/**
 * The upstream forbids serving the response once it is stale (RFC 9111 5.2.2.2, 5.2.2.8): no
 * stale-while-revalidate, no stale-if-error for it, whatever the route configures.
 */
export function mustRevalidate(cacheControl: string | string[] | undefined): boolean {
  if (cacheControl === undefined) return false
  const cc = parseCacheControl(cacheControl)
  return cc.has('must-revalidate') || cc.has('proxy-revalidate')
}
