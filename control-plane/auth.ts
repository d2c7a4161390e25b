// Authentication (bearer JWT, verified with jose against a JWKS file, a PEM public key or an
// HMAC secret) and authorization (the admin ABAC policy, Rego compiled to wasm, evaluated
// in-process). 401 says why the token was not accepted; 403 carries the policy's reason.
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose'
import { loadPolicyBundle, type PolicyEvaluator } from '../policies/engine.ts'
import { localJwks, verifyWithJwks } from '../config/jwks-verify.ts'

export interface AuthOptions {
  jwksFile?: string
  publicKeyFile?: string
  /** HMAC secret (HS256), at least 32 characters. */
  secret?: string
  issuer?: string
  audience?: string
  /** Refuse tokens without an `exp` claim (a token that never expires cannot be retired by time). */
  requireExpiration?: boolean
}

export type Action = 'admin.read' | 'admin.write' | 'dlp.review' | 'dlp.detokenize' | 'proxy.sync' | 'plugins.write'

/** Seconds of clock skew allowed on exp/nbf/iat; a token stops being accepted at exp plus this. */
export const CLOCK_TOLERANCE_S = 30

export interface Subject {
  sub: string
  roles: string[]
  attributes: string[]
  tenant?: string
  /** The `proxy` claim: the one proxy id this token may open the config stream, ACK and report usage as. */
  proxy?: string
}

export interface Decision {
  allow: boolean
  reason: string
}

export class AuthError extends Error {
  readonly status: 401 | 403
  /** False when the request carried no bearer token at all: its 401 challenge then names no error (RFC 6750 §3.1). */
  readonly credentials: boolean
  constructor(status: 401 | 403, message: string, opts: { credentials?: boolean } = {}) {
    super(message)
    this.status = status
    this.credentials = opts.credentials ?? true
  }
}

function strings(v: unknown): string[] {
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string')
  if (typeof v === 'string') return v.split(/[\s,]+/).filter(Boolean)
  return []
}

export class Authenticator {
  readonly #opts: AuthOptions
  readonly #keys: (Uint8Array | KeyObject | JWTVerifyGetKey)[] = []

