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

/** Leaf-level differences between two JSON values, with dotted/indexed paths. */
export function jsonDiff(before: unknown, after: unknown, path = ''): Change[] {
  if (canonicalJson(before) === canonicalJson(after)) return []
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
  if (before === undefined) return [{ path: path || '(root)', op: 'add', after }]
  if (after === undefined) return [{ path: path || '(root)', op: 'remove', before }]
  if (isObj(before) && isObj(after)) {
    const out: Change[] = []
    for (const k of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) out.push(...jsonDiff(before[k], after[k], path ? `${path}.${k}` : k))
    return out
  }
  if (Array.isArray(before) && Array.isArray(after) && before.length === after.length) {
    const out: Change[] = []
    before.forEach((b, i) => out.push(...jsonDiff(b, after[i], `${path}[${i}]`)))
    return out
  }
  return [{ path: path || '(root)', op: 'replace', before, after }]
}
