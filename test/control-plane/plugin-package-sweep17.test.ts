// The plugin package check, without sockets (the upload through a real server is in
// plugin-upload-sweep17.test.ts).
import { describe, expect, it } from 'vitest'
import { checkPackage, type TrustedKeys } from '../../control-plane/plugin-package.ts'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { makePublisher, signedPackage } from '../helpers/plugins.ts'

const acme = makePublisher('acme', 'acme-2026')
const trusted: TrustedKeys = parsePluginTrust({ keys: [acme.jwk] }, 'trust.json')
const artifact = Buffer.from('\0asm\x01\0\0\0 plugin')

// Plugin versions are SemVer 2.0.0 versions, as the docs and the OpenAPI description promise: the
// check used a looser pattern that took strings no SemVer parser reads — empty identifiers
// (`1.0.0-rc..1`, `1.0.0-rc.`, `1.0.0+.`) and numeric pre-release identifiers with a leading zero
// (`1.0.0-rc.01`) — and stored them for good (versions are immutable), where a consumer ordering
// versions (npm's semver and the like) rejects them.
describe('plugin package versions', () => {
  it.each(['1.0.0-rc..1', '1.0.0-rc.', '1.0.0-.rc', '1.0.0+.', '1.0.0+build..2', '1.0.0-rc.01', '1.0.0-01', '1.0.0-rc.1+'])('%s, signed by a trusted key, is malformed: not a semantic version', (version) => {
    const d = checkPackage(signedPackage(acme, { name: 'geo-enrich', version, artifact }), trusted)
    expect(d).toMatchObject({ ok: false, reason: 'malformed', message: expect.stringMatching(/^malformed plugin package: version: expected a semantic version/) })
  })

  it.each(['1.2.3', '0.0.0', '1.0.0-rc.1', '1.0.0-0.a', '1.0.0-0a', '1.0.0-x-y', '1.0.0--', '1.0.0-alpha.1+build.5', '1.0.0+001', '1.0.0+exp.sha.5114f85', '10.20.30-beta.11'])('%s is a semantic version and is accepted', (version) => {
    expect(checkPackage(signedPackage(acme, { name: 'geo-enrich', version, artifact }), trusted)).toMatchObject({ ok: true, plugin: { version } })
  })
})

// The refusal text of a malformed package shows the start of each bad value. It was made by
// redacting URL credentials in the whole value's JSON first (config/load.ts formatIssues), with a
// pattern quadratic on text like "a.a.a.…" (a word boundary at every other character): 200 KB of it
// in one field took seconds of the control plane's only thread, the largest body hours. Now only
// the start of each value goes in.
describe('refusing a package with huge bad values is bounded', () => {
  const junk = 'a.'.repeat(100_000) // 200 KB
  const base = () => signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact })
  it.each<[string, (p: Record<string, unknown>) => Record<string, unknown>, RegExp]>([
    ['version', (p) => ({ ...p, version: junk }), /^malformed plugin package: version: Too big: expected string to have <=64 characters, got "a\.a\.a\.a\./],
    ['name', (p) => ({ ...p, name: junk }), /^malformed plugin package: name: expected a plugin name .*, got "a\.a\.a\./],
    ['publisher', (p) => ({ ...p, publisher: `x${junk}` }), /^malformed plugin package: publisher: expected a publisher name .*, got "xa\.a\.a\./],
    ['description', (p) => ({ ...p, description: junk }), /^malformed plugin package: description: Too big: expected string to have <=500 characters, got "a\.a\./],
    ['keyId', (p) => ({ ...p, keyId: junk }), /^malformed plugin package: keyId: Too big: expected string to have <=128 characters, got "a\.a\./],
    ['artifact (a list of strings)', (p) => ({ ...p, artifact: [junk, junk] }), /^malformed plugin package: artifact: expected string, got \["a\.a\.a\./],
    ['signature (a map)', (p) => ({ ...p, signature: { [junk]: junk } }), /^malformed plugin package: signature: matches none of the allowed shapes/],
  ])('%s', (_what, edit, message) => {
    const t0 = performance.now()
    const d = checkPackage(edit(base()), trusted)
    const ms = performance.now() - t0
    expect(d).toMatchObject({ ok: false, reason: 'malformed' })
    if (d.ok) throw new Error('expected a refusal')
    expect(d.message).toMatch(message)
    expect(d.message.length).toBeLessThanOrEqual(1000)
    // Milliseconds now; the old code took seconds per field here (growing with the square).
    expect(ms).toBeLessThan(3_000)
  })

  it('the value shown is the same start as before, with "..." when cut', () => {
    const d = checkPackage({ ...base(), version: `9.${'x'.repeat(300)}` }, trusted)
    expect(d).toMatchObject({ ok: false, message: expect.stringContaining(`got "9.${'x'.repeat(74)}...`) })
    const numbers = Array.from({ length: 500 }, (_v, i) => i)
    const list = checkPackage({ ...base(), artifact: numbers }, trusted)
    expect(list).toMatchObject({ ok: false, message: expect.stringContaining(`got ${JSON.stringify(numbers).slice(0, 77)}...`) })
  })
})