  constructor(opts: AuthOptions) {
    this.#opts = opts
    if (opts.jwksFile) {
      const jwks = JSON.parse(readFileSync(opts.jwksFile, 'utf8')) as JSONWebKeySet
      if (!Array.isArray(jwks.keys)) throw new Error(`${opts.jwksFile}: not a JWKS document (no "keys" array)`)
      // Symmetric ("oct") keys too, for HS* admin tokens: jose's local key set takes public keys
      // only, so every HS* token was refused against such a JWKS (as the tenant filter's was).
      try {
        this.#keys.push(localJwks(jwks))
      } catch (err) {
        throw new Error(`${opts.jwksFile}: ${(err as Error).message}`, { cause: err })
      }
    }
    if (opts.publicKeyFile) this.#keys.push(createPublicKey(readFileSync(opts.publicKeyFile, 'utf8')))
    if (opts.secret) {
      if (opts.secret.length < 32) throw new Error('--auth-secret: expected an HMAC secret of at least 32 characters')
      this.#keys.push(new TextEncoder().encode(opts.secret))
    }
    if (this.#keys.length === 0) throw new Error('the control plane needs a way to verify admin tokens: --auth-jwks, --auth-public-key or --auth-secret')
  }

  /** The subject of an Authorization header, or AuthError(401) saying why not. */
  async authenticate(header: string | undefined): Promise<Subject> {
    if (header === undefined || header === '') throw new AuthError(401, 'missing bearer token (Authorization: Bearer <jwt>)', { credentials: false })
    if (!/^bearer\s+/i.test(header)) throw new AuthError(401, 'expected an Authorization: Bearer <jwt> header', { credentials: false })
    const token = header.replace(/^bearer\s+/i, '').trim()
    const opts: JWTVerifyOptions = { issuer: this.#opts.issuer, audience: this.#opts.audience, clockTolerance: CLOCK_TOLERANCE_S, ...(this.#opts.requireExpiration ? { requiredClaims: ['exp'] } : {}) }
    // The reason a token fails is the one of the key that got furthest with it: a JWKS whose key
    // found the signature bad says more than an HMAC secret that cannot take RS256 at all.
    let last: unknown
    for (const key of this.#keys) {
      try {
        const { payload } = typeof key === 'function' ? await verifyWithJwks(token, key, opts) : await jwtVerify(token, key, opts)
        return subjectOf(payload)
      } catch (err) {
        if (last === undefined || rank(err) >= rank(last)) last = err
        if (!(err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JWKSNoMatchingKey || err instanceof TypeError || err instanceof joseErrors.JOSENotSupported)) {
          last = err
          break
        }
      }
    }
    throw new AuthError(401, describe(last, token))
  }
}

/** How far a key got with a token before it failed: the failure worth reporting is the furthest. */
function rank(err: unknown): number {
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 2
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 1
  return 0
}

function subjectOf(p: JWTPayload): Subject {
  if (typeof p.sub !== 'string' || p.sub === '') throw new AuthError(401, 'token has no "sub" claim')
  // sub is the audit actor and tenant a filter in SQL: text columns that cannot hold NUL.
  if (p.sub.includes('\u0000') || (typeof p.tenant === 'string' && p.tenant.includes('\u0000'))) throw new AuthError(401, 'token "sub" or "tenant" claim contains a NUL character')
  const s: Subject = { sub: p.sub, roles: strings(p.roles), attributes: strings(p.attrs ?? p.attributes) }
  // Every string of the subject reaches the policy engine, whose JSON parser refuses a lone
  // UTF-16 surrogate ("\ud800" in the token's JSON): such a token would otherwise be a 403
  // carrying the engine's parse error. It is not a credential this service can read: 401.
  const bad = !p.sub.isWellFormed() ? 'sub' : typeof p.tenant === 'string' && !p.tenant.isWellFormed() ? 'tenant' : !s.roles.every((r) => r.isWellFormed()) ? 'roles' : !s.attributes.every((a) => a.isWellFormed()) ? (p.attrs !== undefined ? 'attrs' : 'attributes') : undefined
  if (bad !== undefined) throw new AuthError(401, `token "${bad}" claim is not valid Unicode (it holds a lone UTF-16 surrogate)`)
  // A tenant claim scopes the token; one that is present but not a usable id (a number, a list,
  // null, "") must not leave the token unscoped, i.e. with authority over every tenant: refused.
  if (p.tenant !== undefined) {
    if (typeof p.tenant !== 'string' || p.tenant === '') throw new AuthError(401, `token "tenant" claim must be a non-empty string (got ${p.tenant === null ? 'null' : Array.isArray(p.tenant) ? 'an array' : typeof p.tenant === 'string' ? 'an empty string' : `a ${typeof p.tenant}`}); a token without the claim is not tenant-scoped`)
    s.tenant = p.tenant
  }
  // A proxy claim binds a proxy token to one proxy id; one that is present but not a usable id
  // must not leave the token unbound (free to report usage as any proxy), as for tenant.
  if (p.proxy !== undefined) {
    if (typeof p.proxy !== 'string' || p.proxy === '') throw new AuthError(401, 'token "proxy" claim must be a non-empty string (the proxy id the token is bound to); a token without the claim is not bound to one proxy')
    if (p.proxy.includes('\u0000') || !p.proxy.isWellFormed()) throw new AuthError(401, 'token "proxy" claim is not a valid proxy id (it holds a NUL or a lone UTF-16 surrogate)')
    s.proxy = p.proxy
  }
  return s
}

/** The token's `alg` header, for a message (undefined when the header does not decode). */
function algOf(token: string): string | undefined {
  try {
    const alg = decodeProtectedHeader(token).alg
    return typeof alg === 'string' ? alg.slice(0, 32) : undefined
  } catch {
    return undefined
  }
}

function describe(err: unknown, token: string): string {
  // An algorithm no configured key can verify ("none", RS256 against an HMAC secret, …): jose
  // says so with a TypeError or JOSENotSupported, which would otherwise read "token rejected".
  if (err instanceof TypeError || err instanceof joseErrors.JOSENotSupported || err instanceof joseErrors.JOSEAlgNotAllowed) {
    const alg = algOf(token)
    if (alg !== undefined) return `token algorithm "${alg.replace(/[^\w.+-]/g, '?')}" is not accepted by the configured verification keys`
  }
  if (err instanceof joseErrors.JWTExpired) return 'token expired'
  if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'exp' && err.reason === 'missing') return 'token has no "exp" claim, which this control plane requires (--auth-require-exp)'
  // jose's reason is its internal code ("check_failed", "missing"); its message says what was wrong.
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" rejected: ${err.message}`
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature does not verify'
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'token is malformed'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no key matches the token'
  if (err instanceof AuthError) return err.message
  return 'token rejected'
}

export class Authorizer {
  readonly #policy: PolicyEvaluator

