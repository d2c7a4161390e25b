// JSON from clients nested deeper than this is refused where it enters (GraphQL request bodies
// and query strings, subscription WebSocket messages). JSON.parse copes with any depth, but
// everything after it that walks the value recursively — JSON.stringify toward the upstream,
// cache keys, subscription dedup keys — would overflow the stack on a few dozen KB of "[".
// 128 is serde_json's default recursion limit: what Apollo Router accepts.
export const MAX_JSON_DEPTH = 128

/** True when a parsed JSON value nests objects/arrays more than `max` levels deep. */
export function jsonDepthExceeds(value: unknown, max: number = MAX_JSON_DEPTH): boolean {
  return walk(value, max)
}

// Recursive, but never deeper than `max` frames: it stops where the limit is crossed.
function walk(v: unknown, left: number): boolean {
  if (v === null || typeof v !== 'object') return false
  if (left === 0) return true
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (walk(v[i], left - 1)) return true
    return false
  }
  for (const k in v) if (walk((v as Record<string, unknown>)[k], left - 1)) return true
  return false
}

/**
 * How many members the objects in a parsed JSON value hold in all, or -1 when it nests objects/arrays
 * more than `max` levels deep: the depth check and the member count a caller compares with the text
 * (a repeated member name, proxy/graphql-request.ts) in one walk.
 */
export function jsonMembers(value: unknown, max: number = MAX_JSON_DEPTH): number {
  return count(value, max)
}

function count(v: unknown, left: number): number {
  if (v === null || typeof v !== 'object') return 0
  if (left === 0) return -1
  let n = 0
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const c = count(v[i], left - 1)
      if (c < 0) return -1
      n += c
    }
    return n
  }
  for (const k in v) {
    const c = count((v as Record<string, unknown>)[k], left - 1)
    if (c < 0) return -1
    n += c + 1
  }
  return n
}
