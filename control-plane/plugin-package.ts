// A plugin package as uploaded to POST /v1/plugins, and the decision whether to accept it: the
// shape is checked, then the publisher's ed25519 signature over the package's signing statement
// must verify with a key the operator trusts for that publisher. Pure: no I/O (the trust set and
// the parsed body come in), so every refusal reason is tested without a socket.
//
// The signature covers a one-line statement, not the bare artifact digest:
//   igw-plugin/v1:<publisher>/<name>@<version>:sha256:<hex digest of the artifact bytes>
// Signing only the digest would let anyone who holds one signed artifact upload it again under
// another name or version (npm's registry signatures bind `name@version:integrity` for the
// same reason). The statement is short and printable, so a publisher can sign it with
// `openssl pkeyutl -sign -rawin` as well as with node:crypto.
// A package with a `description` signs the v2 statement, which adds the description's digest:
//   igw-plugin/v2:<publisher>/<name>@<version>:sha256:<hex>:description-sha256:<hex of its UTF-8>
// The catalog shows the description beside a `trusted` plugin, so it must be the publisher's
// words too: under v1 alone, anyone holding plugins.write and a signed package could publish it
// first with a description of their own (and immutability kept it there).
import { createHash, verify, type KeyObject } from 'node:crypto'
import { z } from 'zod'
import { formatIssues } from '../config/load.ts'

export const REJECTION_REASONS = ['unsigned', 'bad_signature', 'untrusted_publisher', 'malformed'] as const
export type RejectionReason = (typeof REJECTION_REASONS)[number]

/** Largest artifact accepted (decoded bytes). The JSON body may be a third larger (base64). */
export const MAX_ARTIFACT_BYTES = 8 * 1024 * 1024
export const MAX_PACKAGE_BODY_BYTES = Math.ceil((MAX_ARTIFACT_BYTES * 4) / 3) + 64 * 1024

/** npm-like names: lower case, digits, `.`, `_`, `-`; publisher names follow the same rule. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/
/**
 * Semantic versions (2.0.0), with pre-release and build parts: SemVer 2.0.0's own grammar. Dot-
 * separated identifiers, none empty (`1.0.0-rc..1`, `1.0.0-rc.`, `1.0.0+.` are not versions) and
 * numeric pre-release identifiers without leading zeros (`1.0.0-rc.01`), as npm's semver and
 * every other SemVer parser read them: a version stored here must be one a consumer can order.
 */
const VERSION_PATTERN = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$/
const MAX_VERSION_CHARS = 64
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
/**
 * Standard base64 with padding, in its one canonical form (what `base64` and
 * Buffer#toString('base64') print): the bits the padding leaves unused are zero (RFC 4648 §3.5).
 * Node's decoder ignores them, so `QR==` and `QQ==` are the same signed byte, but the stored text
 * is what a consumer decodes later, and strict decoders (Rust's `base64` crate, Go's
 * `StdEncoding.Strict()`) refuse the first: a package that verified here could not be read there.
 */
function isBase64(s: string): boolean {
  // A single character class and a length check: linear, and no backtracking over megabytes.
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return false
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0
  if (pad === 0) return true
  // The last character before the padding carries 4 (`==`) or 2 (`=`) bits that are not data.
  return (BASE64_ALPHABET.indexOf(s[s.length - pad - 1]!) & (pad === 2 ? 0x0f : 0x03)) === 0
}
const base64 = (what: string) => z.string().refine(isBase64, `expected ${what}, base64 (RFC 4648, with padding, unused bits zero)`)

const packageSchema = z.strictObject({
  name: z.string().regex(NAME_PATTERN, 'expected a plugin name (lower case letters, digits, ".", "_", "-"; at most 64)'),
  // The length first: the pattern never runs over a megabyte of text.
  version: z.string().max(MAX_VERSION_CHARS).refine((v) => v.length <= MAX_VERSION_CHARS && VERSION_PATTERN.test(v), 'expected a semantic version like 1.2.3 (SemVer 2.0.0)'),
  publisher: z.string().regex(NAME_PATTERN, 'expected a publisher name (lower case letters, digits, ".", "_", "-"; at most 64)'),
  // Kept in a text column, which on PostgreSQL cannot hold NUL: refused here as malformed (named,
  // audited, counted) rather than by the database after the signature verified.
  // A lone UTF-16 surrogate (a JSON escape like "\ud800") is stored by both engines as U+FFFD:
  // the 201 showed one description and every later listing another. Refused the same way.
  description: z
    .string()
    .max(500)
    .refine((d) => !d.includes('\u0000'), 'must not contain a NUL character (U+0000)')
    .refine((d) => d.isWellFormed(), 'must be valid Unicode (it holds a lone UTF-16 surrogate)')
    .optional(),
  artifact: z
    .string()
    .min(1, 'expected the artifact bytes, base64')
    // Checked on the text before decoding, so an oversized upload costs no allocation.
    .max(Math.ceil(MAX_ARTIFACT_BYTES / 3) * 4, `the artifact is larger than ${MAX_ARTIFACT_BYTES} bytes`)
    .pipe(base64('the artifact bytes')),
  // Absent, null and "" all mean "not signed" (reason unsigned, which the security alert watches).
  signature: z.union([z.string(), z.null()]).optional(),
  /** Which of the publisher's trusted keys signed it (optional: every key of the publisher is tried). */
  keyId: z.string().min(1).max(128).optional(),
})

