// Bearer-token verification with jose. Verifying a signature costs tens of microseconds
// (RS256) to a millisecond; clients reuse tokens, so results are cached until the token's
// own expiry (positives) or briefly (negatives, so a flood of bad tokens stays cheap).
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { LRUCache } from 'lru-cache'
import type { z } from 'zod'
import type { tenantJwtConfig } from '../../config/filters/tenant.ts'

export type TenantJwtConfig = z.infer<typeof tenantJwtConfig>

export class TokenError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'TokenError'
  }
}

/** `notBefore`: the token's "nbf" (seconds) when that claim alone refused it (it is early). */
type Outcome = { ok: true; claims: JWTPayload } | { ok: false; reason: string; notBefore?: number }

const MAX_POSITIVE_TTL_MS = 5 * 60_000
const NEGATIVE_TTL_MS = 30_000
/**
 * The cache is bounded by the bytes of the tokens it keys on, not only by their count: a flood
 * of distinct garbage tokens as large as the header limit (16 KiB, up to 1 MiB) would otherwise
 * pin 20 000 of them — hundreds of MB per worker thread and route.
 */
const CACHE_MAX_BYTES = 8 * 1024 * 1024
const ENTRY_OVERHEAD_BYTES = 128

export class JwtVerifier {
  readonly #cfg: TenantJwtConfig
  readonly #keys: { secret?: Uint8Array; publicKey?: KeyObject; jwks?: JWTVerifyGetKey }
  readonly #cache = new LRUCache<string, Outcome>({
    max: 20_000,
    maxSize: CACHE_MAX_BYTES,
    sizeCalculation: (_o, token) => token.length + ENTRY_OVERHEAD_BYTES,
    ttlAutopurge: false,
  })

  constructor(cfg: TenantJwtConfig) {
    this.#cfg = cfg
    this.#keys = {}
    if (cfg.secret !== undefined) this.#keys.secret = new TextEncoder().encode(cfg.secret)
    if (cfg.publicKeyFile !== undefined) this.#keys.publicKey = createPublicKey(readFileSync(cfg.publicKeyFile, 'utf8'))
    if (cfg.jwksFile !== undefined) {
      const jwks = JSON.parse(readFileSync(cfg.jwksFile, 'utf8')) as JSONWebKeySet
      if (!Array.isArray(jwks.keys)) throw new Error(`${cfg.jwksFile}: not a JWKS document (no "keys" array)`)
      this.#keys.jwks = createLocalJWKSet(jwks)
    }
  }

  /** The cached outcome for a token, or undefined when it must be verified. */
  cached(token: string): Outcome | undefined {
    return this.#cache.get(token)
  }

  async verify(token: string): Promise<Outcome> {
    const hit = this.#cache.get(token)
    if (hit) return hit
    const outcome = await this.#verify(token)
    if (outcome.ok) {
      const exp = typeof outcome.claims.exp === 'number' ? outcome.claims.exp * 1000 - Date.now() : MAX_POSITIVE_TTL_MS
      if (exp > 0) this.#cache.set(token, outcome, { ttl: Math.min(exp, MAX_POSITIVE_TTL_MS) })
    } else {
      const ttl = outcome.notBefore === undefined ? NEGATIVE_TTL_MS : Math.min(NEGATIVE_TTL_MS, (outcome.notBefore - this.#cfg.clockToleranceSec) * 1000 - Date.now())
      if (ttl > 0) this.#cache.set(token, outcome, { ttl })
    }
    return outcome
  }

  async #verify(token: string): Promise<Outcome> {
    const options = {
      algorithms: this.#cfg.algorithms,
      issuer: this.#cfg.issuer,
      audience: this.#cfg.audience,
      clockTolerance: this.#cfg.clockToleranceSec,
      requiredClaims: this.#cfg.requireExpiration ? ['exp'] : undefined,
    }
    const keys: (Uint8Array | KeyObject | JWTVerifyGetKey)[] = []
    if (this.#keys.jwks) keys.push(this.#keys.jwks)
    if (this.#keys.publicKey) keys.push(this.#keys.publicKey)
    if (this.#keys.secret) keys.push(this.#keys.secret)
    let last: unknown
    for (const key of keys) {
      try {
        const { payload } =
          typeof key === 'function' ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options)
        return { ok: true, claims: payload }
      } catch (err) {
        last = err
        // A wrong key type or unknown kid means "try the next key"; anything else is final.
        if (!(err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JWKSNoMatchingKey || err instanceof TypeError || (err instanceof joseErrors.JOSENotSupported))) break
      }
    }
    // A token refused only for being early is not refused from the cache once it is due:
    // jose's error carries the (verified) payload, so its nbf is read there, not decoded again.
    if (last instanceof joseErrors.JWTClaimValidationFailed && last.claim === 'nbf' && typeof last.payload.nbf === 'number') {
      return { ok: false, reason: describe(last), notBefore: last.payload.nbf }
    }
    return { ok: false, reason: describe(last) }
  }
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired'
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" rejected: ${err.reason}`
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature does not verify'
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm not allowed'
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'token is malformed'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no key matches the token'
  return 'token rejected'
}

/** Read a claim by dotted path ("org.id"). */
export function claimAt(claims: JWTPayload, path: string): unknown {
  let cur: unknown = claims
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined
    cur = (cur as Record<string, unknown>)[part]
  }
  return cur
}
