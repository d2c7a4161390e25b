// YAML pitfalls: keys that read as numbers, booleans or null; tags of non-JSON values; aliases.
import { describe, expect, it } from 'vitest'
import { configuredTier } from '../../config/defaults.ts'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'

const ROUTE = 'routes: [{name: a, upstream: "http://127.0.0.1:9"}]\n'

describe('a plain key is the name as written', () => {
  it('numeric tenant ids keep their digits (007 became "7", a 20-digit id was rounded)', () => {
    const cfg = validateConfig(parseConfigText(`${ROUTE}tenants:\n  007: {tier: gold}\n  12345678901234567890: {tier: bronze}\n  0x1F: {tier: gold}\n`, 'x.yaml', {}))
    expect(Object.keys(cfg.tenants).sort()).toEqual(['007', '0x1F', '12345678901234567890'])
    expect(configuredTier(cfg.tenants, '007')).toBe('gold')
    expect(configuredTier(cfg.tenants, '12345678901234567890')).toBe('bronze')
    // The names nobody wrote are no tenants.
    expect(Object.hasOwn(cfg.tenants, '7')).toBe(false)
    expect(Object.hasOwn(cfg.tenants, '12345678901234567000')).toBe(false)
  })

  it('booleans and nulls as keys too; a key from ${VAR} is never typed', () => {
    expect(parseConfigText('m:\n  True: 1\n  ~: 2\n  1e3: 3\n  ${T}: 4\n', 'x.yaml', { T: '0042' })).toEqual({ m: { True: 1, '~': 2, '1e3': 3, '0042': 4 } })
    // `007` and `"7"` are two keys now; `10042` and `"10042"` still one, refused.
    expect(parseConfigText('m:\n  007: 1\n  "7": 2\n', 'x.yaml', {})).toEqual({ m: { '007': 1, '7': 2 } })
    expect(problems(() => parseConfigText('m:\n  10042: 1\n  "10042": 2\n', 'x.yaml', {}))).toEqual([
      'line 3: key "10042" appears twice in one map (one quoted, one not: the same key once loaded); each key may appear once',
    ])
  })

  it('values are still typed', () => {
    expect(parseConfigText('a: 007\nb: ${W}\n', 'x.yaml', { W: '4' })).toEqual({ a: 7, b: 4 })
  })
})

describe('aliases', () => {
  it('one block merged into many entries loads (101 uses were refused as an "alias bomb")', () => {
    const tenants = Array.from({ length: 299 }, (_, i) => `  t${i + 1}: {<<: *gold}\n`).join('')
    const cfg = validateConfig(parseConfigText(`${ROUTE}tenants:\n  t0: &gold {tier: gold}\n${tenants}`, 'x.yaml', {}))
    expect(Object.keys(cfg.tenants)).toHaveLength(300)
    expect(configuredTier(cfg.tenants, 't299')).toBe('gold')
    const more = Array.from({ length: 150 }, (_, i) => `  - {name: r${i}, upstream: "http://127.0.0.1:9", match: *m}\n`).join('')
    const routes = validateConfig(parseConfigText(`routes:\n  - {name: r, upstream: "http://127.0.0.1:9", match: &m {pathPrefix: /g}}\n${more}`, 'x.yaml', {})).routes
    expect(routes[150]!.match.pathPrefix).toBe('/g')
  })

  it('an alias inside the node its anchor names is refused (it made a circular object validation walked forever)', () => {
    expect(problems(() => parseConfigText(`${ROUTE}x: &x [1, *x]\n`, 'x.yaml', {}))).toEqual(['line 2: the alias *x is inside the node its anchor names (a value that holds itself)'])
    expect(problems(() => parseConfigText(`${ROUTE}x: &x {a: {b: *x}}\n`, 'x.yaml', {}))).toEqual(['line 2: the alias *x is inside the node its anchor names (a value that holds itself)'])
    expect(problems(() => parseConfigText(`${ROUTE}x: &x {<<: *x}\n`, 'x.yaml', {}))).toEqual(['line 2: the alias *x is inside the node its anchor names (a value that holds itself)'])
  })

  it('an alias bomb is still refused before it expands', () => {
    const lines = ['a: &a [x,x,x,x,x,x,x,x,x]']
    for (const [n, p] of [['b', 'a'], ['c', 'b'], ['d', 'c'], ['e', 'd'], ['f', 'e'], ['g', 'f'], ['h', 'g'], ['i', 'h']]) lines.push(`${n}: &${n} [${Array(9).fill(`*${p}`).join(',')}]`)
    const [line] = problems(() => parseConfigText(`${lines.join('\n')}\n`, 'x.yaml', {}))
    expect(line).toMatch(/^\(root\): YAML aliases expand to too many nodes \(\d+ from \d+ written; an alias bomb such as "billion laughs"\?\)$/)
  })
})

describe("YAML's own tags", () => {
  it('a tag of a value JSON has not is refused at its line (a Map, Set, byte array or date reached zod)', () => {
    const text = `${ROUTE}tenants: !!omap\n  - acme: {tier: gold}\nx:\n  a: !!binary c2VjcmV0\n  b: !!set {p, q}\n  c: !!timestamp 2001-12-14\n  d: !<tag:example.com,2000:x> 1\n`
    expect(problems(() => parseConfigText(text, 'x.yaml', {}))).toEqual([
      // A block list's line is where its items start.
      'line 3: igw does not read the tag !!omap: a config holds maps, lists, strings, numbers, booleans and null',
      'line 5: igw does not read the tag !!binary: a config holds maps, lists, strings, numbers, booleans and null',
      'line 6: igw does not read the tag !!set: a config holds maps, lists, strings, numbers, booleans and null',
      'line 7: igw does not read the tag !!timestamp: a config holds maps, lists, strings, numbers, booleans and null',
      'line 8: igw does not read the tag !<tag:example.com,2000:x>: a config holds maps, lists, strings, numbers, booleans and null',
    ])
  })

  it('a JSON tag the value does not fit is refused (it stayed the text as written); those that fit load', () => {
    expect(problems(() => parseConfigText('a: !!float 1\nb: !!int abc\n', 'x.yaml', {}))).toEqual(['line 1: "1" is not a !!float', 'line 2: "abc" is not a !!int'])
    expect(parseConfigText('a: !!float 1.5\nb: !!int 0x1F\nc: !!bool true\nd: !!str 007\ne: !!null ""\nf: !!map {g: 1}\nh: !!int ${P}\n', 'x.yaml', { P: '8080' })).toEqual({
      a: 1.5,
      b: 31,
      c: true,
      d: '007',
      e: null,
      f: { g: 1 },
      h: 8080,
    })
  })
})

describe('duplicate keys, found in one pass', () => {
  // The parser's own check compared each key with every earlier one of its map (25,000 tenants took
  // 10 s and more at every start and reload); igw's single pass must refuse what it refused, at the
  // same line and column. (Speed is a bench matter, not a timed test.)
  it('a map of 20,000 keys loads whole; a repeated key is still refused at its line', () => {
    const big = `m:\n${Array.from({ length: 20_000 }, (_, i) => `  t${i}: 0\n`).join('')}`
    expect(Object.keys((parseConfigText(big, 'x.yaml', {}) as { m: object }).m)).toHaveLength(20_000)
    expect(problems(() => parseConfigText(`${ROUTE}tenants:\n  t6: {}\n  t7: {}\n  t7: {tier: bronze}\n  t8: {tier: silver, tier: gold}\n`, 'x.yaml', {}))).toEqual([
      'line 5, column 3: Map keys must be unique',
      'line 6, column 22: Map keys must be unique',
    ])
  })
})
