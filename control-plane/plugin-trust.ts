// The plugin trust file (--plugin-trust F / IGW_PLUGIN_TRUST): which ed25519 public keys may sign
// plugins, and for which publisher. JWKS-shaped (RFC 7517 / RFC 8037 OKP keys) so keys can be
// exported by the usual tools, with one extra member, `publisher`, saying whose key it is:
//   {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "<base64url>", "kid": "acme-2026", "publisher": "acme"}]}
// Read once at start; rotating keys is a restart (on Kubernetes the ConfigMap's hash suffix
// rolls the Deployment).
import { ed25519 } from '@noble/curves/ed25519.js'
import { createPublicKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { ConfigError, formatIssues } from '../config/load.ts'
import { NAME_PATTERN, type PublisherKey, type TrustedKeys } from './plugin-package.ts'
import { keyIdOf } from './signing.ts'

const okpKey = z
  .looseObject({
    kty: z.literal('OKP'),
    crv: z.literal('Ed25519'),
    x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'expected the 32-byte public key, base64url without padding (43 characters)'),
    // The kid is stored with each upload (a text column) and shown in listings: a NUL made every
    // upload signed by that key a bare 400 from the database, a lone surrogate came back as U+FFFD.
    kid: z
      .string()
      .min(1)
      .max(128)
      .refine((k) => !k.includes('\u0000'), 'must not contain a NUL character (U+0000)')
      .refine((k) => k.isWellFormed(), 'must be valid Unicode (it holds a lone UTF-16 surrogate)')
      .optional(),
    publisher: z.string().regex(NAME_PATTERN, 'expected a publisher name (lower case letters, digits, ".", "_", "-"; at most 64)'),
    use: z.literal('sig').optional(),
    alg: z.enum(['EdDSA', 'Ed25519']).optional(),
  })
  .refine((k) => !Object.hasOwn(k, 'd'), { message: 'a private key does not belong in the trust file (remove "d")', path: ['d'] })

const trustFile = z.looseObject({ keys: z.array(okpKey) })

/**
 * Why 32 bytes are not a usable Ed25519 public key, or undefined. node:crypto imports any 32
 * bytes as an ed25519 key without looking at them. A mistyped key that is no point of the curve
 * loaded silently, then turned each of that publisher's uploads into a bad_signature page and
 * all it had signed into `revoked`; a small-order point (the neutral one is 01 00…00) is no
 * publisher's key, and a verifier that skips the cofactor checks accepts forgeries under it.
 */
function ed25519PointProblem(bytes: Buffer): string | undefined {
  // RFC 8032 §5.1.3 decoding, strict (no ZIP-215 leniency): y reduced, on the curve, x's sign.
  const y = BigInt(`0x${Buffer.from(bytes).reverse().toString('hex')}`) & ((1n << 255n) - 1n)
  if (y >= ed25519.Point.Fp.ORDER) return 'its y coordinate is not reduced modulo 2^255-19 (a non-canonical encoding)'
  let point
  try {
    point = ed25519.Point.fromBytes(bytes)
  } catch (err) {
    return /x=0/.test((err as Error).message) ? 'not a point of the curve (x = 0 with its sign bit set)' : 'not a point of the curve'
  }
  return point.isSmallOrder() ? 'a point of small order (it verifies no signature)' : undefined
}

/** Parse a trust document; throws ConfigError naming the bad paths. */
export function parsePluginTrust(raw: unknown, source: string): TrustedKeys {
  const r = trustFile.safeParse(raw, { reportInput: true })
  if (!r.success) throw new ConfigError(source, formatIssues(r.error.issues))
  const byPublisher = new Map<string, PublisherKey[]>()
  const problems: string[] = []
  /** Which publisher (and entry) each key, by its canonical x, was first listed for. */
  const owners = new Map<string, { publisher: string; at: number }>()
  r.data.keys.forEach((jwk, i) => {
    const named = `keys[${i}] (${jwk.kid === undefined ? '' : `kid "${jwk.kid}", `}publisher "${jwk.publisher}")`
    const raw = Buffer.from(jwk.x, 'base64url')
    // The 43rd character holds 2 bits beyond the 32 bytes: decoders drop them, so a typo there
    // would trust a key other than the one written.
    if (raw.toString('base64url') !== jwk.x) {
      problems.push(`${named}.x: not in canonical base64url (its last character carries bits beyond the 32 key bytes)`)
      return
    }
    const bad = ed25519PointProblem(raw)
    if (bad !== undefined) {
      problems.push(`${named}.x: not an Ed25519 public key: ${bad}`)
      return
    }
    let key
    try {
      key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' })
    } catch (err) {
      problems.push(`keys[${i}].x: not an Ed25519 public key (${(err as Error).message})`)
      return
    }
    // A key vouches for one publisher: listed for two, its holder could publish under either name
    // (and take the other's plugin names first, which name ownership then keeps from their owner).
    const owner = owners.get(jwk.x)
    if (owner !== undefined && owner.publisher !== jwk.publisher) {
      problems.push(`${named}.x: the same key is listed for publisher "${owner.publisher}" (keys[${owner.at}]); a key signs for one publisher only`)
      return
    }
    owners.set(jwk.x, { publisher: jwk.publisher, at: i })
    const keyId = jwk.kid ?? keyIdOf(key)
    const list = byPublisher.get(jwk.publisher) ?? []
    if (list.some((k) => k.keyId === keyId)) problems.push(`keys[${i}].kid: "${keyId}" appears twice for publisher "${jwk.publisher}"`)
    list.push({ publisher: jwk.publisher, keyId, key })
    byPublisher.set(jwk.publisher, list)
  })
  if (problems.length) throw new ConfigError(source, problems)
  return byPublisher
}

export function loadPluginTrust(path: string): TrustedKeys {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('--plugin-trust', [`cannot read ${path}: ${(err as Error).message}`])
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(path, [`not JSON: ${(err as Error).message}`])
  }
  return parsePluginTrust(raw, path)
}

/** No trust file: every signed upload is refused as untrusted_publisher (unsigned ones stay unsigned). */
export const NO_TRUSTED_KEYS: TrustedKeys = new Map()
