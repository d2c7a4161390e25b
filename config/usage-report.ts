// The usage report: what a proxy tells the control plane about each tenant (counters since the
// last report), and what statements add up per day. A contract between the planes, like the
// config document, so it lives here where both may import it.

export interface TenantCounters {
  requests: number
  errors: number
  costUnits: number
  rejections: Record<string, number>
  bytesExported: number
  dlpActions: Record<string, number>
  byKind: Record<string, number>
}

export function emptyCounters(): TenantCounters {
  return { requests: 0, errors: 0, costUnits: 0, rejections: {}, bytesExported: 0, dlpActions: {}, byKind: {} }
}

/**
 * map[k] += by. Own properties only: a counter named like an Object.prototype member
 * ("constructor", "toString", "valueOf" — keys a report may carry) read the inherited function as
 * its previous value, and the sum became a string ("function toString() { [native code] }3") in
 * the signed statement and its totals.
 */
export function addTo(map: Record<string, number>, k: string, by: number): void {
  map[k] = (Object.hasOwn(map, k) ? map[k]! : 0) + by
}

function addMap(into: Record<string, number>, from: Record<string, number>): void {
  for (const k of Object.keys(from)) addTo(into, k, from[k]!)
}

/** into += from, field by field. */
export function addCounters(into: TenantCounters, from: TenantCounters): TenantCounters {
  into.requests += from.requests
  into.errors += from.errors
  into.costUnits += from.costUnits
  into.bytesExported += from.bytesExported
  addMap(into.rejections, from.rejections)
  addMap(into.dlpActions, from.dlpActions)
  addMap(into.byKind, from.byKind)
  return into
}
