// A rolling budget: cost units over the last `buckets` × `bucketMs` (e.g. 720 × 1 h = 30 days),
// kept as a ring of per-bucket sums and a running total, so every decision is O(1) amortized.
// The state is a slice of a Float64Array (a SharedArrayBuffer view in production, a plain array
// in tests); callers hold the ring's lock. The Redis Lua script implements the same rules.

// Ring header fields (offsets from the ring's base).
export const R_HEAD = 0 // newest bucket index (absolute: floor(ms / bucketMs)); 0 = never used
export const R_TOTAL = 1 // sum of the live buckets
export const R_BUCKET_MS = 2
export const R_BUCKETS = 3
export const R_RETRY_AT = 4 // cached "enough budget frees up at" (ms) while rejections repeat
export const R_FIRED = 5 // 4 slots: when each threshold last fired (ms)
export const MAX_THRESHOLDS = 4
export const R_RETRY_NEED = 9 // the cost R_RETRY_AT was computed for
/**
 * 4 slots: the threshold (ratio) each R_FIRED marker belongs to. Markers follow their threshold's
 * value, not its position: a reload that adds, removes or reorders thresholds must neither fire
 * a threshold again that already fired (its marker moved to another position) nor silence one
 * (another threshold's marker now at its position: dropping 0.8 from [0.8, 1] hid the 100 % event
 * for a window). NaN: unknown (a state file from a writer without them): the marker stays where it is.
 */
export const R_FIRED_TH = 10
/**
 * The budget units R_RETRY_AT was computed under: a reload that changes them (a lower budget
 * frees up later) must not be answered with the old wait until it passes.
 */
export const R_RETRY_UNITS = 14
export const RING_HEADER = 15
/** The largest window in buckets (31 days of hours). */
export const RING_SLOTS = 744
export const RING_F64 = RING_HEADER + RING_SLOTS

export interface BudgetShape {
  units: number
  windowMs: number
  bucketMs: number
  buckets: number
  thresholds: readonly number[]
}

/**
 * Bring the ring to the bucket of `now`: buckets that left the window are subtracted from the
 * total and zeroed. A changed shape (bucket size or count, after a config reload) keeps the
 * total, carried as one lump in the current bucket, so a reload never forgives usage.
 */
export function advance(f: Float64Array, o: number, now: number, shape: BudgetShape): void {
  const n = shape.buckets
  const cur = Math.floor(now / shape.bucketMs)
  const head = f[o + R_HEAD]!
  if (head === 0 || f[o + R_BUCKET_MS] !== shape.bucketMs || f[o + R_BUCKETS] !== n) {
    const carried = head === 0 ? 0 : f[o + R_TOTAL]!
    f.fill(0, o + RING_HEADER, o + RING_HEADER + RING_SLOTS)
    f[o + R_BUCKET_MS] = shape.bucketMs
    f[o + R_BUCKETS] = n
    f[o + R_HEAD] = cur
    f[o + R_TOTAL] = carried
    f[o + RING_HEADER + (cur % n)] = carried
    f[o + R_RETRY_AT] = 0
    return
  }
  if (cur <= head) return
  if (cur - head >= n) {
    f.fill(0, o + RING_HEADER, o + RING_HEADER + n)
    f[o + R_TOTAL] = 0
  } else {
    let total = f[o + R_TOTAL]!
    for (let k = head + 1; k <= cur; k++) {
      const i = o + RING_HEADER + (k % n)
      total -= f[i]!
      f[i] = 0
    }
    f[o + R_TOTAL] = total < 0 ? 0 : total
  }
  f[o + R_HEAD] = cur
}

/** Add units to the current bucket (after advance). */
export function add(f: Float64Array, o: number, units: number): void {
  const n = f[o + R_BUCKETS]!
  const head = f[o + R_HEAD]!
  f[o + RING_HEADER + (head % n)] = f[o + RING_HEADER + (head % n)]! + units
  f[o + R_TOTAL] = f[o + R_TOTAL]! + units
  f[o + R_RETRY_AT] = 0
}

export function total(f: Float64Array, o: number): number {
  return f[o + R_TOTAL]!
}

/**
 * When `need` more units will fit under `units` as old buckets leave the window (ms since
 * epoch). O(buckets) but cached in the ring until it passes, so repeated rejections cost O(1).
 */
