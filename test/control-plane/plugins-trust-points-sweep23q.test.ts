// The plugin trust file must hold Ed25519 public keys, not just 32 bytes: node:crypto imports any
// 32 bytes as an ed25519 key, so a mistyped `x` (no point of the curve), a small-order point or a
// non-canonical encoding loaded without a word, and every upload of that publisher was then a
// bad_signature (paging security) and all it had signed `revoked`. Refused at load now, naming
// the key. Real keys from node:crypto still load.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { loadPluginTrust, parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { makePublisher } from '../helpers/plugins.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-plugin-trust23q-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const key = (hex: string) => ({ kty: 'OKP', crv: 'Ed25519', x: Buffer.from(hex, 'hex').toString('base64url'), kid: 'acme-2026', publisher: 'acme' })
const problemsOf = (jwk: Record<string, unknown>): string[] => {
  try {
    parsePluginTrust({ keys: [makePublisher('globex').jwk, jwk] }, 'plugin-trust.json')
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as ConfigError).problems
  }
  return []
}

describe('plugin trust keys are Ed25519 points', () => {
  it.each([
    ['no point of the curve', '02'.padEnd(64, '0'), /not a point of the curve/],
    ['x = 0 with the sign bit set', `01${'00'.repeat(30)}80`, /not a point of the curve/],
    ['y not reduced (non-canonical)', 'ff'.repeat(32), /not reduced modulo/],
    ['the neutral point', `01${'00'.repeat(31)}`, /small order/],
    ['the point of order 2', `ec${'ff'.repeat(30)}7f`, /small order/],
    ['a point of order 4', '00'.repeat(32), /small order/],
    ['a point of order 8', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', /small order/],
  ])('refuses %s, naming the key', (_what, hex, why) => {
    const problems = problemsOf(key(hex))
    expect(problems).toHaveLength(1)
    expect(problems[0]).toMatch(/^keys\[1\] \(kid "acme-2026", publisher "acme"\)\.x: not an Ed25519 public key: /)
    expect(problems[0]).toMatch(why)
  })

  it('refuses an x whose last character carries bits beyond the 32 bytes (it would trust another key than the one written)', () => {
    const x = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x!
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const tweaked = `${x.slice(0, 42)}${alphabet[alphabet.indexOf(x[42]!) ^ 1]}`
    expect(Buffer.from(tweaked, 'base64url').equals(Buffer.from(x, 'base64url'))).toBe(true)
    expect(problemsOf({ ...key('00'), x: tweaked })).toEqual([expect.stringMatching(/^keys\[1\] \(kid "acme-2026", publisher "acme"\)\.x: not in canonical base64url/)])
  })

  it('loads real keys (many of them: no false refusal), and a bad one in a file stops the load naming the file', () => {
    const keys = Array.from({ length: 200 }, (_, i) => ({ ...generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }), kid: `k${i}`, publisher: 'acme' }))
    expect(parsePluginTrust({ keys }, 'plugin-trust.json').get('acme')).toHaveLength(200)
    const file = join(scratch, 'trust.json')
    writeFileSync(file, JSON.stringify({ keys: [...keys.slice(0, 2), key(`01${'00'.repeat(31)}`)] }))
    expect(() => loadPluginTrust(file)).toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid config\\n  keys\\[2\\] \\(kid "acme-2026", publisher "acme"\\)\\.x: not an Ed25519 public key: a point of small order`))
  })
})
