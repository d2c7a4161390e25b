// jwtVerify over a JWKS that may hold several keys fitting one token, shared by the data plane's
// tenant filter and the control plane's admin auth (which may not import each other).
import { createSecretKey, type KeyObject } from 'node:crypto'
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWK, type JWTVerifyGetKey, type JWTVerifyOptions, type JWTVerifyResult } from 'jose'

/**
 * jose refuses to pick among several keys that fit a token (no "kid" while an issuer publishes
 * its old and new key, or one kid on two keys mid-rotation) and hands the candidates to the
 * caller: each is tried in turn. A signature that does not verify, or a key that cannot be used
 * for this token (too short an RSA key, an unsupported curve), means "the next one"; anything else
 * (a claim refused after the signature verified) is final. None verifying is a bad signature.
 */
export async function verifyWithJwks(token: string, jwks: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTVerifyResult> {
  try {
    return await jwtVerify(token, jwks, options)
  } catch (err) {
    if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err
    for await (const key of err as joseErrors.JWKSMultipleMatchingKeys & AsyncIterable<CryptoKey>) {
      try {
        return await jwtVerify(token, key, options)
      } catch (inner) {
        if (!(inner instanceof joseErrors.JWSSignatureVerificationFailed || inner instanceof joseErrors.JOSENotSupported || inner instanceof TypeError)) throw inner
      }
    }
    throw new joseErrors.JWSSignatureVerificationFailed()
  }
}

const HMAC_ALGORITHMS = new Set(['HS256', 'HS384', 'HS512'])
/** RFC 7518 §3.2: an HMAC key at least as long as the hash; the shortest (HS256) is 32 bytes. */
const MIN_HMAC_KEY_BYTES = 32

type SecretKey = { kid: string | undefined; alg: string | undefined; key: KeyObject }

/**
 * A local JWKS as a key getter, its symmetric ("kty": "oct") keys included. jose's local JWKS
 * takes public keys only and refuses every HS* token ('Unsupported "alg" value for a JSON Web
 * Key Set'); Envoy's jwt_authn (local_jwks) verifies HS256/384/512 with a JWKS's oct keys, so a
 * JWKS written for it had every token refused here, as "token rejected". Oct keys serve HS*
 * tokens only (by kid, and by alg when the key names one); every other token goes to jose's set,
 * which never sees the secrets. A malformed oct key fails the load, naming it but never its "k".
 *
 * A public key without "kid" serves tokens that name one when no key has that kid, as Envoy's
 * jwt_authn tries every key whose kid is unset: jose matches a token's kid only to a key that has
 * the same one, so a JWKS written without kids (made from a PEM, or for Envoy) had every token of
 * an issuer that stamps a kid refused as "no key matches the token" — while the same key as
 * publicKeyFile verified them. (Oct keys keep matching a named kid exactly.)
 */
export function localJwks(jwks: JSONWebKeySet): JWTVerifyGetKey {
  const secrets: SecretKey[] = []
  const others: JWK[] = []
  jwks.keys.forEach((jwk, i) => {
    if (jwk === null || typeof jwk !== 'object' || jwk.kty !== 'oct') {
      others.push(jwk)
      return
    }
    const name = typeof jwk.kid === 'string' ? `key "${jwk.kid}"` : `key #${i}`
    if (jwk.use !== undefined && jwk.use !== 'sig') return // an encryption key: not for tokens
    if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return
    if (jwk.alg !== undefined && !HMAC_ALGORITHMS.has(jwk.alg)) throw new Error(`${name}: an "oct" key with "alg" ${JSON.stringify(jwk.alg).slice(0, 40)} (expected HS256, HS384 or HS512)`)
    if (typeof jwk.k !== 'string' || !/^[A-Za-z0-9_-]+$/.test(jwk.k)) throw new Error(`${name}: an "oct" key needs "k", the secret in base64url`)
    const bytes = Buffer.from(jwk.k, 'base64url')
    if (bytes.length < MIN_HMAC_KEY_BYTES) throw new Error(`${name}: an "oct" key of ${bytes.length} bytes is too short (at least ${MIN_HMAC_KEY_BYTES})`)
    secrets.push({ kid: typeof jwk.kid === 'string' ? jwk.kid : undefined, alg: jwk.alg, key: createSecretKey(bytes) })
  })
  const asymmetric = withKidless(createLocalJWKSet({ ...jwks, keys: others }), others)
  if (secrets.length === 0) return asymmetric
  return async (header, token) => {
    const alg = header.alg
    if (typeof alg !== 'string' || !HMAC_ALGORITHMS.has(alg)) return asymmetric(header, token)
    const kid = header.kid
    const fit = secrets.filter((s) => (kid === undefined || s.kid === kid) && (s.alg === undefined || s.alg === alg))
    if (fit.length === 0) throw new joseErrors.JWKSNoMatchingKey()
    if (fit.length === 1) return fit[0]!.key
    // Several fit (no kid during a rotation): the caller tries each (verifyWithJwks).
    const several = new joseErrors.JWKSMultipleMatchingKeys()
    Object.assign(several, {
      [Symbol.asyncIterator]: async function* () {
        for (const s of fit) yield s.key
      },
    })
    throw several
  }
}

/**
 * jose's key set, falling back for a token that names a kid no key has to the keys that name none
 * (see localJwks). A key whose kid is set never serves another kid.
 */
function withKidless(set: JWTVerifyGetKey, keys: JWK[]): JWTVerifyGetKey {
  const kidless = keys.filter((k) => k !== null && typeof k === 'object' && k.kid === undefined)
  if (kidless.length === 0) return set
  const fallback = createLocalJWKSet({ keys: kidless })
  return async (header, token) => {
    try {
      return await set(header, token)
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey) || header.kid === undefined) throw err
      const { kid: _kid, ...rest } = header
      return fallback(rest, token)
    }
  }
}
