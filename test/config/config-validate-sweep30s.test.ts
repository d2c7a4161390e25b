// `igw config validate` reports every problem of a file in one run (cross-reference checks read the
// parts that parsed, and say nothing of what a problem already reported covers); a .json file is
// held to JSON.
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'
import { IGW_BIN, writeTempConfig } from '../helpers/proxy.ts'

const temps: string[] = []
const temp = (text: string, name: string) => {
  const path = writeTempConfig(text, name)
  temps.push(dirname(path))
  return path
}
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

const ROUTE = { name: 'a', upstream: 'http://127.0.0.1:1' }

describe('every problem in one run', () => {
  it('a bad field and an unknown upstream are both reported, by igw config validate too', () => {
    const file = temp('routes:\n  - name: a\n    upstream: nope\n    maxBodyBytes: lots\n', 'two.yaml')
    const r = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', file], { encoding: 'utf8', timeout: 20_000 })
    expect(r.status).toBe(78)
    expect(r.stderr.trim().split('\n').slice(1)).toEqual([
      '  routes[0].maxBodyBytes: expected a byte size such as 1048576, "512kib" or "10mb", got "lots"',
      '  routes[0].upstream: expected URL or an upstream name, got "nope"',
    ])
  })

  it('reference checks run beside field problems elsewhere in the document', () => {
    const doc = {
      workers: 0,
      listen: ':7000',
      admin: { listen: ':7000' },
      tenants: { acme: { tier: 'platinum' } },
      quotas: { tenants: { ghost: {} } },
      dlp: { tenants: { acme: { preset: 'nope' } } },
      routes: [
        { ...ROUTE, timeouts: { totalMs: -1 }, filters: [{ name: 'quota' }, { name: 'tenant', defaultTenant: 'typo' }] },
        { ...ROUTE, upstream: 'http://127.0.0.1:2' },
      ],
    }
    const p = problems(() => validateConfig(doc))
    expect(p.slice(0, 3)).toEqual([
      expect.stringMatching(/^workers: .*, got 0$/),
      expect.stringMatching(/^routes\[0\]\.timeouts\.totalMs: /),
      'tenants.acme.tier: expected one of "gold" | "silver" | "bronze", got "platinum"',
    ])
    expect(p.slice(3).sort()).toEqual(
      [
        'routes[1].name: duplicate route name "a"',
        'routes[0].filters[1].defaultTenant: expected a tenant listed under tenants (acme), or allowUnlisted: true, got "typo"',
        'admin.listen: takes the port of listen (:7000): give the admin port another one, got ":7000"',
        'quotas.tenants.ghost: unknown tenant "ghost" (list it under tenants:)',
        'routes[0].filters[0]: quota must come after the tenant filter (it limits per tenant)',
        'dlp.tenants.acme.preset: unknown DLP preset "nope" (presets: mask_basic, tokenize_strict)',
        'mode: sidecar mode fronts one upstream; use mode: ingress for several',
      ].sort(),
    )
  })

  it('a problem is not reported again as its consequence', () => {
    // an upstream or tenant whose name is invalid is not also "unknown" where it is named
    expect(problems(() => validateConfig({ upstreams: { 'bad name': { url: 'http://a:1' } }, routes: [{ name: 'a', upstream: 'bad name' }] }))).toEqual([
      'upstreams.bad name: not a valid name here: expected an upstream name of letters, digits, "_", "." or "-"',
    ])
    // a tenant whose entry is broken is still listed: no "unknown tenant" where it is named
    expect(problems(() => validateConfig({ tenants: { acme: 'gold' }, quotas: { tenants: { acme: {} } }, dlp: { tenants: { acme: { preset: 'mask_basic' } } }, routes: [{ ...ROUTE, filters: [{ name: 'tenant', defaultTenant: 'acme' }] }] }))).toEqual([
      'tenants.acme: expected object, got "gold"',
    ])
    // a section that is no map, a field left out, a broken preset map: only the problem itself
    expect(problems(() => validateConfig({ upstreams: 'x', tenants: 'y', dlp: 'z', quotas: 'q', routes: [{ name: 'a', upstream: 'u', filters: [{ name: 'tenant', defaultTenant: 't' }, { name: 'dlp', preset: 'p' }] }] }))).toEqual([
      'upstreams: expected record, got "x"',
      expect.stringMatching(/^routes\[0\]\.filters\[1\]/),
      'tenants: expected record, got "y"',
      'quotas: expected object, got "q"',
      'dlp: expected object, got "z"',
    ])
    expect(problems(() => validateConfig({ dlp: { presets: { p: { email: 'zap' } }, defaultPreset: 'mask_basic' }, routes: [{ ...ROUTE, upstream: 'missing' }, { name: 'b' }] }))).toEqual([
      'routes[1].upstream: required (expected string)',
      'dlp.presets.p.email: expected one of "mask" | "tokenize" | "hash" | "redact" | "block", got "zap"',
      'routes[0].upstream: expected URL or an upstream name, got "missing"',
    ])
    for (const doc of ['x', null, [], { routes: 'x' }, { routes: ['x'] }, { routes: [{ ...ROUTE, filters: 'x' }] }]) expect(problems(() => validateConfig(doc))).toHaveLength(1)
  })
})

