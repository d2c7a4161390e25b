// Bearer-token verification with jose. Verifying a signature costs tens of microseconds
// (RS256) to a millisecond; clients reuse tokens, so results are cached until the token's
// own expiry (positives) or briefly (negatives, so a flood of bad tokens stays cheap).
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
export { claimAt } from '../../proxy/claims.ts'
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { LRUCache } from 'lru-cache'
import type { z } from 'zod'
import type { tenantJwtConfig } from '../../config/filters/tenant.ts'
import { localJwks, verifyWithJwks } from '../../config/jwks-verify.ts'
import { fileStamp } from '../../config/file-stamp.ts'

/** Where the token is read from (its header's `prefix`) is the filter's business, not the verifier's. */
export type TenantJwtConfig = Omit<z.infer<typeof tenantJwtConfig>, 'prefix'>

export class TokenError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'TokenError'
  }
}

/**
 * Why a token was refused, for igw_jwt_verifications_total: `expired`, `refused_claim` (its
 * signature verified, a claim did not: iss, aud, nbf, a required exp) or `invalid` (anything else).
 */
export type Refusal = 'invalid' | 'expired' | 'refused_claim'

/** `notBefore`: the token's "nbf" (seconds) when that claim alone refused it (it is early). */
type Outcome = { ok: true; claims: JWTPayload } | { ok: false; kind: Refusal; reason: string; notBefore?: number }

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
/** The stamp of a key file that cannot be read (fileStamp's ''). */
const UNREADABLE = 'unreadable'

type Keys = { secret?: Uint8Array; publicKeys?: KeyObject[]; jwks?: JWTVerifyGetKey }

/**
 * The text of a key file; a failure names the field and the file. A parse error never quotes
 * the file (V8's JSON errors carry a snippet of the text: a symmetric JWKS key's "k" would reach
 * the logs and the reload answer), only where it is.
 */
function readKeyFile(field: string, path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new Error(`${field} "${path}": cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
}

/** A PEM block that holds a key (SPKI, PKCS#1, a certificate, or a private key to derive one). */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g
const KEY_LABEL = /(?:PUBLIC KEY|PRIVATE KEY|^CERTIFICATE)$/

/**
 * Every key of the PEM file: an issuer's old and new key side by side while tokens of both are
 * in flight. createPublicKey reads the first block only: the key appended for a rotation was
 * dropped without a word, and its tokens refused as "token signature does not verify".
 */
function loadPublicKeys(path: string, where: string): KeyObject[] {
  const text = readKeyFile(`${where}publicKeyFile`, path)
  const keys: KeyObject[] = []
  for (const [block, label] of text.matchAll(PEM_BLOCK)) {
    if (!KEY_LABEL.test(label!)) continue // "EC PARAMETERS" beside an EC key, and the like
    let key: KeyObject
    try {
      key = createPublicKey(block)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      throw new Error(`${where}publicKeyFile "${path}": key #${keys.length + 1} is not a PEM public key${code ? ` (${code})` : ''}`)
    }
    const unusable = unusableKey(key) ?? verifiesNothing(key)
    if (unusable !== undefined) throw new Error(`${where}publicKeyFile "${path}": key #${keys.length + 1} is ${unusable}`)
    keys.push(key)
  }
  if (keys.length === 0) throw new Error(`${where}publicKeyFile "${path}": not a PEM public key`)
  return keys
}

/** jose refuses RSA keys under 2048 bits for RS* and PS*: such a key could never verify a token. */
const MIN_RSA_BITS = 2048

