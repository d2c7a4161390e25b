// Config loading: an unclosed ${VAR:-default} that swallowed the lines up to the next "}", keys
// holding URL credentials printed in error paths, and a quoted and an unquoted key that are one
// key once loaded (the later silently won). Real files through loadConfigFile.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-load-sweep22l-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const file = (name: string, text: string) => {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}
const ROUTES = 'routes:\n  - name: r\n    upstream: http://127.0.0.1:1\n'

describe('an unclosed ${VAR:-default} ends on its line', () => {
  it('one in a comment no longer takes the lines below it out of the document', () => {
    const p = file('comment.yaml', `# raise it with \${LOG_LEVEL:-info when debugging\nlog: {level: debug}\nadmin: {listen: ":9100"}\n${ROUTES}`)
    const { config } = loadConfigFile(p, {})
    expect(config.log.level).toBe('debug')
    expect(config.admin.listen).toBe(':9100')
  })

  it('one in a value is an error naming it, set or not, instead of eating the next line', () => {
    const text = `listen: \${LISTEN:-:8080\nadmin: {listen: ":9100"}\n${ROUTES}`
    const expected = ['line 1: "${LISTEN:-:8080" is not a reference igw reads: write ${NAME} or ${NAME:-default} (NAME of letters, digits and "_"; no nesting), or $${ for a literal "${"']
    expect(problems(() => parseConfigText(text, 'x', { LISTEN: ':8081' }))).toEqual(expected)
    expect(problems(() => parseConfigText(text, 'x', {}))).toEqual(expected)
    // The same in a CRLF file: the message quotes it without the "\r".
    expect(problems(() => parseConfigText(text.replaceAll('\n', '\r\n'), 'x', {}))).toEqual(expected)
    // Closed references on neighbouring lines are untouched.
    expect(parseConfigText('a: ${A:-x}\nb: ${B:-{y}\n', 'x', {})).toEqual({ a: 'x', b: '{y' })
  })
})

describe('keys holding URL credentials in messages', () => {
  it('the path and the unknown-key list show them redacted', () => {
    const text = 'upstreams:\n  "http://ops:hunter2pw@api:4000": {url: "http://api:4000"}\nroutes:\n  - {name: r, upstream: "http://api:4000"}\n'
    const lines = problems(() => validateConfig(parseConfigText(text, 'x', {}), 'x'))
    expect(lines[0]).toMatch(/^upstreams\.http:\/\/\[redacted\]@api:4000: not a valid name here/)
    const unknown = problems(() => validateConfig(parseConfigText(`redis:\n  url: redis://r:6379\n  "redis://:hunter2pw@r:6379": 1\n${ROUTES}`, 'x', {}), 'x'))
    expect(unknown).toEqual(['redis: unknown key "redis://[redacted]@r:6379"'])
    expect(lines.join('\n') + unknown.join('\n')).not.toContain('hunter2pw')
  })
})

describe('a quoted and an unquoted key that load as one', () => {
  it('is refused naming the key and its line, not silently last-wins', () => {
    const text = `tenants:\n  10042: {tier: gold}\n  "10042": {tier: bronze}\n${ROUTES}`
    expect(problems(() => loadConfigFile(file('dup.yaml', text), {}))).toEqual(['line 3: key "10042" appears twice in one map (one quoted, one not: the same key once loaded); each key may appear once'])
    expect(problems(() => parseConfigText('m:\n  true: a\n  "true": b\n', 'x', {}))).toEqual(['line 3: key "true" appears twice in one map (one quoted, one not: the same key once loaded); each key may appear once'])
    // A variable's key keeps its own wording.
    expect(problems(() => parseConfigText('m:\n  ${N}: a\n  "1": b\n', 'x', { N: '1' }))).toEqual(['line 3: key "1" appears twice in one map (after ${…} substitution); each key may appear once'])
  })

  it('distinct keys and repeated merge keys still load', () => {
    expect(parseConfigText('m:\n  10042: a\n  "10043": b\n', 'x', {})).toEqual({ m: { '10042': 'a', '10043': 'b' } })
    expect(parseConfigText('x: &x {c: 1}\ny: &y {f: 2}\nm:\n  <<: *x\n  <<: *y\n  c: 3\n', 'x', {})).toEqual({ x: { c: 1 }, y: { f: 2 }, m: { c: 3, f: 2 } })
  })
})
