// The cache adds `__typename` where a selection set selects an id (invalidation.injectTypename).
// It re-printed the whole document to do so: a backend's error locations (line, column) then
// pointed into igw's text, not the client's (a curl or plain-fetch user's "line 4" became
// another line; comments and formatting gone). Now the client's text is kept, with
// ` __typename` written before each closing brace that needs it.
import { parse, print } from 'graphql'
import { describe, expect, it } from 'vitest'
import { withTypenames } from '../../../filters/cache/entity-tags.ts'

/** Line and column (1-based) of the first `needle` in `text`. */
function where(text: string, needle: string): [number, number] {
  const i = text.indexOf(needle)
  const before = text.slice(0, i).split('\n')
  return [before.length, before.at(-1)!.length + 1]
}

describe('withTypenames keeps the client\'s text', () => {
  it('every field stays on its line and column in a multi-line document', () => {
    const doc = ['query Book($id: ID!) {', '  # the book', '  book(id: $id) {', '    id', '    nope', '    author { id name }', '  }', '}', ''].join('\n')
    const out = withTypenames(parse(doc))!
    expect(out).toBeDefined()
    for (const field of ['book(id', 'nope', 'author', '# the book']) expect(where(out, field)).toEqual(where(doc, field))
    expect(out.split('\n')).toHaveLength(doc.split('\n').length)
    // The same operation as the tree edit would give.
    expect(print(parse(out))).toBe(print(parse('query Book($id: ID!) { book(id: $id) { id nope author { id name __typename } __typename } }')))
  })

  it('a one-line document: the brace that needs it gets it, nothing else moves', () => {
    expect(withTypenames(parse('{a{id}}'))).toBe('{a{id __typename}}')
    expect(withTypenames(parse('{ a { id, b { x } } }'))).toBe('{ a { id, b { x }  __typename} }')
  })

  it('nothing needed: undefined, as before', () => {
    expect(withTypenames(parse('{ a { id __typename } }'))).toBeUndefined()
  })

  it('without source locations, the edited tree is printed', () => {
    const out = withTypenames(parse('{ a { id } }', { noLocation: true }))!
    expect(print(parse(out))).toBe(print(parse('{ a { id __typename } }')))
  })
})
