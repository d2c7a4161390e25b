// Canonical JSON (object keys sorted, no whitespace): the bytes that ETags, the audit hash chain
// and digests are computed over, so the same value always hashes the same on every engine.
import { createHash } from 'node:crypto'

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`
  const keys = Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] !== undefined).sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A strong ETag for a JSON value: its canonical form's digest (quoted, as HTTP wants it). */
export function etagOf(value: unknown): string {
  return `"${sha256Hex(canonicalJson(value)).slice(0, 32)}"`
}

export interface Change {
  path: string
  op: 'add' | 'remove' | 'replace'
  before?: unknown
  after?: unknown
}

/**
 * A key that can be one segment of a dotted path: not empty, no ".", "[" or "]". Others (a
 * webhook header "X.Auth", a tenant "acme.eu") would make the path ambiguous, and readers split
 * paths on those characters — GET /v1/audit redacts a diff value by its path, so a header value
 * under "webhook.headers.X.Auth" was shown to viewers as if "Auth" were a field of "X".
 */
const PLAIN_KEY = /^[^.[\]]+$/

/**
 * Leaf-level differences between two JSON values, with dotted/indexed paths. A key that is absent
 * on one side and null on the other is a change (`limitPerDay: null` is "no limit", absent is
 * "the default"). Where a changed key cannot be a path segment (see PLAIN_KEY), the object
 * holding it is reported as one replacement, so every path stays unambiguous.
 */
export function jsonDiff(before: unknown, after: unknown, path = ''): Change[] {
  // Before the canonical comparison: canonicalJson(undefined) is "null", the same as null's.
  if (before === undefined && after === undefined) return []
  if (before === undefined) return [{ path: path || '(root)', op: 'add', after }]
  if (after === undefined) return [{ path: path || '(root)', op: 'remove', before }]
  if (canonicalJson(before) === canonicalJson(after)) return []
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
  if (isObj(before) && isObj(after)) {
    // Own keys only: a tenant named "constructor" added is an add, not a replace of Object.
    const own = (o: Record<string, unknown>, k: string): unknown => (Object.hasOwn(o, k) ? o[k] : undefined)
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()
    const changed = keys.filter((k) => own(before, k) !== own(after, k))
    if (changed.some((k) => !PLAIN_KEY.test(k) && jsonDiff(own(before, k), own(after, k)).length > 0)) return [{ path: path || '(root)', op: 'replace', before, after }]
    const out: Change[] = []
    for (const k of changed) out.push(...jsonDiff(own(before, k), own(after, k), path ? `${path}.${k}` : k))
    return out
  }
  // Element by element only where each changed element is an object: a changed scalar element
  // would get a path ending in an index ("previousCursorKeys[0]"), which names no field, so a
  // reader redacting by the path's last name (GET /v1/audit for viewers) showed the secret
  // key. The whole array is one replacement then, under its own name.
  if (Array.isArray(before) && Array.isArray(after) && before.length === after.length && before.every((b, i) => b === after[i] || (isObj(b) && isObj(after[i])))) {
    const out: Change[] = []
    before.forEach((b, i) => out.push(...jsonDiff(b, after[i], `${path}[${i}]`)))
    return out
  }
  return [{ path: path || '(root)', op: 'replace', before, after }]
}
