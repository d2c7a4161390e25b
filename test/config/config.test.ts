import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { renderConfigJsonSchema } from '../../config/generate-schema.ts'
import { buildProxyConfig } from '../../proxy/cli.ts'
import { readFileSync } from 'node:fs'
import { ROOT } from '../helpers/proxy.ts'
import { problems } from '../helpers/config.ts'


describe('config schema errors name the exact path and reason', () => {
  it('bad upstream URL', () => {
    expect(problems(() => validateConfig({ routes: [{ name: 'a', upstream: 'http://ok:1' }, { name: 'b', upstream: 'htp:/x' }] }))).toContain('routes[1].upstream: expected URL, got "htp:/x"')
  })
  it('unknown keys, wrong types, enums, unknown filters, missing JWT keys, bad time zones', () => {
    const p = problems(() =>
      validateConfig({
        listen: true,
        routes: [{ name: 'a', upstream: 'http://ok:1', timout: 5, filters: [{ name: 'nope' }, { name: 'tenant', jwt: { claim: 'org' } }] }],
        tenants: { acme: { tier: 'platinum', timezone: 'Mars/Base' } },
      }),
    )
    expect(p).toContain('listen: expected "host:port", ":port", "[ipv6]:port" or a port number, got true')
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

describe('bounded messages', () => {
  it('thousands of long unknown keys, or of bad values, make a short answer (PUT /v1/config takes any document)', () => {
    const junk = Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}${'x'.repeat(1000)}`, 1]))
    const lines = problems(() => validateConfig({ routes: [{ name: 'a', upstream: 'http://a:1' }], ...junk }))
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^\(root\): unknown keys "k0x+…", .* and 1995 more$/)
    expect(lines[0]!.length).toBeLessThan(600)
    const many = problems(() => validateConfig({ routes: Array.from({ length: 500 }, (_, i) => ({ name: `r${i}`, upstream: 'htp:/x' })) }))
    expect(many).toHaveLength(101)
    expect(many[100]).toBe('… and 400 more problems')
  })
})

describe('environment interpolation', () => {
  const parse = (text: string, env: NodeJS.ProcessEnv) => parseConfigText(text, 'env.yaml', env) as Record<string, unknown>
  it('${VAR} and ${VAR:-default}, $$ escapes, missing variables are errors with the line', () => {
    expect(parse('a: ${A}\nb: ${B:-two}\nc: $${A}\nd: ${E:-}', { A: 'one', E: '' })).toEqual({ a: 'one', b: 'two', c: '${A}', d: null })
    expect(problems(() => parse('x: 1\ny: ${NOPE}', {}))).toEqual(['line 2: environment variable NOPE is not set and has no default (write ${NOPE:-value})'])
    const cfg = parseConfigText('workers: ${W:-3}\nroutes: [{ name: a, upstream: "${U}" }]', 'env', { U: 'http://u:1' }) as { workers: number }
    expect(cfg.workers).toBe(3)
  })
  it('a plain scalar that is one variable takes its YAML type; quoted or mixed, a string', () => {
    expect(parse('n: ${N}\nb: ${B}\nq: "${N}"\nm: port-${N}\nf: ${F}\nk: { x: ${N} }', { N: '8080', B: 'true', F: '0.5' })).toEqual({ n: 8080, b: true, q: '8080', m: 'port-8080', f: 0.5, k: { x: 8080 } })
  })
  it('values are data, never YAML: a " #", a newline, "key: value", "*alias" or quotes in a value stay in it', () => {
    const env = { S: 'abcdefghij #klmnop', NL: 'x\nworkers: 99', KV: 'a: b', STAR: '*anchor', Q: 'say "hi" \\ bye', BR: '[1, 2]' }
    expect(parse('s: ${S}\nnl: ${NL}\nkv: ${KV}\nstar: ${STAR}\nq: "${Q}"\nbr: ${BR}\nflow: { s: ${S} }', env)).toEqual({ s: env.S, nl: env.NL, kv: env.KV, star: env.STAR, q: env.Q, br: env.BR, flow: { s: env.S } })
    const cfg = validateConfig(parse('routes: [{ name: a, upstream: "http://u:1", filters: [{ name: tenant, jwt: { secret: ${JWT} } }] }]', { JWT: 's3cret-with #hash-and-more-than-32-chars!!' }))
    expect((cfg.routes[0]!.filters[0] as unknown as { jwt: { secret: string } }).jwt.secret).toBe('s3cret-with #hash-and-more-than-32-chars!!')
  })
  it('whole-line comments are not interpolated; error columns count the original text', () => {
    expect(parse('# set ${NOPE} to tune\n  # ${ALSO_NOPE}\na: ${A}', { A: '1' })).toEqual({ a: 1 })
    // the stray "}" is at column 32 of the file, after a 24-character reference
    expect(problems(() => parse('x: [${LONG_VARIABLE_NAME:-x}, 1}', {}))[0]).toMatch(/^line 1, column 32:/)
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
