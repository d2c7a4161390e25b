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
function describeRange(range: IntegerRange = {}): string {
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

/** RFC 3339 / ISO 8601 date-time, what the OpenAPI `format: date-time` promises: 2026-11-26T05:00:00Z, fraction and offset optional. */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T([01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$/i

/** A day that exists, as YYYY-MM-DD (Date.parse takes 2026-02-30 and rolls it over to March). */
export function isCalendarDate(raw: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(raw)
  if (m === null) return false
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])]
  return mo >= 1 && mo <= 12 && d >= 1 && new Date(Date.UTC(y, mo - 1, d)).getUTCDate() === d
}

/** Epoch ms of an RFC 3339 date-time; NaN for anything else, a day the month does not have included (Date.parse rolls 02-30 over to March). */
export function parseDateTime(raw: string): number {
  const m = DATE_TIME.exec(raw)
  if (m === null) return Number.NaN
  if (!isCalendarDate(`${m[1]}-${m[2]}-${m[3]}`)) return Number.NaN
  return Date.parse(raw)
}

/** An optional date-time query parameter as epoch ms: undefined when absent; present but not a date-time: 400 naming it. */
export function dateTimeQuery(query: URLSearchParams, name: string): number | undefined {
  const raw = query.get(name)
  if (raw === null) return undefined
  const ms = parseDateTime(raw)
  if (Number.isNaN(ms)) throw new HttpError(400, `invalid ${name}`, { problems: [`${name}: expected a date-time such as 2026-11-26T05:00:00Z, got ${shown(raw)}`] })
  return ms
}

/**
 * NUL (U+0000) cannot be stored in a PostgreSQL text column ("invalid byte sequence"), so an id, a
 * filter or a key carrying one is refused where it enters, on both engines alike.
 */
export function hasNul(text: string): boolean {
  return text.includes('\u0000')
}


const SHA256_HEX = /^[0-9a-f]{64}$/

/**
 * A config digest a proxy sends (`?digest=` on the stream, `digest` in an ACK): the sha256 (lower-case
 * hex) of the document it runs. Absent (`null`/`undefined`) is undefined: older proxies send none.
 */
export function digestParam(name: string, raw: unknown): string | undefined {
  if (raw === null || raw === undefined) return undefined
  if (typeof raw === 'string' && SHA256_HEX.test(raw)) return raw
  throw new HttpError(400, `${name}: expected a sha256 digest (64 lower-case hex digits), got ${shown(raw)}`)
}