  private constructor(policy: PolicyEvaluator) {
    this.#policy = policy
  }

  static async load(bundle = 'admin'): Promise<Authorizer> {
    // A bundle without the decision entrypoint refuses the start, not every request.
    // So does one calling a builtin the wasm runtime lacks (http.send, crypto.*): it would load and
    // then deny every admin request that reaches the call ("policy evaluation failed").
    return new Authorizer(await loadPolicyBundle(bundle, undefined, { entrypoints: ['intelgraph/admin/decision'], checkBuiltins: true }))
  }

  decide(subject: Subject | undefined, action: string, resource: { type: string; id?: string; tenant?: string }, context: Record<string, unknown> = {}): Decision {
    let d: Decision | undefined
    try {
      d = this.#policy.evaluate<Decision>({ subject, action, resource, context }, 'intelgraph/admin/decision')
    } catch (err) {
      // The engine's JSON parser refuses a lone UTF-16 surrogate anywhere in the input: that is
      // the request's text, not a policy failure, and the engine's parse error says nothing useful
      // to the caller. Checked only here, on the failure path.
      if (!wellFormed({ subject, action, resource, context }, 0)) return { allow: false, reason: 'the request holds text that is not valid Unicode (a lone UTF-16 surrogate)' }
      // A policy that fails to evaluate denies (a 403 saying so), never a 500 or an allow.
      return { allow: false, reason: `policy evaluation failed: ${(err as Error).message}` }
    }
    if (d === undefined) return { allow: false, reason: 'policy returned no decision' }
    // Only a literal true allows: a decision that is not {allow: boolean, …} ("allow": "no", a
    // bare true, a set) is a policy bug, and a truthy string must not read as an allow.
    if (typeof d !== 'object' || d === null || typeof d.allow !== 'boolean') return { allow: false, reason: 'policy returned a malformed decision (expected {"allow": boolean, "reason": string})' }
    return { allow: d.allow, reason: typeof d.reason === 'string' ? d.reason : d.allow ? 'allowed' : 'denied by policy' }
  }

  /** Throws AuthError(403) with the policy's reason unless allowed. */
  require(subject: Subject, action: Action, resource: { type: string; id?: string; tenant?: string }, context: Record<string, unknown> = {}): void {
    const d = this.decide(subject, action, resource, context)
    if (!d.allow) throw new AuthError(403, `${action} on ${resource.type}${resource.id ? `/${resource.id}` : ''} denied: ${d.reason}`)
  }
}

/** Whether every string (and key) in a JSON-like value is well-formed UTF-16 (what lies past 64 levels is not looked at). */
function wellFormed(v: unknown, depth: number): boolean {
  if (typeof v === 'string') return v.isWellFormed()
  if (typeof v !== 'object' || v === null) return true
  if (depth > 64) return true
  if (Array.isArray(v)) return v.every((x) => wellFormed(x, depth + 1))
  for (const [k, x] of Object.entries(v)) if (!k.isWellFormed() || !wellFormed(x, depth + 1)) return false
  return true
}

/** Mint an HS256 token (the demo and tests; production tokens come from your identity provider). */
export async function mintToken(secret: string, claims: { sub: string; roles?: string[]; attrs?: string[]; tenant?: string; proxy?: string }, opts: { issuer?: string; audience?: string; expiresIn?: string } = {}): Promise<string> {
  let jwt = new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).setSubject(claims.sub).setIssuedAt().setExpirationTime(opts.expiresIn ?? '12h')
  if (opts.issuer) jwt = jwt.setIssuer(opts.issuer)
  if (opts.audience) jwt = jwt.setAudience(opts.audience)
  return jwt.sign(new TextEncoder().encode(secret))
}
