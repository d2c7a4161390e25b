import { describe, expect, it } from 'vitest'
import { jsonDepthExceeds, MAX_JSON_DEPTH } from '../../config/json-depth.ts'

const nested = (depth: number, open = '[', close = ']') => JSON.parse(open.repeat(depth) + close.repeat(depth)) as unknown
const nestedObjects = (depth: number) => JSON.parse('{"a":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1)) as unknown

describe('JSON depth limit', () => {
  it('accepts up to the limit and refuses one level more, for arrays and objects', () => {
    expect(jsonDepthExceeds(nested(MAX_JSON_DEPTH))).toBe(false)
    expect(jsonDepthExceeds(nested(MAX_JSON_DEPTH + 1))).toBe(true)
    expect(jsonDepthExceeds(nestedObjects(MAX_JSON_DEPTH))).toBe(false)
    expect(jsonDepthExceeds(nestedObjects(MAX_JSON_DEPTH + 1))).toBe(true)
  })

  it('scalars and flat values are never too deep; depth hidden after wide siblings is found', () => {
    for (const v of [null, 1, 'x', true, [], {}, [1, 2, 3], { a: 1, b: 'c' }]) expect(jsonDepthExceeds(v)).toBe(false)
    const wide = { query: '{ a }', variables: { list: Array.from({ length: 1000 }, (_, i) => ({ i })), deep: nested(200) } }
    expect(jsonDepthExceeds(wide)).toBe(true)
    expect(jsonDepthExceeds({ variables: { list: Array.from({ length: 1000 }, (_, i) => ({ i })) } })).toBe(false)
  })

  it('does not overflow the stack on input that would (tens of thousands of levels)', () => {
    const deep = nested(50_000)
    expect(() => JSON.stringify(deep)).toThrow(RangeError) // what the limit protects against
    expect(jsonDepthExceeds(deep)).toBe(true)
    expect(jsonDepthExceeds(nested(10), 5)).toBe(true)
    expect(jsonDepthExceeds(nested(5), 5)).toBe(false)
  })
})
