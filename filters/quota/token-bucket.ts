// Token-bucket arithmetic in fixed point: tokens are integer micro-units and the refill rate is
// integer micro-units per millisecond, so refills over integer milliseconds are exact in a
// float64 (up to 2^53) — the same numbers in every worker thread and in the Redis Lua script.

/** Micro-units per cost unit. */
export const MICRO = 1_000_000

/** units/s → micro-units per ms (rates are honoured to 1/1000 unit per second). */
export function ratePerMs(unitsPerSecond: number): number {
  return Math.round(unitsPerSecond * 1000)
}

/** units → micro-units. */
export function toMicro(units: number): number {
  return Math.round(units * MICRO)
}

/**
 * Tokens after refilling from `last` to `now`, capped at `capacity`. A clock that went back
 * refills nothing (and takes nothing away).
 */
export function refill(tokens: number, last: number, now: number, perMs: number, capacity: number): number {
  if (now <= last) return tokens > capacity ? capacity : tokens
  const t = tokens + (now - last) * perMs
  return t > capacity ? capacity : t
}

/** Milliseconds until `need` micro-units are available (0 when they already are). */
export function msUntilAvailable(tokens: number, need: number, perMs: number): number {
  if (tokens >= need) return 0
  if (perMs <= 0) return Number.POSITIVE_INFINITY
  return Math.ceil((need - tokens) / perMs)
}

/** Milliseconds until the bucket is full again. */
export function msUntilFull(tokens: number, capacity: number, perMs: number): number {
  return msUntilAvailable(tokens, capacity, perMs)
}

/**
 * One decision on a bucket held in plain numbers (the pure form the SAB and Lua versions
 * follow): refill, then take `cost` if there is enough. Returns the tokens left, or -1 - tokens
 * (a negative number) when the request does not fit, leaving the refilled amount untouched.
 */
export function take(tokens: number, last: number, now: number, perMs: number, capacity: number, cost: number): number {
  const t = refill(tokens, last, now, perMs, capacity)
  return t >= cost ? t - cost : -1 - t
}