describe('a .json file is JSON', () => {
  const env = { JWT_SECRET: 's3cret-value', W: '4' }
  const at = (text: string) => problems(() => parseConfigText(text, 'igw.json', env))

  it('refuses what only YAML reads, naming line and column', () => {
    expect(at('{"routes": [{"name": "a", "upstream": "http://127.0.0.1:1"},]}')).toEqual([
      'line 1, column 61: not JSON: expected a value, got "]" (JSON allows no comma before it); a .json file is read as JSON (for comments, unquoted keys and the like, name it .yaml)',
    ])
    expect(at('{\n  // the gateway\n  "routes": []\n}')[0]).toMatch(/^line 2, column 3: not JSON: expected a key in double quotes, got a comment \(JSON has none\)/)
    expect(at('{routes: []}')[0]).toMatch(/^line 1, column 2: not JSON: expected a key in double quotes, got "r"/)
    expect(at("{\"mode\": 'ingress'}")[0]).toMatch(/^line 1, column 10: not JSON: expected a value, got a single quote/)
    expect(at('{"workers": 01}')[0]).toMatch(/^line 1, column 13: not JSON: expected a value, got "0", a number/)
    expect(at('{"a": 1}\n{"b": 2}')[0]).toMatch(/^line 2, column 1: not JSON: expected the end of the document/)
    expect(at('{"a": [1}')[0]).toMatch(/^line 1, column 9: not JSON: expected "," or "\]", got "}"$|^line 1, column 9: not JSON: expected "," or "\]", got "}";/)
    // the same text is fine as YAML
    expect(parseConfigText('{"routes": [{"name": "a"},]}', 'igw.yaml')).toEqual({ routes: [{ name: 'a' }] })
    expect(parseConfigText('{"routes": [{"name": "a"},]}', 'igw.yml')).toEqual({ routes: [{ name: 'a' }] })
  })

  it('keeps ${VAR} in strings and as a whole value, and what JSON allows', () => {
    const text = '\ufeff{"listen": ":${PORT:-8080}", "workers": ${W}, "routes": [{"name": "a", "upstream": "http://127.0.0.1:1", "filters": [{"name": "tenant", "jwt": {"secret": "${JWT_SECRET}"}, "x": "$$"}]}], "n": [-1.5e+3, 0, true, false, null, {}, [], "\\u00e9\\t"]}'
    expect(parseConfigText(text, 'IGW.JSON', env)).toEqual({
      listen: ':8080',
      workers: 4,
      routes: [{ name: 'a', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant', jwt: { secret: 's3cret-value' }, x: '$' }] }],
      n: [-1500, 0, true, false, null, {}, [], 'é\t'],
    })
    // an unset variable is still the reference's problem, and an empty file still "empty"
    expect(at('{"a": "${NOPE}"}')).toEqual(['line 1: environment variable NOPE is not set and has no default (write ${NOPE:-value})'])
    expect(at(' \n')).toEqual(['(root): the file is empty (no settings, only blank lines or comments)'])
  })

  it('loadConfigFile reads it so', () => {
    const bad = temp('{"routes": [{"name": "a", "upstream": "http://127.0.0.1:1"},]}\n', 'igw.json')
    expect(problems(() => loadConfigFile(bad))[0]).toMatch(/^line 1, column 61: not JSON/)
    const good = temp('{"routes": [{"name": "a", "upstream": "http://127.0.0.1:1"}]}\n', 'ok.json')
    expect(loadConfigFile(good).config.routes[0]!.name).toBe('a')
  })
})
