import { z } from 'zod'
import { filterBase, tenantId } from '../primitives.ts'

/** RFC 9110 §5.6.2 token, as the proxy checks header names (lower case). */
const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+$/
/** RFC 6265 §4.1.1 cookie-name: an RFC 2616 token, case kept (cookie names are case-sensitive). */
const COOKIE_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** Set by the proxy itself, or hop-by-hop: a filter's edit of one fails the filter (a 500) on every request. */
const PROXY_OWNED = new Set(['host', 'content-length', 'expect', 'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings'])

/**
 * A request header the filter reads, or (`sent`) one it sets on the upstream request. Checked
 * here, when the config is validated: accepted ('' or "x tenant"), it failed the filter on every
 * request (500 INTERNAL_SERVER_ERROR) of a config that had loaded, or been pushed, cleanly.
 */
export function headerName(sent: boolean) {
  return z
    .string()
    .toLowerCase()
    .refine((h) => HEADER_TOKEN.test(h), { error: 'expected an HTTP header name (letters, digits and !#$%&\'*+.^_`|~-)' })
    .refine((h) => !sent || !(PROXY_OWNED.has(h) || h.startsWith('proxy-')), { error: 'expected a header the proxy does not set itself (not Host, Content-Length, Expect or a hop-by-hop header)' })
}

/**
 * Every JWS algorithm jose verifies with a key this filter can hold (an HMAC secret, an RSA, EC
 * P-256/384/521 or Ed25519 public key): PS384, PS512 and ES512 were missing, so a config naming
 * them (an issuer signing with P-521, RSA-PSS/SHA-384) was refused although the README lists
 * "RS*, PS*, ES*". (jose's ML-DSA-* are an experimental Web Crypto feature in Node: not offered.)
 */
const jwtAlgorithm = z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'])

const nonEmpty = (what: string) => z.string().min(1, { error: `expected a non-empty ${what}` })

/** The key sources a token may be verified with (at least one). */
const keySources = {
  /** Shared secret for HS* (use ${ENV} interpolation, never a literal in a committed file). */
  secret: z.string().min(32, { error: 'expected an HMAC secret of at least 32 characters' }).optional(),
  /** PEM file of public keys (RS*, PS*, ES*, EdDSA; several side by side during a rotation; RSA at least 2048 bits). */
  publicKeyFile: z.string().min(1).optional(),
  /** A JWKS document on disk; keys are picked by "kid". */
  jwksFile: z.string().min(1).optional(),
}
const hasKeySource = (k: { secret?: string; publicKeyFile?: string; jwksFile?: string }) => k.secret !== undefined || k.publicKeyFile !== undefined || k.jwksFile !== undefined

/**
 * Keys of one issuer (Envoy's jwt_authn provider, Apollo Router's jwks[].issuer): a token whose
 * "iss" is this issuer is verified with its keys only, and these keys verify no other issuer's
 * token. With several IdPs under one list of keys, a token claiming IdP A verified with IdP B's
 * key: whoever holds one IdP's signing key (a staging IdP, a partner) minted tokens "of" another.
 */
const issuerKeys = z
  .strictObject({ issuer: nonEmpty('issuer'), ...keySources })
  .refine(hasKeySource, { error: 'expected one of secret, publicKeyFile or jwksFile to verify this issuer\'s tokens with' })