export type PluginPackage = z.infer<typeof packageSchema>

export interface PublisherKey {
  publisher: string
  keyId: string
  key: KeyObject
}

/** The keys an operator trusts, by publisher. */
export type TrustedKeys = ReadonlyMap<string, readonly PublisherKey[]>

export interface VerifiedPlugin {
  name: string
  version: string
  publisher: string
  description: string | undefined
  /** The key that verified the signature. */
  keyId: string
  /** sha256 of the artifact bytes, hex. */
  digest: string
  size: number
  /** base64, as uploaded. */
  artifact: string
  signature: string
}

export type PackageDecision =
  | { ok: true; plugin: VerifiedPlugin }
  | { ok: false; reason: RejectionReason; message: string; name?: string; version?: string; publisher?: string; digest?: string }

/** What the publisher signs: v1 without a description, v2 (which covers it) with one. */
export function signingStatement(p: { publisher: string; name: string; version: string; description?: string | null | undefined }, digestHex: string): string {
  if (p.description === undefined || p.description === null) return `igw-plugin/v1:${p.publisher}/${p.name}@${p.version}:sha256:${digestHex}`
  return `igw-plugin/v2:${p.publisher}/${p.name}@${p.version}:sha256:${digestHex}:description-sha256:${createHash('sha256').update(p.description).digest('hex')}`
}

export function artifactDigest(artifact: Buffer): string {
  return createHash('sha256').update(artifact).digest('hex')
}

/** Decide on an uploaded body (already parsed JSON). Checks run in order: shape, signature present, publisher trusted, signature valid. */
export function checkPackage(body: unknown, trusted: TrustedKeys): PackageDecision {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return { ok: false, reason: 'malformed', message: 'malformed plugin package: expected a JSON object {name, version, publisher, artifact, signature}' }
  const parsed = packageSchema.safeParse(body, { reportInput: true })
  if (!parsed.success) {
    const named = pickIdentity(body as Record<string, unknown>)
    return { ok: false, reason: 'malformed', message: `malformed plugin package: ${describeIssues(parsed.error.issues)}`, ...named }
  }
  const pkg = parsed.data
  const artifact = Buffer.from(pkg.artifact, 'base64')
  const id = { name: pkg.name, version: pkg.version, publisher: pkg.publisher }
  if (artifact.length > MAX_ARTIFACT_BYTES) return { ok: false, reason: 'malformed', message: `malformed plugin package: artifact: the artifact is larger than ${MAX_ARTIFACT_BYTES} bytes`, ...id }
  const digest = artifactDigest(artifact)
  const where = `${pkg.publisher}/${pkg.name}@${pkg.version}`
  if (pkg.signature === undefined || pkg.signature === null || pkg.signature === '') {
    return { ok: false, reason: 'unsigned', message: `unsigned plugin package ${where}: uploads must carry the publisher's ed25519 signature (base64) over "${signingStatement(pkg, digest)}"`, ...id, digest }
  }
  if (!isBase64(pkg.signature)) return { ok: false, reason: 'malformed', message: `malformed plugin package: signature: expected the signature, base64 (RFC 4648, with padding, unused bits zero)`, ...id, digest }
  const signature = Buffer.from(pkg.signature, 'base64')
  const keys = trusted.get(pkg.publisher) ?? []
  if (keys.length === 0) {
    const hint = trusted.size === 0 ? ' (no publisher is trusted: start the control plane with --plugin-trust F / IGW_PLUGIN_TRUST)' : ''
    return { ok: false, reason: 'untrusted_publisher', message: `untrusted publisher "${pkg.publisher}": no key of that publisher is in the plugin trust file${hint}`, ...id, digest }
  }
  const candidates = pkg.keyId === undefined ? keys : keys.filter((k) => k.keyId === pkg.keyId)
  if (candidates.length === 0) return { ok: false, reason: 'untrusted_publisher', message: `untrusted key "${pkg.keyId}": publisher "${pkg.publisher}" has no trusted key with that id (trusted: ${keys.map((k) => k.keyId).join(', ')})`, ...id, digest }
  if (signature.length !== 64) return { ok: false, reason: 'bad_signature', message: `bad signature on ${where}: an ed25519 signature is 64 bytes, got ${signature.length}`, ...id, digest }
  const statement = Buffer.from(signingStatement(pkg, digest))
  const signer = candidates.find((k) => verify(null, statement, k.key, signature))
  if (signer === undefined) {
    const v1 = Buffer.from(signingStatement({ ...pkg, description: undefined }, digest))
    if (pkg.description !== undefined && candidates.some((k) => verify(null, v1, k.key, signature))) {
      return {
        ok: false,
        reason: 'bad_signature',
        message: `bad signature on ${where}: it covers "${v1}", which leaves the description out; a package with a description signs "${statement}" (or leave the description out)`,
        ...id,
        digest,
      }
    }
    return {
      ok: false,
      reason: 'bad_signature',
      message: `bad signature on ${where}: it does not verify with ${candidates.length === 1 ? `the trusted key "${candidates[0]!.keyId}"` : `any of the ${candidates.length} trusted keys`} of "${pkg.publisher}" (the artifact, name or version changed after signing, or another key signed it)`,
      ...id,
      digest,
    }
  }
  return {
    ok: true,
    plugin: { name: pkg.name, version: pkg.version, publisher: pkg.publisher, description: pkg.description, keyId: signer.keyId, digest, size: artifact.length, artifact: pkg.artifact, signature: pkg.signature },
  }
}

