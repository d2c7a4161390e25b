// Config loading edge cases: duplicate keys that only appear after ${VAR} substitution (silently
// last-wins), the multi-document error that told operators to call a library function, and byte
// sizes beyond what an integer holds. Real files through loadConfigFile and the real `igw` CLI.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { IGW_BIN } from '../helpers/proxy.ts'
import { problems } from '../helpers/config.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-load-sweep18c-'))
const file = (name: string, text: string) => {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}
const ROUTES = 'routes:\n  - name: r\n    upstream: http://127.0.0.1:1\n'

describe('config loading: duplicate keys after ${VAR} substitution', () => {
  it('a key from a variable that equals a literal key is refused naming it and its line, not silently replaced', () => {
    const text = `tenants:\n  \${PRIMARY}:\n    tier: gold\n  acme:\n    tier: bronze\n${ROUTES}`
    expect(problems(() => parseConfigText(text, 'x', { PRIMARY: 'acme' }))).toEqual(['line 4: key "acme" appears twice in one map (after ${…} substitution); each key may appear once'])
    // Two variables with the same value, in a flow map, CRLF line ends.
    const flow = 'tenants: {${A}: {tier: gold}, ${B}: {}}\r\n' + ROUTES.replace(/\n/g, '\r\n')
    expect(problems(() => parseConfigText(flow, 'x', { A: 'acme', B: 'acme' }))).toEqual(['line 1: key "acme" appears twice in one map (after ${…} substitution); each key may appear once'])
    // A typed key ("1" and the number 1 are one JS key).
    expect(problems(() => parseConfigText('m:\n  ${N}: a\n  "1": b\n', 'x', { N: '1' }))).toEqual(['line 3: key "1" appears twice in one map (after ${…} substitution); each key may appear once'])
  })

  it('distinct keys from variables still load, and igw config validate reports the duplicate (exit 78)', () => {
    const ok = loadConfigFile(file('ok.yaml', `tenants:\n  \${PRIMARY}:\n    tier: gold\n  acme:\n    tier: bronze\n${ROUTES}`), { PRIMARY: 'globex' })
    expect(ok.config.tenants).toMatchObject({ globex: { tier: 'gold' }, acme: { tier: 'bronze' } })
    const p = file('dup.yaml', `tenants:\n  \${PRIMARY}:\n    tier: gold\n  acme:\n    tier: bronze\n${ROUTES}`)
    const r = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', p], { env: { ...process.env, PRIMARY: 'acme' }, encoding: 'utf8', timeout: 60_000 })
    expect(r.status).toBe(78)
    expect(r.stdout + r.stderr).toContain('line 4: key "acme" appears twice in one map')
  })
})

describe('config loading: more than one YAML document', () => {
  it('says so in the operator\'s terms, naming the line of the second document', () => {
    for (const text of [`${ROUTES}---\nworkers: 2\n`, `${ROUTES}---\n`]) {
      const got = problems(() => parseConfigText(text, 'x', {}))
      expect(got).toEqual(['line 4, column 1: a second YAML document starts here (after "---"); a config file holds one document'])
      expect(got.join()).not.toContain('parseAllDocuments')
    }
    // A leading "---" is one document.
    expect(validateConfig(parseConfigText(`---\n${ROUTES}`, 'x', {})).routes).toHaveLength(1)
  })
})

describe('config loading: byte sizes', () => {
  const size = (v: unknown) => validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', maxBodyBytes: v }] } as never).routes[0]!.maxBodyBytes
  it('units parse as documented', () => {
    expect([size('1mib'), size('64MiB'), size('1.5gb'), size('512 KB'), size(1024), size('9007199254740991')]).toEqual([1024 ** 2, 64 * 1024 ** 2, 1.5e9, 512_000, 1024, Number.MAX_SAFE_INTEGER])
  })
  it('a size no integer holds is refused as a number of the same size is, not taken as 1e32', () => {
    for (const v of ['99999999999999999999999gb', '9007199254740993', '8388608gib'])
      expect(problems(() => size(v))).toEqual([`routes[0].maxBodyBytes: expected a byte size such as 1048576, "512kib" or "10mb", got ${JSON.stringify(v)}`])
    for (const v of ['-1mb', '1e3', '', '10m']) expect(problems(() => size(v))).toHaveLength(1)
  })
})

describe('config loading: an empty variable', () => {
  it('is reported as empty, not as "not set" (the operator did set it)', () => {
    expect(problems(() => parseConfigText('a: ${IGW_EMPTY}\n', 'x', { IGW_EMPTY: '' }))).toEqual(['line 1: environment variable IGW_EMPTY is empty and has no default (write ${IGW_EMPTY:-value})'])
    expect(problems(() => parseConfigText('a: ${IGW_UNSET}\n', 'x', {}))).toEqual(['line 1: environment variable IGW_UNSET is not set and has no default (write ${IGW_UNSET:-value})'])
    expect(parseConfigText('a: ${IGW_EMPTY:-d}\n', 'x', { IGW_EMPTY: '' })).toEqual({ a: 'd' })
  })
})
