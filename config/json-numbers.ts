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

/** Whether a parsed value holds such a number anywhere. */
export function hasInexactNumber(value: unknown): boolean {
  if (typeof value === 'number') return inexact(value)
  if (value === null || typeof value !== 'object') return false
  const stack: object[] = [value]
  for (let o = stack.pop(); o !== undefined; o = stack.pop()) {
    const values: unknown[] = Array.isArray(o) ? o : Object.values(o)
    for (let i = 0; i < values.length; i++) {
      const x = values[i]
      if (typeof x === 'number') {
        if (inexact(x)) return true
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

/** Whether a value is a JSON.rawJSON object (only real ones: not a client's {"rawJSON": …}). */
export const isRawJSON = (JSON as unknown as { isRawJSON(v: unknown): v is { readonly rawJSON: string } }).isRawJSON
