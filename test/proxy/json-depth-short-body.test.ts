// parsePostBody walks a parsed body for its nesting depth only when the body is long enough to
// nest past the limit (an opening and a closing bracket per level): the shortest bodies over the
// limit are still refused, and the deepest allowed ones still pass.
import { describe, expect, it } from 'vitest'
import { MAX_JSON_DEPTH } from '../../config/json-depth.ts'
import { GraphQLBatch, GraphQLRequestError, parsePostBody } from '../../proxy/graphql-request.ts'

const nested = (levels: number) => '['.repeat(levels) + ']'.repeat(levels)

describe('JSON depth of POST bodies at the length boundary', () => {
  it('the shortest body one level over the limit is refused', () => {
    const body = nested(MAX_JSON_DEPTH + 1)
    expect(body.length).toBe(2 * MAX_JSON_DEPTH + 2)
    expect(() => parsePostBody(Buffer.from(body))).toThrow(GraphQLRequestError)
    expect(() => parsePostBody(Buffer.from(body))).toThrow(`JSON body nested deeper than ${MAX_JSON_DEPTH} levels`)
    // inside an object too, with the fewest bytes an object level takes
    const obj = '{"query":"{ a }","variables":' + '{"a":'.repeat(MAX_JSON_DEPTH) + '1' + '}'.repeat(MAX_JSON_DEPTH) + '}'
    expect(() => parsePostBody(Buffer.from(obj))).toThrow(`JSON body nested deeper than ${MAX_JSON_DEPTH} levels`)
  })

  it('a body at the limit, and short ordinary requests, parse', () => {
    expect(parsePostBody(Buffer.from(nested(MAX_JSON_DEPTH)))).toBeInstanceOf(GraphQLBatch)
    const r = parsePostBody(Buffer.from('{"query":"{ a }","variables":{"a":[[1]]}}'))
    expect(r).not.toBeInstanceOf(GraphQLBatch)
    expect((r as { variables?: unknown }).variables).toEqual({ a: [[1]] })
  })
})
