// Bearer-token verification with jose. Verifying a signature costs tens of microseconds
// (RS256) to a millisecond; clients reuse tokens, so results are cached until the token's
// own expiry (positives) or briefly (negatives, so a flood of bad tokens stays cheap).
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { LRUCache } from 'lru-cache'
import type { z } from 'zod'
import type { tenantJwtConfig } from '../../config/filters/tenant.ts'
import { verifyWithJwks } from '../../config/jwks-verify.ts'
import { fileStamp } from '../../config/file-stamp.ts'

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
/**
 * How often the key files are looked at again (one stat each). Keys rotate: an issuer that
 * starts signing with a new kid, or drops a compromised key, is followed within about this long
 * without a restart or a config change (the files are not part of the config document).
 */
const KEY_FILE_CHECK_MS = 1_000

type Keys = { secret?: Uint8Array; publicKey?: KeyObject; jwks?: JWTVerifyGetKey }

function loadPublicKey(path: string): KeyObject {
  return createPublicKey(readFileSync(path, 'utf8'))
}

function loadJwks(path: string): JWTVerifyGetKey {
  const jwks = JSON.parse(readFileSync(path, 'utf8')) as JSONWebKeySet
  if (!Array.isArray(jwks.keys)) throw new Error(`${path}: not a JWKS document (no "keys" array)`)
  return createLocalJWKSet(jwks)
}

export class JwtVerifier {
  readonly #cfg: TenantJwtConfig
  #keys: Keys
  /** Stamps of the key files as last loaded, and when they were last looked at. */
  #stamps: { publicKey: string; jwks: string } = { publicKey: '', jwks: '' }
  #checkedAt = 0
  /** Bumped by every key reload: an outcome decided with the keys before it is not cached. */
  #generation = 0
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
    if (cfg.publicKeyFile !== undefined) {
      this.#stamps.publicKey = fileStamp(cfg.publicKeyFile)
      this.#keys.publicKey = loadPublicKey(cfg.publicKeyFile)
    }
    if (cfg.jwksFile !== undefined) {
      this.#stamps.jwks = fileStamp(cfg.jwksFile)
      this.#keys.jwks = loadJwks(cfg.jwksFile)
    }
    this.#checkedAt = Date.now()
  }

  /**
   * Reload a key file that changed on disk (at most one stat per file per second). Outcomes
   * decided with the old keys are dropped: a token of a newly added kid refused a moment ago
   * verifies now, and one signed by a removed key is no longer served from the cache. A file
   * caught half-written does not load: the old keys stay and it is tried again next time.
   */
  #reloadChangedKeys(): void {
    const now = Date.now()
    if (now - this.#checkedAt < KEY_FILE_CHECK_MS) return
    this.#checkedAt = now
    const cfg = this.#cfg
    let keys: Keys | undefined
    if (cfg.publicKeyFile !== undefined) {
      const stamp = fileStamp(cfg.publicKeyFile)
      if (stamp !== '' && stamp !== this.#stamps.publicKey) {
        try {
          const publicKey = loadPublicKey(cfg.publicKeyFile)
          keys = { ...this.#keys, publicKey }
          this.#stamps.publicKey = stamp
        } catch {}
      }
    }
    if (cfg.jwksFile !== undefined) {
      const stamp = fileStamp(cfg.jwksFile)
      if (stamp !== '' && stamp !== this.#stamps.jwks) {
        try {
          const jwks = loadJwks(cfg.jwksFile)
          keys = { ...(keys ?? this.#keys), jwks }
          this.#stamps.jwks = stamp
        } catch {}
      }
    }
    if (keys === undefined) return
    this.#keys = keys
    this.#generation++
    this.#cache.clear()
  }

  /** The cached outcome for a token, or undefined when it must be verified. */
  cached(token: string): Outcome | undefined {
    if (this.#stamps.jwks !== '' || this.#stamps.publicKey !== '') this.#reloadChangedKeys()
    return this.#cache.get(token)
  }

  async verify(token: string): Promise<Outcome> {
    this.#reloadChangedKeys()
    const hit = this.#cache.get(token)
    if (hit) return hit
    const generation = this.#generation
    const outcome = await this.#verify(token)
    if (generation !== this.#generation) return outcome
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
        const { payload } = typeof key === 'function' ? await verifyWithJwks(token, key, options) : await jwtVerify(token, key, options)
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
