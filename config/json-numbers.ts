// Numbers JSON.parse does not keep as the client wrote them: an integer outside ±(2^53 − 1)
// (9007199254740993 reads as …992, while a backend with 64-bit or arbitrary-precision integers
// reads the digits it was sent) or a non-finite one (1e400 reads as Infinity, which
// JSON.stringify writes as null). Shared by the request parser, the cache key and the
// subscription hub, like json-depth.ts. Values are small and already depth-limited where they
// enter; the walk is iterative anyway.

/** Whether JSON.parse changed this number from the client's text. */
export function inexact(n: number): boolean {
  return !Number.isSafeInteger(n) && (Number.isInteger(n) || !Number.isFinite(n))
}

/**
 * Whether JSON.stringify may write this number other than the client did: anything but a safe
 * integer. A fraction loses digits beyond a double's 17 (12345678901234567.891 → …568, which a
 * backend's BigDecimal/Decimal scalar would have kept) or changes its spelling (1.50 → 1.5).
 */
export function respelled(n: number): boolean {
  return !Number.isSafeInteger(n)
}

/** Whether a parsed value holds such a number anywhere. */
export function hasInexactNumber(value: unknown): boolean {
  return hasNumber(value, inexact)
}

/** Whether a parsed value holds a number anywhere that is not a safe integer (see `respelled`). */
export function hasRespelledNumber(value: unknown): boolean {
  return hasNumber(value, respelled)
}

function hasNumber(value: unknown, test: (n: number) => boolean): boolean {
  if (typeof value === 'number') return test(value)
  if (value === null || typeof value !== 'object') return false
  const stack: object[] = [value]
  for (let o = stack.pop(); o !== undefined; o = stack.pop()) {
    const values: unknown[] = Array.isArray(o) ? o : Object.values(o)
    for (let i = 0; i < values.length; i++) {
      const x = values[i]
      if (typeof x === 'number') {
        if (test(x)) return true
      } else if (x !== null && typeof x === 'object') stack.push(x)
    }
  }
  return false
}

// JSON.rawJSON and the reviver's source text (ES2026, Node 21+): JSON.stringify writes the
// client's digits back unchanged.
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON

/** A JSON.parse reviver: the numbers `inexact` names become JSON.rawJSON of the client's text. */
export const keepInexactDigits = ((_key: string, value: unknown, context?: { source?: string }) =>
  typeof value === 'number' && inexact(value) && context?.source !== undefined ? rawJSON(context.source) : value) as (this: unknown, key: string, value: unknown) => unknown

/**
 * A JSON.parse reviver for a request the gateway re-serializes: every number whose text
 * JSON.stringify would write differently becomes JSON.rawJSON of the client's text, so what the
 * backend reads is what the client wrote (a superset of keepInexactDigits). Callers run it when
 * `hasRespelledNumber` says so; then integer-valued spellings (2.5E3, -0.0, 1e-400) are kept too.
 */
export const keepClientNumberText = ((_key: string, value: unknown, context?: { source?: string }) =>
  typeof value === 'number' && context?.source !== undefined && context.source !== String(value) ? rawJSON(context.source) : value) as (this: unknown, key: string, value: unknown) => unknown

/** Whether a value is a JSON.rawJSON object (only real ones: not a client's {"rawJSON": …}). */
export const isRawJSON = (JSON as unknown as { isRawJSON(v: unknown): v is { readonly rawJSON: string } }).isRawJSON

/**
 * Text that may hold a number JSON.parse does not keep: 16 digits in a row, or an exponent of two
 * digits or more (9.007199254740993e15, 1e400). Strings match too (then hasInexactNumber decides).
 */
const MAY_BE_INEXACT = /\d{16}|\d[eE]\+?\d\d/

/** JSON.parse, with numbers it would change (beyond 2^53, 1e400) kept as their digits (JSON.rawJSON); the cheap text check spares the walk. */
export function parseKeepingDigits(text: string): unknown {
  const v = JSON.parse(text) as unknown
  return MAY_BE_INEXACT.test(text) && hasInexactNumber(v) ? JSON.parse(text, keepInexactDigits) : v
}
