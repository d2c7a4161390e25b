// Static document analysis, pure: depth and cost estimates, with and without a schema file.
import { parse } from 'graphql'
import { describe, expect, it } from 'vitest'
import { analyzeDocument, loadCostSchema, type CostSettings } from '../../filters/persisted/document-analysis.ts'
import { encodeHints, Manifest } from '../../filters/persisted/manifest.ts'

const S: CostSettings = { defaultListSize: 10, objectCost: 1, scalarCost: 0, mutationCost: 10, slicingArguments: ['first', 'last', 'limit'] }
const cost = (q: string, vars?: Record<string, unknown>, info?: ReturnType<typeof loadCostSchema>, op?: string) => analyzeDocument(parse(q), op, vars, S, info)

const SDL = `
  type Entity { id: ID! name: String! friends: [Entity!]! @listSize(assumedSize: 5) expensive: String @cost(weight: 50) }
  type Edge { node: Entity! }
  type Conn { edges: [Edge!]! total: Int }
  type Query {
    entity(id: ID!): Entity
    entities(first: Int): [Entity!]! @listSize(slicingArguments: ["first"], assumedSize: 100)
    search(first: Int): Conn! @listSize(slicingArguments: ["first"], sizedFields: ["edges"])
    tags: [String!]!
  }
  type Mutation { updateEntity(id: ID!, name: String!): Entity! }
`

describe('cost estimate without a schema', () => {
  it('objects cost 1, scalars 0, lists multiply by their slicing argument', () => {
    expect(cost('{ hello }').cost).toBe(1) // never below 1
    expect(cost('{ entity(id: 1) { id name } }').cost).toBe(1)
    expect(cost('{ entities(first: 20) { id name } }').cost).toBe(20)
    expect(cost('{ entities(first: 20) { id friends(first: 3) { id } } }').cost).toBe(20 * (1 + 3))
    expect(cost('{ a: entity(id: 1) { id } b: entity(id: 2) { id } }').cost).toBe(2)
  })
  it('a variable sizes the list with the request\'s value (default size when absent)', () => {
    const q = 'query Q($n: Int) { entities(first: $n) { id } }'
    expect(cost(q, { n: 7 })).toMatchObject({ cost: 7, variableDependent: true })
    expect(cost(q, {}).cost).toBe(10)
  })
  it('absurd sizes give a finite estimate of at most 2^53 - 1, never Infinity or NaN (a histogram throws on those)', () => {
    const huge = `1${'0'.repeat(400)}` // Number(huge) is Infinity
    expect(cost(`{ entities(first: ${huge}) { id } }`).cost).toBe(Number.MAX_SAFE_INTEGER)
    // 0 × ∞ was NaN: a zero-sized list around a huge child costs what a zero-sized list costs
    expect(cost(`{ entities(first: 0) { friends(first: ${huge}) { id } } }`).cost).toBe(1)
    const deep = `{ ${'entities(first: 1000000000) { '.repeat(20)}id${' }'.repeat(20)} }`
    expect(cost(deep).cost).toBe(Number.MAX_SAFE_INTEGER)
  })
  it('mutations add their base cost; fragments and inline fragments count', () => {
    expect(cost('mutation { updateEntity(id: 1, name: "x") { id } }').cost).toBe(11)
    expect(cost('query { ...F } fragment F on Query { entities(first: 4) { ... on Entity { id } } }').cost).toBe(4)
  })
})

describe('cost estimate with a schema file (@cost, @listSize)', () => {
  const info = loadCostSchema(SDL)
  it('uses the schema to know lists, their assumed sizes, weights and sized fields', () => {
    expect(cost('{ entities { id } }', undefined, info).cost).toBe(100) // assumedSize
    expect(cost('{ entities(first: 3) { id } }', undefined, info).cost).toBe(3) // slicing argument
    expect(cost('{ entity(id: 1) { friends { id } } }', undefined, info).cost).toBe(1 + 5)
    expect(cost('{ entity(id: 1) { expensive } }', undefined, info).cost).toBe(1 + 50)
    expect(cost('{ tags }', undefined, info).cost).toBe(1) // a scalar list costs 10 × 0
    // sizedFields: the size applies to edges, not to the connection
    expect(cost('{ search(first: 8) { total edges { node { id } } } }', undefined, info).cost).toBe(1 + 8 * (1 + 1))
  })
  it('accepts SDL that declares the directives itself', () => {
    const own = loadCostSchema(`directive @cost(weight: Int!) on FIELD_DEFINITION\ndirective @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION\ntype Query { x: [Int] @listSize(assumedSize: 2) @cost(weight: 3) }`)
    expect(cost('{ x }', undefined, own).cost).toBe(6)
  })
})

describe('depth and abuse', () => {
  it('measures depth through fragments and over every operation', () => {
    expect(cost('{ a { b { c } } }').depth).toBe(3)
    expect(cost('query A { a } query B { a { b { c { d } } } }', undefined, undefined, 'A').depth).toBe(4)
    expect(cost('{ ...F } fragment F on Query { a { ...G } } fragment G on A { b { c } }').depth).toBe(3)
  })
  it('cyclic fragments do not loop; fragment bombs are called too complex', () => {
    expect(cost('{ ...A } fragment A on Query { a ...B } fragment B on Query { b ...A }').tooComplex).toBe(false)
    let bomb = 'query { ...F0 } fragment F20 on Query { x }'
    for (let i = 0; i < 20; i++) bomb += ` fragment F${i} on Query { a: x ...F${i + 1} ...F${i + 1} }`
    expect(cost(bomb).tooComplex).toBe(true)
  })
  it('reports root fields and the operation type of the selected operation', () => {
    expect(cost('query A { x y } mutation B { z }', undefined, undefined, 'B')).toMatchObject({ operationType: 'mutation', rootFields: ['z'] })
  })
})

describe('manifest', () => {
  it('compiles hints once; looks up by id or by the document sha256', () => {
    const m = new Manifest({ operations: { top: { document: '{ entities(first: 5) { id } }', cacheTags: [], plannerHints: ['pin'], timeoutMs: 100 }, priced: { document: '{ hello }', costUnits: 42, cacheTags: [], plannerHints: [] } } }, S, undefined)
    const top = m.byId.get('top')!
    expect(top.hints).toEqual({ id: 'top', cost: 5, costSource: 'estimate', timeoutMs: 100, plannerHints: ['pin'] })
    expect(JSON.parse(Buffer.from(top.hintsHeader!, 'base64url').toString())).toEqual(top.hints)
    expect(m.lookup(top.docHash)).toBe(top)
    expect(m.lookup('priced')!.hints).toEqual({ id: 'priced', cost: 42, costSource: 'hint' })
    expect(encodeHints({ id: 'x', cost: 1, costSource: 'hint' })).not.toMatch(/[+/=]/)
  })
})
