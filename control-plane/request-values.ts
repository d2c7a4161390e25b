// Values from a request (path segments, query parameters, body fields) that reach SQL or a
// comparison with a stored number. Every integer goes through `parseInteger`, one strict rule for
// all of them: in a URL, decimal digits only (no sign, fraction or exponent); in a JSON body, a
// number that is an integer (a string is not); within [min, max]. The ceiling is Number.MAX_SAFE_INTEGER — JavaScript's exact integers, which
// also fit the BIGINT columns on both engines — so `1.5`, `1e300` or `99999999999999999999`
// become a 400 naming the parameter, never a database error.
import { HttpError } from './http-kit.ts'

export interface IntegerRange {
  min?: number
  max?: number
  /** A JSON body field: only a JSON number will do (URL values are text, and are parsed). */
  json?: boolean
}

/** At most 16 digits: anything longer is above MAX_SAFE_INTEGER (9007199254740991) anyway. */
const DECIMAL = /^\d{1,16}$/

/** The integer `raw` denotes within the range, or undefined. Strings are decimal digits only. */
export function parseInteger(raw: unknown, range: IntegerRange = {}): number | undefined {
  const min = range.min ?? 0
  const max = range.max ?? Number.MAX_SAFE_INTEGER
  let n: number
  if (typeof raw === 'number') n = raw
  else if (typeof raw === 'string' && !range.json && DECIMAL.test(raw)) n = Number(raw)
  else return undefined
  if (!Number.isSafeInteger(n) || n < min || n > max) return undefined
  return n
}

/** What a range accepts, for problem texts: "an integer from 1 to 1000". */
export function describeRange(range: IntegerRange = {}): string {
  const min = range.min ?? 0
  const max = range.max ?? Number.MAX_SAFE_INTEGER
  return max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min} (at most ${max})` : `an integer from ${min} to ${max}`
}

function shown(raw: unknown): string {
  const text = typeof raw === 'string' ? JSON.stringify(raw) : raw === undefined ? 'nothing' : (JSON.stringify(raw) ?? String(raw))
  return text.length > 60 ? `${text.slice(0, 57)}…` : text
}

/** The integer, or a 400 whose problem names the parameter (`limit`, `version`, `body.version`). */
export function integerParam(name: string, raw: unknown, range: IntegerRange = {}): number {
  const n = parseInteger(raw, range)
  if (n === undefined) throw new HttpError(400, `invalid ${name}`, { problems: [`${name}: expected ${describeRange(range)}, got ${shown(raw)}`] })
  return n
}

/** An optional query parameter: `fallback` when absent; present but not an integer in range: 400. */
export function integerQuery(query: URLSearchParams, name: string, fallback: number, range: IntegerRange = {}): number {
  const raw = query.get(name)
  return raw === null ? fallback : integerParam(name, raw, range)
}

/**
 * NUL (U+0000) cannot be stored in a PostgreSQL text column ("invalid byte sequence"), so an id, a
 * filter or a key carrying one is refused where it enters, on both engines alike.
 */
export function hasNul(text: string): boolean {
  return text.includes('\u0000')
}

