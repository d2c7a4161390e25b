// Request path normalization before routing (Envoy's normalize_path / merge_slashes /
// path_with_escaped_slashes_action). Routes match path prefixes; a backend that resolves dot
// segments or decodes escapes itself would otherwise serve `/admin/x` for `/public/../admin/x`,
// which matched the `/public` route and skipped every filter of `/admin` (auth, quota, DLP).
// The normalized path is also what goes upstream, so the route and the backend agree.

export type EscapedSlashes = 'keep' | 'reject' | 'unescape'

export interface PathOptions {
  normalize: boolean
  mergeSlashes: boolean
  escapedSlashes: EscapedSlashes
}

/** A path the options refuse (an escaped slash under `reject`). */
export const REJECTED = null

/**
 * The request target (path and query) with its path normalized; the same string when nothing
 * changes (the common case costs one scan of the path, no allocation). `REJECTED` (null) for an
 * escaped slash under `escapedSlashes: reject`. The query is never touched.
 *
 * normalize: percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) decoded, other
 * escapes' hex upper-cased, `\` (raw, or `%5C` under `unescape`) made `/`, then RFC 3986 §5.2.4
 * dot-segment removal. mergeSlashes: `//` → `/`.
 * escapedSlashes: `%2F`/`%5C` kept as they are, refused, or decoded to `/` and `\`.
 */
export function normalizeTarget(url: string, o: PathOptions): string | typeof REJECTED {
  const q = url.indexOf('?')
  const end = q === -1 ? url.length : q
  let needs = false
  for (let i = 0; i < end; i++) {
    const c = url.charCodeAt(i)
    if (c === 37 /* % */ || (c === 92 /* \ */ && o.normalize)) {
      needs = true
      break
    }
    if (c === 47 /* / */ && i + 1 < end) {
      const d = url.charCodeAt(i + 1)
      if ((d === 46 /* . */ && o.normalize) || (d === 47 && o.mergeSlashes)) {
        needs = true
        break
      }
    }
  }
  if (!needs) return url
  let path = url.slice(0, end)
  if (path.includes('%')) {
    const decoded = decodeEscapes(path, o)
    if (decoded === REJECTED) return REJECTED
    path = decoded
  }
  // WHATWG URL parsing (browsers, and backends that read req.url with `new URL`: graphql-yoga,
  // Hono, Next.js) takes `\` for `/` in an http path: `/public/..\admin` was routed by the
  // `/public` prefix and ran as `/admin` there, past every filter of the `/admin` route. So a
  // backslash is a slash here too (the URL standard's reading; RFC 3986 has no raw `\` at all).
  if (o.normalize && path.includes('\\')) path = path.replaceAll('\\', '/')
  if (o.mergeSlashes) path = path.replace(/\/{2,}/g, '/')
  if (o.normalize) path = removeDotSegments(path)
  const out = q === -1 ? path : path + url.slice(q)
  return out === url ? url : out
}

function isUnreserved(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 65 && c <= 70) return c - 55
  if (c >= 97 && c <= 102) return c - 87
  return -1
}

function decodeEscapes(path: string, o: PathOptions): string | typeof REJECTED {
  let out = ''
  let from = 0
  for (let i = path.indexOf('%'); i !== -1 && i + 2 < path.length; i = path.indexOf('%', i + 1)) {
    const hi = hexValue(path.charCodeAt(i + 1))
    const lo = hexValue(path.charCodeAt(i + 2))
    if (hi < 0 || lo < 0) continue // not an escape: left as it is (node:http passed it on)
    const byte = hi * 16 + lo
    let rep: string | undefined
    if (byte === 0x2f || byte === 0x5c) {
      if (o.escapedSlashes === 'reject') return REJECTED
      if (o.escapedSlashes === 'unescape') rep = byte === 0x2f ? '/' : '\\'
      else if (o.normalize) rep = `%${path.slice(i + 1, i + 3).toUpperCase()}`
    } else if (o.normalize) rep = isUnreserved(byte) ? String.fromCharCode(byte) : `%${path.slice(i + 1, i + 3).toUpperCase()}`
    if (rep === undefined) continue
    out += path.slice(from, i) + rep
    from = i + 3
    i += 2
  }
  return from === 0 ? path : out + path.slice(from)
}

/** RFC 3986 §5.2.4 remove_dot_segments, for an absolute path. */
export function removeDotSegments(path: string): string {
  if (!path.includes('.')) return path
  const segs = path.split('/')
  const out: string[] = []
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!
    const last = i === segs.length - 1
    if (s === '.' || s === '..') {
      if (s === '..' && out.length > 0) out.pop()
      if (last) out.push('') // "/a/b/.." → "/a/"
      continue
    }
    out.push(s)
  }
  return `/${out.join('/')}`
}