export function retryAt(f: Float64Array, o: number, now: number, shape: BudgetShape, need: number): number {
  const cached = f[o + R_RETRY_AT]!
  if (cached > now && f[o + R_RETRY_NEED] === need && f[o + R_RETRY_UNITS] === shape.units) return cached
  const n = shape.buckets
  const head = f[o + R_HEAD]!
  let excess = f[o + R_TOTAL]! + need - shape.units
  let at = (head + 1) * shape.bucketMs
  for (let k = head - n + 1; k <= head && excess > 0; k++) {
    excess -= f[o + RING_HEADER + (((k % n) + n) % n)]!
    at = (k + n) * shape.bucketMs // bucket k leaves the window when bucket k + n begins
  }
  // A need larger than the whole budget never fits: say "a full window".
  const result = excess > 0 ? now + shape.windowMs : at
  f[o + R_RETRY_AT] = result
  f[o + R_RETRY_NEED] = need
  f[o + R_RETRY_UNITS] = shape.units
  return result
}

/**
 * Make the markers line up with `thresholds` (a reload may have changed them): each configured
 * threshold keeps the marker it had wherever it was, a new one starts unmarked. Markers of
 * thresholds no longer configured stay in the positions left free (newest first): a threshold
 * dropped by one reload and listed again by the next must not fire a second time in the window
 * (as in Redis, where markers are kept by value). Four comparisons when nothing changed.
 */
function alignMarkers(f: Float64Array, o: number, th: readonly number[]): void {
  const n = Math.min(th.length, MAX_THRESHOLDS)
  let same = true
  for (let i = 0; i < n; i++) {
    const have = f[o + R_FIRED_TH + i]!
    // NaN (unknown owner, from an older state file): the marker keeps its position.
    if (have !== th[i] && !Number.isNaN(have)) same = false
  }
  if (same) {
    for (let i = 0; i < n; i++) f[o + R_FIRED_TH + i] = th[i]!
    return
  }
  const owners: number[] = []
  const marks: number[] = []
  for (let j = 0; j < MAX_THRESHOLDS; j++) {
    owners.push(f[o + R_FIRED_TH + j]!)
    marks.push(f[o + R_FIRED + j]!)
  }
  const taken = [false, false, false, false]
  for (let i = 0; i < MAX_THRESHOLDS; i++) {
    f[o + R_FIRED + i] = 0
    f[o + R_FIRED_TH + i] = 0
  }
  for (let i = 0; i < n; i++) {
    f[o + R_FIRED_TH + i] = th[i]!
    for (let j = 0; j < MAX_THRESHOLDS; j++) {
      if (!taken[j] && owners[j] === th[i]) {
        taken[j] = true
        f[o + R_FIRED + i] = marks[j]!
        break
      }
    }
  }
  // The others' markers (known owner, fired at some point), newest first, where room is left.
  const rest: number[] = []
  for (let j = 0; j < MAX_THRESHOLDS; j++) if (!taken[j] && owners[j]! > 0 && marks[j]! > 0) rest.push(j)
  rest.sort((a, b) => marks[b]! - marks[a]!)
  for (let i = n, k = 0; i < MAX_THRESHOLDS && k < rest.length; i++, k++) {
    f[o + R_FIRED_TH + i] = owners[rest[k]!]!
    f[o + R_FIRED + i] = marks[rest[k]!]!
  }
}

/**
 * Thresholds crossed by the current total that have not fired within the last window: marks
 * them fired at `now` and returns them as a bit mask (bit i = thresholds[i]). `exhausted`: a hard
 * cap refused a request the remaining budget could not hold, which counts as reaching 100 % — the
 * threshold 1 only. The lower ones still need the total: counted as reached, one expensive
 * request refused at 50 % sent "80 %" (ratio 0.5) and silenced the real 80 % for the window.
 */
export function crossedThresholds(f: Float64Array, o: number, now: number, shape: BudgetShape, exhausted: boolean): number {
  const ratio = f[o + R_TOTAL]! / shape.units
  const th = shape.thresholds
  let mask = 0
  let aligned = false
  for (let i = 0; i < th.length && i < MAX_THRESHOLDS; i++) {
    if (ratio < th[i]! && !(exhausted && th[i]! >= 1)) continue
    if (!aligned) {
      alignMarkers(f, o, th)
      aligned = true
    }
    const last = f[o + R_FIRED + i]!
    if (last !== 0 && now - last < shape.windowMs) continue
    f[o + R_FIRED + i] = now
    mask |= 1 << i
  }
  return mask
}
