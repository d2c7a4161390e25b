// Persisted-documents manifest sweep 19c: a manifest document that no GraphQL server can run —
// a fragment cycle, a spread of a fragment the document does not define, two fragments of one
// name, a variable its operation does not define — was accepted. The config loaded, the
// control plane pushed it, and every request naming the id went to the backend and came back
// with a validation error (the gateway's own analysis skipped the cycle silently). It is now
// refused when the config is validated, naming the id and the line, as a syntax error is.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'

function load(document: string) {
  return () => validateConfig({ routes: [{ name: 'g', upstream: 'http://127.0.0.1:9' }], persistedDocuments: { operations: { entityPage: { document } } } })
}

describe('manifest documents that cannot run are refused at load', () => {
  it('a fragment cycle, named with the id and the line', () => {
    expect(load('query P { ...A }\nfragment A on Query { entities { id } ...B }\nfragment B on Query { ...A }')).toThrow(
      /persistedDocuments\.operations\.entityPage\.document: Cannot spread fragment "A" within itself via "B"\. \(line 2, column 39\)/,
    )
  })

  it('a spread of an unknown fragment, a duplicate fragment, an undefined variable', () => {
    expect(load('query P { ...Missing }')).toThrow(/entityPage\.document: Unknown fragment "Missing"\. \(line 1, column 14\)/)
    expect(load('query P { ...F }\nfragment F on Query { a }\nfragment F on Query { b }')).toThrow(/entityPage\.document: There can be only one fragment named "F"/)
    expect(load('query P {\n  entity(id: $id) { id }\n}')).toThrow(/entityPage\.document: Variable "\$id" is not defined by operation "P"\. \(line 2, column 14\)/)
  })

  it('documents that only a schema could judge still load (the gateway has none at this point)', () => {
    expect(load('query P($id: ID!) { entity(id: $id) { ...F } }\nfragment F on Entity { id name }')).not.toThrow()
  })
})