/** A refusal's detail is answered, logged and kept in the signed audit log for good: bounded. */
const MAX_DETAIL_CHARS = 1000

/**
 * The problems of a malformed package in one bounded line. Unknown keys are the only part the
 * client sizes freely (their number and length; every value is already shown truncated):
 * formatIssues names at most a few of them, clipped, and the line is cut at MAX_DETAIL_CHARS.
 */
function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  // Each issue's input is shown clipped to a few dozen characters, but formatIssues redacts URL
  // credentials in the whole JSON text before it clips, with a pattern that is quadratic on text
  // like "a.a.a.…": a 400 KB bad `version` held the event loop (config streams, ACKs, every
  // request) for about a minute, the largest package body for hours. Only the start is shown.
  const text = formatIssues(issues.map((iss) => ('input' in iss ? { ...iss, input: clipInput(iss.input, 3) } : iss)) as z.core.$ZodIssue[]).join('; ')
  return text.length > MAX_DETAIL_CHARS ? `${text.slice(0, MAX_DETAIL_CHARS - 1)}…` : text
}

/** Enough of a refused value to show its start (strings cut, lists and maps shortened, depth bounded). */
const CLIP_CHARS = 200
const CLIP_ITEMS = 50
function clipInput(v: unknown, depth: number): unknown {
  if (typeof v === 'string') return v.length > CLIP_CHARS ? v.slice(0, CLIP_CHARS) : v
  if (v === null || typeof v !== 'object') return v
  if (Array.isArray(v)) return depth <= 0 ? [] : v.slice(0, CLIP_ITEMS).map((x) => clipInput(x, depth - 1))
  if (depth <= 0) return {}
  const out: Record<string, unknown> = {}
  let n = 0
  for (const k in v) {
    if (!Object.hasOwn(v, k)) continue
    if (n++ === CLIP_ITEMS) break
    // defineProperty: a "__proto__" key stays a key, as JSON.parse made it.
    Object.defineProperty(out, k.length > CLIP_CHARS ? k.slice(0, CLIP_CHARS) : k, { value: clipInput((v as Record<string, unknown>)[k], depth - 1), enumerable: true, writable: true, configurable: true })
  }
  return out
}

/** Name, version and publisher of a malformed package when they are usable strings (for the log and audit). */
function pickIdentity(body: Record<string, unknown>): { name?: string; version?: string; publisher?: string } {
  const out: { name?: string; version?: string; publisher?: string } = {}
  for (const k of ['name', 'version', 'publisher'] as const) {
    const v = body[k]
    if (typeof v === 'string' && v.length > 0 && v.length <= 64 && /^[\w.+-]+$/.test(v)) out[k] = v
  }
  return out
}

/**
 * Whether a stored plugin is still vouched for by the trust file the control plane runs with:
 * `trusted` when a key of its publisher is trusted and the stored signature verifies with it;
 * `revoked` otherwise (the key was removed from the trust file — a compromised or retired
 * publisher key — or moved to another publisher). Uploads are checked
 * once; without this a revoked publisher's plugins stayed listed exactly like trusted ones.
 */
export type PluginTrust = 'trusted' | 'revoked'

export function trustOf(p: { name: string; version: string; publisher: string; description?: string | null | undefined; keyId: string; digest: string; signature: string }, trusted: TrustedKeys): PluginTrust {
  const keys = trusted.get(p.publisher) ?? []
  const hex = p.digest.startsWith('sha256:') ? p.digest.slice(7) : p.digest
  const signature = Buffer.from(p.signature, 'base64')
  if (keys.length === 0 || signature.length !== 64) return 'revoked'
  // A row stored before v2 may carry a description under a v1 signature: the key still vouches
  // for its artifact, name and version.
  const statements = [signingStatement(p, hex), ...(p.description === null || p.description === undefined ? [] : [signingStatement({ ...p, description: undefined }, hex)])].map((s) => Buffer.from(s))
  // The key is what is trusted, its kid only a label: a kid added to a key the trust file still
  // holds (it defaults to the key's hash) or renamed must not mark everything it signed revoked.
  // The stored kid is tried first; a kid now naming another key still fails to verify.
  const ordered = [...keys.filter((k) => k.keyId === p.keyId), ...keys.filter((k) => k.keyId !== p.keyId)]
  return ordered.some((k) => statements.some((s) => verify(null, s, k.key, signature))) ? 'trusted' : 'revoked'
}
