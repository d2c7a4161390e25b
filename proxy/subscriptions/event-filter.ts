// The topic protocol's per-client `filter`: { "path.to.field": value | [values] } matched
// against each event's root field, all keys must match. It runs at fan-out, so every client of
// a topic still shares one upstream subscription. Pure and precompiled once per subscribe.
import type { ExecutionResultLike } from './replay-ring.ts'
import { isRawJSON } from '../../config/json-numbers.ts'

export type EventMatcher = (result: ExecutionResultLike) => boolean

const MAX_KEYS = 16
const MAX_VALUES = 100
const MAX_DEPTH = 8

export class EventFilterError extends Error {}

type Scalar = string | number | boolean | null


/** A number beyond 2^53 (or 1e400) read with its digits kept (protocols.ts) matches as its text. */
function digits(v: unknown): unknown {
  return v !== null && typeof v === 'object' && isRawJSON(v) ? v.rawJSON : v
}

function isScalar(v: unknown): v is Scalar {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
}

function same(v: unknown, b: Scalar): boolean {
  // An event's number beyond 2^53 arrives with the upstream's digits kept (upstream.ts).
  const a = digits(v)
  if (b === null) return a === null || a === undefined
  if (a === null || a === undefined || typeof a === 'object') return false
  // IDs travel as strings in GraphQL results; a client filtering on 7 means "7".
  return String(a) === String(b)
}

/** Compile a client's filter; throws EventFilterError with a message for the client. */
export function compileEventFilter(filter: unknown, rootField: string): EventMatcher | undefined {
  if (filter === undefined || filter === null) return undefined
  if (typeof filter !== 'object' || Array.isArray(filter)) throw new EventFilterError('"filter" must be an object of field paths to values')
  const entries = Object.entries(filter as Record<string, unknown>)
  if (entries.length === 0) return undefined
  if (entries.length > MAX_KEYS) throw new EventFilterError(`"filter" may name at most ${MAX_KEYS} fields`)
  const paths: string[][] = []
  const wanted: Scalar[][] = []
  for (const [key, value] of entries) {
    const path = key.split('.')
    if (path.length > MAX_DEPTH || path.some((p) => p === '')) throw new EventFilterError(`filter key "${key.slice(0, 64)}" is not a field path`)
    const values = Array.isArray(value) ? value.map(digits) : [digits(value)]
    if (values.length === 0 || values.length > MAX_VALUES || !values.every(isScalar)) {
      throw new EventFilterError(`filter "${key.slice(0, 64)}" must be a scalar or a list of 1-${MAX_VALUES} scalars`)
    }
    paths.push(path)
    wanted.push(values as Scalar[])
  }
  return (result) => {
    const data = result.data
    if (data === null || typeof data !== 'object') return false
    const root = (data as Record<string, unknown>)[rootField]
    for (let k = 0; k < paths.length; k++) {
      let cur: unknown = root
      for (const part of paths[k]!) {
        if (cur === null || typeof cur !== 'object') {
          cur = undefined
          break
        }
        // Own fields only: `constructor` or `toString` of an event that lacks them read the
        // prototype's function (not a scalar), so a filter {"constructor": null} missed it.
        cur = Object.hasOwn(cur, part) ? (cur as Record<string, unknown>)[part] : undefined
      }
      const options = wanted[k]!
      let hit = false
      for (let i = 0; i < options.length && !hit; i++) hit = same(cur, options[i]!)
      if (!hit) return false
    }
    return true
  }
}
