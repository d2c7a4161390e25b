import { z } from 'zod'
import { filterBase, tenantId } from '../primitives.ts'

const jwtAlgorithm = z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA', 'Ed25519'])

export const tenantJwtConfig = z
  .strictObject({
    /** Request header holding "Bearer <jwt>". */
    header: z.string().toLowerCase().default('authorization'),
    /** Claim that names the tenant; dotted paths reach into nested objects ("org.id"). */
    claim: z.string().min(1).default('tenant_id'),
    algorithms: z.array(jwtAlgorithm).min(1).default(['RS256', 'EdDSA', 'HS256']),
    /** Shared secret for HS* (use ${ENV} interpolation, never a literal in a committed file). */
    secret: z.string().min(32, { error: 'expected an HMAC secret of at least 32 characters' }).optional(),
    /** PEM file with one SPKI public key (RS*, PS*, ES*, EdDSA). */
    publicKeyFile: z.string().min(1).optional(),
    /** A JWKS document on disk; keys are picked by "kid". */
    jwksFile: z.string().min(1).optional(),
    issuer: z.string().optional(),
    audience: z.union([z.string(), z.array(z.string())]).optional(),
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
  .refine((j) => j.secret !== undefined || j.publicKeyFile !== undefined || j.jwksFile !== undefined, {
    error: 'expected one of secret, publicKeyFile or jwksFile to verify tokens with',
  })

/** Resolves the tenant of a request: a verified JWT claim, else a header, else a default. */
export const tenantFilterConfig = z.strictObject({
  name: z.literal('tenant'),
  ...filterBase,
  /** Header naming the tenant when no JWT is configured. */
  header: z.string().toLowerCase().default('x-tenant-id'),
  /** When set, the tenant comes only from a verified token; the header is ignored. */
  jwt: tenantJwtConfig.optional(),
  /** Tenant for requests that name none or an unknown one; without it they get UNKNOWN_TENANT. */
  defaultTenant: tenantId.optional(),
  /** Accept tenants not listed under `tenants:` (they get the default tier). */
  allowUnlisted: z.boolean().default(false),
  /** Header carrying the resolved tenant to the backend (overwrites what the client sent). */
  forwardHeader: z.string().toLowerCase().default('x-tenant-id'),
})
export type TenantFilterConfig = z.infer<typeof tenantFilterConfig>
