// The igw command line and ${ENV} interpolation against what operators actually type: a shell
// glob handed to `config validate`, a config path without --config, compose/bash-style
// references igw does not read, and an explicit `!!str` on a referenced value.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseConfigText } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

function igw(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, IGW_UPSTREAM: '', IGW_CONFIG: '' } })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('igw config validate with several files (a shell glob)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-validate-'))
  const good = join(dir, 'a-good.yaml')
  const bad = join(dir, 'b-bad.yaml')
  const good2 = join(dir, 'c-good.yaml')
  writeFileSync(good, 'routes: [{ name: a, upstream: "http://127.0.0.1:4000" }]\n')
  writeFileSync(bad, 'routes: [{ name: a, upstream: "htp:/x" }]\n')
  writeFileSync(good2, 'routes: [{ name: c, upstream: "http://127.0.0.1:4000" }]\n')

  it('checks every file: one invalid file among them fails the run (exit 78) and is named with its path', () => {
    const r = igw(['config', 'validate', good, bad, good2])
    expect(r.status).toBe(78)
    expect(r.stdout).toContain(`${good}: valid`)
    expect(r.stdout).toContain(`${good2}: valid`)
    expect(r.stderr).toContain(`${bad}: invalid config`)
    expect(r.stderr).toContain('routes[0].upstream: expected URL, got "htp:/x"')
  })

  it('all valid: exit 0 and a line per file', () => {
    const r = igw(['config', 'validate', good, good2])
    expect(r.status).toBe(0)
    expect(r.stdout.trim().split('\n')).toEqual([`${good}: valid`, `${good2}: valid`])
  })

  it('`igw proxy <file>` (a forgotten --config) is refused with exit 2 and a hint, not run without it', () => {
    const r = igw(['proxy', '--upstream', 'http://127.0.0.1:1', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', good])
    expect(r.status).toBe(2)
    expect(r.stderr).toContain(`igw: proxy takes no arguments, got "${good}" (did you mean --config ${good}?)`)
    expect(r.stdout).not.toContain('igw proxy listening')
  })
})

describe('references igw does not read are errors, never literal text', () => {
  it.each([
    ['${PORT-8080}', 'a: "http://127.0.0.1:${PORT-8080}"\n'],
    ['${CURSOR_KEY:?set it}', 'a: ${CURSOR_KEY:?set it}\n'],
    ['${ NAME }', 'a: ${ NAME }\n'],
    ['${A:-${B:-x}', 'a: ${A:-${B:-x}}\n'],
    ['${NAME', 'a: ${NAME\n'],
  ])('%s names its line and the forms that work', (shown, text) => {
    const p = problems(() => parseConfigText(`# header\n${text}`, 'x.yaml', { PORT: '1', CURSOR_KEY: 'k', NAME: 'n', A: '', B: '' }))
    expect(p).toHaveLength(1)
    expect(p[0]).toBe(`line 2: ${JSON.stringify(shown)} is not a reference igw reads: write \${NAME} or \${NAME:-default} (NAME of letters, digits and "_"; no nesting), or $\${ for a literal "\${"`)
  })

  it('what still works: $${ is a literal "${", a default may hold "$", whole-line comments are left alone', () => {
    expect(parseConfigText('# ${PORT-8080} is not read here\na: $${PORT-8080}\nb: ${P:-pa$word}\n', 'x.yaml', {})).toEqual({ a: '${PORT-8080}', b: 'pa$word' })
  })
})

describe('an explicit tag on a referenced value', () => {
  it('!!str keeps the value a string (a numeric tenant id or key prefix); untagged plain stays typed', () => {
    expect(parseConfigText('a: !!str ${V}\nb: ${V}\nc: !!str ${T}\nd: !!int ${V}\n', 'x.yaml', { V: '0042', T: 'true' })).toEqual({ a: '0042', b: 42, c: 'true', d: 42 })
  })
})