function unusableKey(key: KeyObject): string | undefined {
  const bits = key.asymmetricKeyDetails?.modulusLength
  if ((key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') && bits !== undefined && bits < MIN_RSA_BITS) {
    return `an RSA key of ${bits} bits (at least ${MIN_RSA_BITS})`
  }
  return undefined
}

/**
 * A PEM key no JWS algorithm verifies (jose's EdDSA is Ed25519 only; secp256k1, X25519 or DSA
 * keys sign nothing it offers): it loaded, and every token was refused as "no key matches the
 * token" — an Ed448 key even passed the algorithms check, counted as EdDSA.
 */
function verifiesNothing(key: KeyObject): string | undefined {
  if (algorithmsOf(key).length > 0) return undefined
  const curve = key.asymmetricKeyDetails?.namedCurve
  return `of type ${key.asymmetricKeyType ?? 'unknown'}${curve === undefined ? '' : ` on ${curve}`}, which no JWS algorithm of this gateway verifies (RS*, PS*, ES256/384/512 on P-256/384/521, EdDSA on Ed25519)`
}

const HMAC = ['HS256', 'HS384', 'HS512']
const EC_ALGORITHM: Record<string, string> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' }

/** The JWS algorithms a public key can verify, by its type alone (jose may be stricter, never laxer). */
function algorithmsOf(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512']
    case 'ec': {
      const alg = EC_ALGORITHM[key.asymmetricKeyDetails?.namedCurve ?? '']
      return alg === undefined ? [] : [alg]
    }
    case 'ed25519':
      return ['EdDSA', 'Ed25519']
    default:
      return []
  }
}

