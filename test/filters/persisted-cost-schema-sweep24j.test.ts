// Persisted filter sweep 24j: the cost schema file (`cost.schemaFile`).
// - IBM's cost spec declares `@cost(weight: String!)` ("5", "2.5"): such weights were read as Int
//   only and silently ignored, every field priced at the default weight.
// - A federation subgraph's SDL uses directives it imports through @link (@key, @shareable…)
//   without declaring them: the file was refused ("Unknown directive"), so the proxy did not start.
// Pure pricing, then the real proxy (worker thread) with such a file, the hints read at a node:http backend.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'graphql'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { analyzeDocument, loadCostSchema } from '../../filters/persisted/document-analysis.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const S = { defaultListSize: 10, objectCost: 1, scalarCost: 0, mutationCost: 10, slicingArguments: ['first'] }

const SUBGRAPH = `extend schema @link(url: "https://specs.apollo.dev/federation/v2.9", import: ["@key", "@shareable", "@cost", "@listSize"])
type Query { books(first: Int): [Book!]! @listSize(slicingArguments: ["first"]) }
type Book @key(fields: "id") { id: ID! @shareable review: Review @cost(weight: 7) }
type Review { text: String }
`

describe('cost schema file: IBM string weights and federation subgraph SDL', () => {
  it('a weight given as a numeric string (the IBM spec) is read, declared or not', () => {
    const declared = loadCostSchema(`directive @cost(weight: String!) on FIELD_DEFINITION | OBJECT
type Report @cost(weight: "4") { id: ID }
type Query { heavy: Int @cost(weight: "50") report: Report half: Int @cost(weight: "2.5") }`)
    const cost = (q: string) => analyzeDocument(parse(q), undefined, undefined, S, declared).cost
    expect(cost('{ heavy }')).toBe(50)
    expect(cost('{ report { id } }')).toBe(4)
    expect(cost('{ half heavy }')).toBe(53) // 2.5 + 50, rounded up
    const undeclared = loadCostSchema('type Query { heavy: Int @cost(weight: "50") }')
    expect(analyzeDocument(parse('{ heavy }'), undefined, undefined, S, undeclared).cost).toBe(50)
  })

  it('a subgraph SDL with @link-imported directives loads and prices; real SDL errors are still refused', () => {
    const info = loadCostSchema(SUBGRAPH)
    // books: 3 × (Book 1 + review: weight 7 + text 0)
    expect(analyzeDocument(parse('{ books(first: 3) { id review { text } } }'), undefined, undefined, S, info).cost).toBe(3 * (1 + 7))
    expect(() => loadCostSchema('type Query { a: Int }\ntype Query { b: Int }')).toThrow(/There can be only one type named "Query"/)
    expect(() => loadCostSchema('type Query { a: Missing }')).toThrow(/Unknown type "Missing"/)
  })

  describe('the proxy with a subgraph schema file', () => {
    let dir: string
    let backend: RawBackend
    let proxy: TestProxy
    const hints: unknown[] = []
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'igw-sweep24j-'))
      writeFileSync(join(dir, 'subgraph.graphql'), SUBGRAPH)
      backend = await startRawBackend((req, res) => {
        const h = req.headers['x-igw-cost-hints']
        hints.push(typeof h === 'string' ? JSON.parse(Buffer.from(h, 'base64url').toString()) : undefined)
        req.resume()
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end('{"data":{"books":[]}}')
        })
      })
      proxy = await startTestProxy({
        persistedDocuments: { operations: { books: { document: 'query Books { books(first: 4) { id review { text } } }' } } },
        routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'persisted', cost: { schemaFile: join(dir, 'subgraph.graphql') } }] as never }],
      })
    })
    afterAll(async () => {
      await proxy?.close()
      await backend?.close()
      if (dir) rmSync(dir, { recursive: true, force: true })
    })

    it('starts, and the manifest operation is priced with the file', async () => {
      const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: 'books' } } }) })
      expect(r.statusCode).toBe(200)
      await r.body.text()
      expect(hints).toEqual([{ id: 'books', cost: 4 * (1 + 7), costSource: 'estimate' }])
    })
  })
})