export const tenantJwtConfig = z
  .strictObject({
    /** Request header holding the token, after `prefix`. */
    header: headerName(false).default('authorization'),
    /**
     * What comes before the token in `header`, compared without regard to case (Envoy's
     * jwt_authn from_headers value_prefix). '' reads a header that holds the bare JWT: Cloudflare
     * Access's cf-access-jwt-assertion, Google IAP's x-goog-iap-jwt-assertion, AWS ALB's
     * x-amzn-oidc-data — which "Bearer " alone refused on every request, as a missing token.
     */
    prefix: z
      .string()
      .regex(/^(?:[\x21-\x7e][\x20-\x7e]*)?$/, { error: "expected printable ASCII that does not start with a space ('' for a header holding the bare token)" })
      .default('Bearer '),
    /**
     * A cookie holding the bare token, read only when `header` holds none (Envoy's jwt_authn
     * from_cookies, after from_headers): browsers cannot set a header on a WebSocket upgrade or
     * an EventSource. A name with a space, "=" or ";" would match no cookie: refused at load.
     */
    cookie: z.string().regex(COOKIE_NAME, { error: 'expected a cookie name (letters, digits and !#$%&\'*+.^_`|~-; no spaces, "=", ";" or quotes)' }).optional(),
    /** Claim that names the tenant; dotted paths reach into nested objects ("org.id"). */
    claim: z.string().min(1).default('tenant_id'),
    algorithms: z.array(jwtAlgorithm).min(1).default(['RS256', 'EdDSA', 'HS256']),
    /** Keys for tokens of any issuer not bound by `keys` (secret: HS*, publicKeyFile: PEM, jwksFile: JWKS). */
    ...keySources,
    /** Keys bound to an issuer; tokens of an issuer named here are verified with its keys only. */
    keys: z.array(issuerKeys).min(1, { error: 'expected at least one issuer\'s keys (omit keys to use the unbound ones)' }).optional(),
    /**
     * The "iss" a token must carry; a list accepts any of them (tokens of two IdPs during a
     * migration, a staging IdP beside production), as Apollo Router and Envoy's jwt_authn do.
     * '' (an unset ${ENV}) loaded and then refused every token: refused at load instead.
     */
    issuer: z.union([nonEmpty('issuer'), z.array(nonEmpty('issuer')).min(1, { error: 'expected at least one issuer (omit issuer to accept any)' })]).optional(),
    // An empty list accepted no token at all (every request 401): refused at load instead.
    audience: z.union([nonEmpty('audience'), z.array(nonEmpty('audience')).min(1, { error: 'expected at least one audience (omit audience to accept any)' })]).optional(),
    /** Allowed clock skew in seconds. */
    clockToleranceSec: z.int().nonnegative().default(30),
    /**
     * Refuse tokens without an "exp" claim (Envoy's require_expiration). Off by default, as in
     * Envoy and jose: a token without "exp" never expires, so turn this on unless your issuer
     * mints deliberate long-lived tokens.
     */
    requireExpiration: z.boolean().default(false),
    /** A request without a token: reject (401), or (false) give it `defaultTenant` (else 403); the header is never read when `jwt` is set. */
    required: z.boolean().default(true),
  })
  .refine((j) => hasKeySource(j) || j.keys !== undefined, {
    error: 'expected one of secret, publicKeyFile or jwksFile to verify tokens with',
  })
  .superRefine((j, ctx) => {
    // A bound issuer that `issuer` does not accept: its keys would never verify a token.
    if (j.issuer === undefined) return
    const accepted = typeof j.issuer === 'string' ? [j.issuer] : j.issuer
    j.keys?.forEach((k, i) => {
      if (!accepted.includes(k.issuer)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'issuer'], message: `issuer "${k.issuer}" is not among jwt.issuer (${accepted.join(', ')}): its keys would verify no token`, input: k.issuer })
    })
  })

/** Resolves the tenant of a request: a verified JWT claim, else a header, else a default. */
export const tenantFilterConfig = z
  .strictObject({
    name: z.literal('tenant'),
    ...filterBase,
    /** Header naming the tenant when no JWT is configured. */
    header: headerName(false).default('x-tenant-id'),
    /** When set, the tenant comes only from a verified token; the header is ignored. */
    jwt: tenantJwtConfig.optional(),
    /** Tenant for requests that name none or an unknown one; without it they get UNKNOWN_TENANT. */
    defaultTenant: tenantId.optional(),
    /** Accept tenants not listed under `tenants:` (they get the default tier). */
    allowUnlisted: z.boolean().default(false),
    /** Header carrying the resolved tenant to the backend (overwrites what the client sent). */
    forwardHeader: headerName(true).default('x-tenant-id'),
  })
  // The tenant set under the token's own header replaced the token toward the backend (which then
  // saw "authorization: acme"), and the request's token went nowhere the backend could check it.
  .refine((f) => f.jwt === undefined || f.forwardHeader !== f.jwt.header, {
    path: ['forwardHeader'],
    error: 'expected another header than jwt.header: the tenant would replace the token toward the backend',
  })
export type TenantFilterConfig = z.infer<typeof tenantFilterConfig>
