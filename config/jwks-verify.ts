// jwtVerify over a JWKS that may hold several keys fitting one token, shared by the data plane's
// tenant filter and the control plane's admin auth (which may not import each other).
import { errors as joseErrors, jwtVerify, type JWTVerifyGetKey, type JWTVerifyOptions, type JWTVerifyResult } from 'jose'

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