/** JWK members only a private key has (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'priv']

/** The JWS algorithms this gateway verifies: the key types each needs are known (algorithmsOf). */
const JWS_ALGORITHMS = new Set([...HMAC, 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'])

/**
 * Refuse at load a signing key of the JWKS that could never verify a token. jose imports a key
 * only when a token names it, and then refused a private key ("JSON Web Key Set members must be
 * public keys"), a broken one or a short RSA one on every token as "token rejected" or "no key
 * matches the token" — while the key was right there. As a malformed "oct" key, it fails the
 * load, named but never quoted. (Keys for encryption are not looked at: they sign nothing.)
 */
function checkJwksKeys(jwks: JSONWebKeySet): string[] {
  const algorithms: string[] = []
  jwks.keys.forEach((jwk, i) => {
    if (jwk === null || typeof jwk !== 'object') return
    const name = typeof jwk.kid === 'string' ? `key "${jwk.kid.slice(0, 64)}"` : `key #${i}`
    // Whatever its use: a private key marked "enc", or whose key_ops leave out "verify", loaded
    // without a word, while the file that holds it is one to hand out (or a leak of the secret).
    if (jwk.kty !== 'oct' && PRIVATE_MEMBERS.some((m) => Object.hasOwn(jwk, m))) throw new Error(`${name} is a private key (a JWKS to verify tokens with holds public keys only)`)
    if (jwk.use !== undefined && jwk.use !== 'sig') return
    // As jose picks keys: one whose key_ops leave out "verify" serves no token, and one naming its
    // "alg" serves that algorithm only. An RSA key of "alg": "PS256" counted as RS256 too, so it
    // passed the check against the default algorithms and every token was "algorithm not allowed".
    if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return
    const named = (algs: string[]) => (typeof jwk.alg === 'string' ? algs.filter((a) => a === jwk.alg) : algs)
    if (jwk.kty === 'oct') algorithms.push(...named(HMAC))
    if (!['RSA', 'EC', 'OKP'].includes(jwk.kty!)) return
    let key: KeyObject
    try {
      key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' })
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      throw new Error(`${name} is not a valid ${jwk.kty} public key${code ? ` (${code})` : ''}`)
    }
    const unusable = unusableKey(key)
    if (unusable !== undefined) throw new Error(`${name} is ${unusable}`)
    // An "alg" its type cannot serve (an RSA key of "ES256", a P-256 key of "ES384"): jose never
    // picks it, so it verified no token, silently — its issuer's tokens were "no key matches the
    // token". (Other "alg" values, RSA-OAEP on an encryption key without "use" or ES256K for
    // another consumer of a shared JWKS, are left alone, as such keys are.)
    const fits = algorithmsOf(key)
    if (typeof jwk.alg === 'string' && JWS_ALGORITHMS.has(jwk.alg) && !fits.includes(jwk.alg)) {
      const curve = key.asymmetricKeyDetails?.namedCurve
      throw new Error(`${name} has "alg" "${jwk.alg}", which a key of type ${key.asymmetricKeyType}${curve === undefined ? '' : ` on ${curve}`} cannot verify${fits.length > 0 ? ` (it serves ${fits.join(', ')})` : ''}`)
    }
    algorithms.push(...named(fits))
  })
  return algorithms
}

/** The JWKS of the file, and the algorithms its signing keys can verify. */
function loadJwks(path: string, where: string): { jwks: JWTVerifyGetKey; algorithms: string[] } {
  const text = readKeyFile(`${where}jwksFile`, path)
  let jwks: JSONWebKeySet
  try {
    jwks = JSON.parse(text) as JSONWebKeySet
  } catch (err) {
    const at = /at position \d+(?: \(line \d+ column \d+\))?/.exec((err as Error).message)
    throw new Error(`${where}jwksFile "${path}": not valid JSON${at ? ` (${at[0]})` : ''}`)
  }
  if (jwks === null || typeof jwks !== 'object' || !Array.isArray(jwks.keys)) throw new Error(`${where}jwksFile "${path}": not a JWKS document (no "keys" array)`)
  try {
    const algorithms = checkJwksKeys(jwks)
    return { jwks: localJwks(jwks), algorithms }
  } catch (err) {
    throw new Error(`${where}jwksFile "${path}": ${(err as Error).message}`)
  }
}

/** Told when a changed key file cannot be loaded (and the keys before it stay in use). */
export type KeyFileErrorHandler = (file: string, message: string) => void
/** Told when the keys in use start (true) or stop (false) lagging a key file that does not load. */
export type KeyFileStaleHandler = (stale: boolean) => void

/** One set of key sources: the unbound ones of `jwt`, or one entry of `jwt.keys`. */
type KeySources = { secret?: string; publicKeyFile?: string; jwksFile?: string }

/** The keys of one set of key sources, and their files as last loaded (reloaded when changed). */
class KeyRing {
  readonly #src: KeySources
  /** Where the sources are in the config ("jwt.", "jwt.keys[1]."), for load errors. */
  readonly #at: string
  #keys: Keys = {}
  /** jwt.algorithms, which a reloaded file's keys must serve (with the ring's other keys). */
  readonly #allowed: string[]
  /** The algorithms each source's keys in use can verify. */
  #fits: { secret: string[]; publicKey: string[]; jwks: string[] } = { secret: [], publicKey: [], jwks: [] }
  /** Stamps of the key files as last loaded. */
  #stamps: { publicKey: string; jwks: string } = { publicKey: '', jwks: '' }
  readonly #onKeyFileError: KeyFileErrorHandler | undefined
  /** The stamp of a changed key file that failed to load once, and one reported already. */
  #failed: { publicKey: string; jwks: string } = { publicKey: '', jwks: '' }
  #reported: { publicKey: string; jwks: string } = { publicKey: '', jwks: '' }
  /** Key files whose version on disk was reported as not loading and has not loaded since. */
  #stale: { publicKey: boolean; jwks: boolean } = { publicKey: false, jwks: false }
  readonly #onStaleChange: () => void

  constructor(src: KeySources, at: string, allowed: string[], onKeyFileError: KeyFileErrorHandler | undefined, onStaleChange: () => void) {
    this.#src = src
    this.#at = at
    this.#allowed = allowed
    this.#onKeyFileError = onKeyFileError
    this.#onStaleChange = onStaleChange
    if (src.secret !== undefined) {
      this.#keys.secret = new TextEncoder().encode(src.secret)
      this.#fits.secret = HMAC
    }
    if (src.publicKeyFile !== undefined) {
      this.#stamps.publicKey = fileStamp(src.publicKeyFile)
      this.#keys.publicKeys = loadPublicKeys(src.publicKeyFile, at)
      this.#fits.publicKey = this.#keys.publicKeys.flatMap(algorithmsOf)
    }
    if (src.jwksFile !== undefined) {
      this.#stamps.jwks = fileStamp(src.jwksFile)
      const loaded = loadJwks(src.jwksFile, at)
      this.#keys.jwks = loaded.jwks
      this.#fits.jwks = loaded.algorithms
    }
  }

  /** The algorithms the keys in use can verify. */
  get algorithms(): string[] {
    return [...this.#fits.secret, ...this.#fits.publicKey, ...this.#fits.jwks]
  }

  /**
   * A changed key file whose keys leave the ring verifying none of jwt.algorithms (the issuer
   * moved from RS256 to ES256, a JWKS of PS256 keys only) does not load, as the same file is
   * refused at start: swapped in, it refused every token — those of the keys it replaced too —
   * with nothing logged and the stale gauge at 0.
   */
  #checkFits(which: 'publicKey' | 'jwks', path: string, fits: string[]): void {
    const all = [...(which === 'publicKey' ? fits : this.#fits.publicKey), ...(which === 'jwks' ? fits : this.#fits.jwks), ...this.#fits.secret]
    if (all.length === 0 || this.#allowed.some((a) => all.includes(a))) return
    throw new Error(`${this.#at}${which}File "${path}": its keys verify ${[...new Set(fits)].join(', ')}, none of jwt.algorithms (${this.#allowed.join(', ')}): every token would be refused`)
  }

  get hasFiles(): boolean {
    return this.#src.publicKeyFile !== undefined || this.#src.jwksFile !== undefined
  }

  get stale(): boolean {
    return this.#stale.publicKey || this.#stale.jwks
  }

  /** The keys, in the order they are tried: JWKS (picked by kid), PEM keys, the secret. */
  list(): (Uint8Array | KeyObject | JWTVerifyGetKey)[] {
    const keys: (Uint8Array | KeyObject | JWTVerifyGetKey)[] = []
    if (this.#keys.jwks) keys.push(this.#keys.jwks)
    if (this.#keys.publicKeys) keys.push(...this.#keys.publicKeys)
    if (this.#keys.secret) keys.push(this.#keys.secret)
    return keys
  }

  /**
   * Reload a key file that changed on disk; true when the keys changed. A file caught
   * half-written does not load: the old keys stay and it is tried again next time. A file that
   * can no longer be read (deleted, moved, its mount or permissions gone) is a change that does
   * not load too: it was skipped without a word, so the keys in use — removed ones included —
   * went on verifying with nothing saying they lag the file (and a restart would refuse the config).
   */
  reload(): boolean {
    const src = this.#src
    let keys: Keys | undefined
    if (src.publicKeyFile !== undefined) {
      const stamp = this.#stampOf('publicKey', src.publicKeyFile)
      if (stamp !== this.#stamps.publicKey) {
        try {
          const publicKeys = loadPublicKeys(src.publicKeyFile, this.#at)
          const fits = publicKeys.flatMap(algorithmsOf)
          this.#checkFits('publicKey', src.publicKeyFile, fits)
          keys = { ...this.#keys, publicKeys }
          this.#fits.publicKey = fits
          this.#stamps.publicKey = stamp
          this.#setStale('publicKey', false)
        } catch (err) {
          this.#keyFileFailed('publicKey', src.publicKeyFile, stamp, err)
        }
      }
    }
    if (src.jwksFile !== undefined) {
      const stamp = this.#stampOf('jwks', src.jwksFile)
      if (stamp !== this.#stamps.jwks) {
        try {
          const { jwks, algorithms } = loadJwks(src.jwksFile, this.#at)
          this.#checkFits('jwks', src.jwksFile, algorithms)
          keys = { ...(keys ?? this.#keys), jwks }
          this.#fits.jwks = algorithms
          this.#stamps.jwks = stamp
          this.#setStale('jwks', false)
        } catch (err) {
          this.#keyFileFailed('jwks', src.jwksFile, stamp, err)
        }
      }
    }
    if (keys === undefined) return false
    this.#keys = keys
    return true
  }

  /**
   * The file's stamp, UNREADABLE when it cannot be read (a change that fails to load). Back as
   * it was loaded (moved away and back), the keys in use are the file's again: no longer stale.
   */
  #stampOf(which: 'publicKey' | 'jwks', path: string): string {
    const stamp = fileStamp(path) || UNREADABLE
    if (stamp === this.#stamps[which] && this.#stale[which]) this.#setStale(which, false)
    return stamp
  }

  /**
   * A changed key file did not load. The first failure of a version of the file may be a write
   * caught halfway; the same version failing at the next look (a second later) is the file as it
   * is: reported once (the old keys stay in use, silently until now, while tokens of the new key
   * were refused as "no key matches the token" with nothing saying why).
   */
  #keyFileFailed(which: 'publicKey' | 'jwks', path: string, stamp: string, err: unknown): void {
    if (this.#failed[which] !== stamp) {
      this.#failed[which] = stamp
      return
    }
    if (this.#reported[which] === stamp) return
    this.#reported[which] = stamp
    this.#onKeyFileError?.(path, (err as Error).message)
    this.#setStale(which, true)
  }

  /** Told on (to igw_jwt_key_files_stale): a log line is read by nobody until someone looks. */
  #setStale(which: 'publicKey' | 'jwks', stale: boolean): void {
    const before = this.stale
    this.#stale[which] = stale
    // Caught up: a later failure of any version (the file missing again) is reported anew.
    if (!stale) this.#failed[which] = this.#reported[which] = ''
    if (before !== this.stale) this.#onStaleChange()
  }
}

/** A string of a token's own, as a log shows it: clipped, else a flood of huge kids fills the log. */
const hint = (v: unknown): string | undefined => (typeof v === 'string' ? v.slice(0, 128) : undefined)

/**
 * What a refused token says of itself, unverified, for a debug line: the kid and alg of its
 * header and the issuer it claims — what "no key matches the token" leaves open (a kid the key
 * files lack, a token of another IdP). Never the token, nor its other claims.
 */
export function tokenHints(token: string): { kid?: string; alg?: string; iss?: string } {
  const hints: { kid?: string; alg?: string; iss?: string } = {}
  try {
    const h = decodeProtectedHeader(token)
    hints.kid = hint(h.kid)
    hints.alg = hint(h.alg)
    hints.iss = hint(decodeJwt(token).iss)
  } catch {
    // Malformed: what could be read is all there is.
  }
  return hints
}

/** The token's "iss" as it claims it (unverified), to pick the keys bound to that issuer. */
function claimedIssuer(token: string): string | undefined {
  const iss = decodeJwt(token).iss
  return typeof iss === 'string' ? iss : undefined
}

export class JwtVerifier {
  readonly #cfg: TenantJwtConfig
  /** The keys of `jwt` itself: tokens of any issuer that `jwt.keys` does not bind. */
  readonly #unbound: KeyRing | undefined
  /** `jwt.keys` by issuer: a token claiming one of these is verified with its keys alone. */
  readonly #bound = new Map<string, KeyRing[]>()
  readonly #rings: KeyRing[] = []
  readonly #hasFiles: boolean
  #checkedAt = 0
  /** Bumped by every key reload: an outcome decided with the keys before it is not cached. */
  #generation = 0
  readonly #cache = new LRUCache<string, Outcome>({
    max: 20_000,
    maxSize: CACHE_MAX_BYTES,
    sizeCalculation: (_o, token) => token.length + ENTRY_OVERHEAD_BYTES,
    ttlAutopurge: false,
  })
  /**
   * The verification of each token in progress. A client's burst of requests (or a hot token's
   * first moment, or its first after a key rotation cleared the cache) verified the same token
   * once per request, each a signature check: they wait for the one in progress instead.
   * Forgotten at a key reload, as the cache is: what started with the old keys is no one else's.
   */
  readonly #inFlight = new Map<string, Promise<Outcome>>()


  /** Whether any ring's keys lag a key file that does not load, as last told to onStale. */
  #stale = false
  readonly #onStale: KeyFileStaleHandler | undefined

  constructor(cfg: TenantJwtConfig, onKeyFileError?: KeyFileErrorHandler, onStale?: KeyFileStaleHandler) {
    this.#cfg = cfg
    this.#onStale = onStale
    const staleChanged = (): void => {
      const stale = this.#rings.some((r) => r.stale)
      if (stale === this.#stale) return
      this.#stale = stale
      this.#onStale?.(stale)
    }
    // Keys none of `algorithms` can use (an EC P-256 key under the default RS256, EdDSA, HS256:
    // Google IAP's, AWS ALB's) loaded, and then every token was refused as "token algorithm not
    // allowed". (A JWKS without signing keys yet still loads: its keys may come later.) Each
    // issuer's keys on their own: usable keys of one issuer let another's unusable ones load, and
    // every token of that issuer was refused.
    const check = (ring: KeyRing, which: string, refused: string): KeyRing => {
      const fits = ring.algorithms
      if (fits.length > 0 && !cfg.algorithms.some((a) => fits.includes(a))) {
        throw new Error(`jwt.algorithms (${cfg.algorithms.join(', ')}) verify none of ${which}, which verify ${[...new Set(fits)].join(', ')}: ${refused} would be refused`)
      }
      this.#rings.push(ring)
      return ring
    }
    if (cfg.secret !== undefined || cfg.publicKeyFile !== undefined || cfg.jwksFile !== undefined) {
      this.#unbound = check(new KeyRing(cfg, 'jwt.', cfg.algorithms, onKeyFileError, staleChanged), 'the configured keys', 'every token')
    }
    cfg.keys?.forEach((k, i) => {
      const ring = check(new KeyRing(k, `jwt.keys[${i}].`, cfg.algorithms, onKeyFileError, staleChanged), `the keys of jwt.keys[${i}]`, `every token of issuer "${k.issuer}"`)
      this.#bound.set(k.issuer, [...(this.#bound.get(k.issuer) ?? []), ring])
    })
    this.#hasFiles = this.#rings.some((r) => r.hasFiles)
    this.#checkedAt = performance.now()
  }

  /**
   * Reload key files that changed on disk (at most one stat per file per second). Keys rotate:
   * an issuer that starts signing with a new kid, or drops a compromised key, is followed without
   * a restart. Outcomes decided with the old keys are dropped: a token of a newly added kid
   * refused a moment ago verifies now, and one signed by a removed key is no longer served from
   * the cache. A key file that does not load keeps its ring's previous keys (see KeyRing.reload).
   */
  #reloadChangedKeys(): void {
    // The monotonic clock: with the wall clock's, a step back (an NTP correction, a VM resumed
    // from a snapshot) stopped the look until the clock caught up — an hour back, an hour in
    // which a new kid's tokens were refused and a removed key went on verifying.
    const now = performance.now()
    if (now - this.#checkedAt < KEY_FILE_CHECK_MS) return
    this.#checkedAt = now
    let changed = false
    for (const ring of this.#rings) if (ring.reload()) changed = true
    if (!changed) return
    this.#generation++
    this.#cache.clear()
    this.#inFlight.clear()
  }

  /** The cached outcome for a token, or undefined when it must be verified. */
  cached(token: string): Outcome | undefined {
    if (this.#hasFiles) this.#reloadChangedKeys()
    return this.#cache.get(token)
  }

  verify(token: string): Promise<Outcome> {
    this.#reloadChangedKeys()
    const hit = this.#cache.get(token)
    if (hit) return Promise.resolve(hit)
    let pending = this.#inFlight.get(token)
    if (pending === undefined) {
      const p: Promise<Outcome> = this.#verifyAndCache(token).finally(() => {
        if (this.#inFlight.get(token) === p) this.#inFlight.delete(token)
      })
      this.#inFlight.set(token, (pending = p))
    }
    return pending
  }

  async #verifyAndCache(token: string): Promise<Outcome> {
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
    let issuer = this.#cfg.issuer
    let rings = this.#unbound === undefined ? [] : [this.#unbound]
    if (this.#bound.size > 0) {
      let claimed: string | undefined
      try {
        claimed = claimedIssuer(token)
      } catch (err) {
        return { ok: false, kind: 'invalid', reason: describe(err) }
      }
      const bound = claimed === undefined ? undefined : this.#bound.get(claimed)
      if (bound !== undefined) {
        // The issuer's own keys alone, and jose checks the "iss" they were picked for.
        rings = bound
        issuer = claimed
      } else if (rings.length === 0) {
        return { ok: false, kind: 'invalid', reason: claimed === undefined ? 'token claim "iss" rejected: missing (the keys are bound to issuers)' : 'token claim "iss" rejected: no keys are configured for this issuer' }
      }
    }
    const options = {
      algorithms: this.#cfg.algorithms,
      issuer,
      audience: this.#cfg.audience,
      clockTolerance: this.#cfg.clockToleranceSec,
      requiredClaims: this.#cfg.requireExpiration ? ['exp'] : undefined,
    }
    const keys = rings.flatMap((r) => r.list())
    let last: unknown
    for (const key of keys) {
      try {
        const { payload } = typeof key === 'function' ? await verifyWithJwks(token, key, options) : await jwtVerify(token, key, options)
        return { ok: true, claims: payload }
      } catch (err) {
        // A key that cannot serve this token at all (a secret for an RS256 token, a public key for
        // an HS256 one: jose's TypeError / not-supported) says nothing about the token: the next key
        // is tried, and the reason stays what an earlier key found (a stranger's signature, a kid
        // the JWKS lacks) — the last of the keys being a secret answered every RS256 refusal with
        // "token rejected". No key able to serve it at all is "no key matches the token".
        // RFC 7515 §4.1.11: a "crit" extension jose does not understand refuses the token whatever
        // the key (jose's not-supported too): said as such, not as "no key matches the token",
        // which sent operators looking for a key that was there all along.
        if (err instanceof joseErrors.JOSENotSupported && hasCrit(token)) {
          return { ok: false, kind: 'invalid', reason: 'token header "crit" names an extension this gateway does not support' }
        }
        if (err instanceof TypeError || err instanceof joseErrors.JOSENotSupported || wrongKeyType(err)) {
          last ??= NO_USABLE_KEY
          continue
        }
        last = err
        // A bad signature or unknown kid means "try the next key"; anything else is final.
        if (!(err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JWKSNoMatchingKey)) break
      }
    }
    // A token refused only for being early is not refused from the cache once it is due:
    // jose's error carries the (verified) payload, so its nbf is read there, not decoded again.
    if (last instanceof joseErrors.JWTClaimValidationFailed && last.claim === 'nbf' && typeof last.payload.nbf === 'number') {
      return { ok: false, kind: 'refused_claim', reason: describe(last), notBefore: last.payload.nbf }
    }
    return { ok: false, kind: refusal(last), reason: describe(last) }
  }
}

function hasCrit(token: string): boolean {
  try {
    return decodeProtectedHeader(token).crit !== undefined
  } catch {
    return false
  }
}

/**
 * A public key of another type than the token's algorithm (an Ed25519 key for an RS256 token, a
 * P-256 key for ES384): Web Crypto's DataError, raised before any signature is looked at. With
 * several PEM keys (or a PEM key beside a JWKS) that is "the next key", not a final "token rejected".
 */
function wrongKeyType(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'DataError'
}

/** The reason when every configured key was of a kind that cannot verify the token's algorithm. */
const NO_USABLE_KEY = new joseErrors.JWKSNoMatchingKey()

/** jose checks the claims only once the signature verified: a claim refused is not a forgery. */
function refusal(err: unknown): Refusal {
  if (err instanceof joseErrors.JWTExpired) return 'expired'
  return err instanceof joseErrors.JWTClaimValidationFailed ? 'refused_claim' : 'invalid'
}

/**
 * The 401's reason. jose's `reason` is a code ("check_failed", "missing", "invalid"): a token of
 * another issuer was "token claim "iss" rejected: check_failed". Its message says what failed.
 */
function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired'
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" rejected: ${err.message}`
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature does not verify'
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm not allowed'
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'token is malformed'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no key matches the token'
  return 'token rejected'
}

