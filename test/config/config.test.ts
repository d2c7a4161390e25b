import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, interpolateEnv, loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { renderConfigJsonSchema } from '../../config/generate-schema.ts'
import { buildProxyConfig } from '../../proxy/cli.ts'
import { readFileSync } from 'node:fs'
import { ROOT } from '../helpers/proxy.ts'

function problems(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  throw new Error('expected a ConfigError')
}

describe('config schema errors name the exact path and reason', () => {
  it('bad upstream URL', () => {
    expect(problems(() => validateConfig({ routes: [{ name: 'a', upstream: 'http://ok:1' }, { name: 'b', upstream: 'htp:/x' }] }))).toContain('routes[1].upstream: expected URL, got "htp:/x"')
  })
  it('unknown keys, wrong types, enums, unknown filters, missing JWT keys, bad time zones', () => {
    const p = problems(() =>
      validateConfig({
        listen: 8080,
        routes: [{ name: 'a', upstream: 'http://ok:1', timout: 5, filters: [{ name: 'nope' }, { name: 'tenant', jwt: { claim: 'org' } }] }],
        tenants: { acme: { tier: 'platinum', timezone: 'Mars/Base' } },
      }),
    )
    expect(p).toContain('listen: expected string, got 8080')
    expect(p).toContain('routes[0]: unknown key "timout"')
    expect(p.find((l) => l.startsWith('routes[0].filters[0].name: unknown filter'))).toBeDefined()
    expect(p).toContain('routes[0].filters[1].jwt: expected one of secret, publicKeyFile or jwksFile to verify tokens with')
    expect(p).toContain('tenants.acme.tier: expected one of "gold" | "silver" | "bronze", got "platinum"')
    expect(p.find((l) => l.startsWith('tenants.acme.timezone: expected an IANA time zone'))).toBeDefined()
  })
  it('cross-field rules: duplicate routes, unknown upstream names, sidecar with two upstreams', () => {
    const p = problems(() =>
      validateConfig({
        upstreams: { a: { url: 'http://a:1' }, b: { url: 'http://b:1' } },
        routes: [
          { name: 'x', upstream: 'a' },
          { name: 'x', upstream: 'b' },
          { name: 'y', upstream: 'c' },
        ],
      }),
    )
    expect(p).toContain('routes[1].name: duplicate route name "x"')
    expect(p).toContain('routes[2].upstream: expected URL or an upstream name (a, b), got "c"')
    expect(p).toContain('mode: sidecar mode fronts one upstream; use mode: ingress for several')
  })
  it('byte sizes accept units and reject nonsense', () => {
    expect(validateConfig({ routes: [{ name: 'a', upstream: 'http://a:1', maxBodyBytes: '2mib' }] }).routes[0]!.maxBodyBytes).toBe(2 * 1024 * 1024)
    expect(problems(() => validateConfig({ routes: [{ name: 'a', upstream: 'http://a:1', maxBodyBytes: 'lots' }] }))[0]).toMatch(/^routes\[0\]\.maxBodyBytes: expected a byte size/)
  })
})

describe('environment interpolation', () => {
  it('${VAR} and ${VAR:-default}, $$ escapes, missing variables are errors with the line', () => {
    expect(interpolateEnv('a: ${A}\nb: ${B:-two}\nc: $${A}', { A: 'one' })).toEqual({ text: 'a: one\nb: two\nc: ${A}', problems: [] })
    expect(interpolateEnv('x: 1\ny: ${NOPE}', {}).problems).toEqual(['line 2: environment variable NOPE is not set and has no default (write ${NOPE:-value})'])
    const cfg = parseConfigText('workers: ${W:-3}\nroutes: [{ name: a, upstream: "${U}" }]', 'env', { U: 'http://u:1' }) as { workers: number }
    expect(cfg.workers).toBe(3)
  })
  it('whole-line comments are not interpolated', () => {
    expect(interpolateEnv('# set ${NOPE} to tune\n  # ${ALSO_NOPE}\na: ${A}', { A: '1' })).toEqual({ text: '# set ${NOPE} to tune\n  # ${ALSO_NOPE}\na: 1', problems: [] })
  })
  it('YAML syntax errors point at line and column', () => {
    expect(problems(() => parseConfigText('routes: [\n  - a', 'bad.yaml'))[0]).toMatch(/^line \d+, column \d+:/)
  })
})

describe('flags and files', () => {
  it('--upstream alone makes a sidecar config; flags override the file', () => {
    const cfg = buildProxyConfig({ upstream: 'http://127.0.0.1:4000', listen: '9000', workers: '2' }, {})
    expect(cfg).toMatchObject({ mode: 'sidecar', listen: ':9000', workers: 2, routes: [{ name: 'default', upstream: 'http://127.0.0.1:4000' }] })
    expect(problems(() => buildProxyConfig({ upstream: 'nope' }, {}))[0]).toMatch(/expected URL, got "nope"/)
    expect(problems(() => buildProxyConfig({}, {}))[0]).toMatch(/needs --config/)
  })
})

describe('shipped files', () => {
  const dir = join(ROOT, 'config/examples')
  const examples = readdirSync(dir).filter((f) => /\.(ya?ml|json)$/.test(f))
  it('there are examples', () => expect(examples.length).toBeGreaterThan(1))
  it.each(examples)('config/examples/%s validates as it is', (file) => {
    expect(() => loadConfigFile(join(dir, file), { ...process.env, JWT_SECRET: process.env.JWT_SECRET ?? 'x'.repeat(32) })).not.toThrow()
  })
  it('config/schema.json is generated from the zod schema and current', () => {
    expect(readFileSync(join(ROOT, 'config/schema.json'), 'utf8')).toBe(renderConfigJsonSchema())
  })
})
