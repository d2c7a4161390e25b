// The plugin upload decision without sockets: every refusal reason, in the order they are
// checked, with real ed25519 keys (node:crypto) and one signature made by the openssl CLI the
// way docs/control-plane.md tells publishers to sign.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { checkPackage, MAX_ARTIFACT_BYTES, signingStatement, type TrustedKeys } from '../../control-plane/plugin-package.ts'
import { loadPluginTrust, NO_TRUSTED_KEYS, parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { keyIdOf } from '../../control-plane/signing.ts'
import { makePublisher, signedPackage, statementFor } from '../helpers/plugins.ts'

const acme = makePublisher('acme', 'acme-2026')
const acmeNext = makePublisher('acme', 'acme-2027') // a rotated key of the same publisher
const mallory = makePublisher('mallory')
const trusted: TrustedKeys = parsePluginTrust({ keys: [acme.jwk, acmeNext.jwk] }, 'trust.json')
const artifact = Buffer.from('\0asm\x01\0\0\0 a tiny plugin body')
const good = () => signedPackage(acme, { name: 'geo-enrich', version: '1.2.3', artifact })

const scratch = mkdtempSync(join(tmpdir(), 'igw-plugin-pkg-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe('checkPackage', () => {
  it('accepts a package signed by a trusted key of its publisher, naming the key and the digest', () => {
    const d = checkPackage(good(), trusted)
    expect(d).toMatchObject({ ok: true, plugin: { name: 'geo-enrich', version: '1.2.3', publisher: 'acme', keyId: 'acme-2026', size: artifact.length } })
    if (!d.ok) throw new Error('expected ok')
    expect(signingStatement(d.plugin, d.plugin.digest)).toBe(statementFor('acme', 'geo-enrich', '1.2.3', artifact))
    // Any of the publisher's keys will do (rotation): the next key verifies too, and is named.
    expect(checkPackage(signedPackage(acmeNext, { name: 'geo-enrich', version: '1.2.4', artifact }), trusted)).toMatchObject({ ok: true, plugin: { keyId: 'acme-2027' } })
    // keyId picks one key; it must be the one that signed.
    expect(checkPackage({ ...good(), keyId: 'acme-2026' }, trusted)).toMatchObject({ ok: true })
    expect(checkPackage({ ...good(), keyId: 'acme-2027' }, trusted)).toMatchObject({ ok: false, reason: 'bad_signature', message: expect.stringContaining('the trusted key "acme-2027"') })
  })

  it.each([
    ['absent', (p: Record<string, unknown>) => ({ ...p, signature: undefined })],
    ['null', (p: Record<string, unknown>) => ({ ...p, signature: null })],
    ['empty', (p: Record<string, unknown>) => ({ ...p, signature: '' })],
  ])('signature %s → unsigned, and the message says what to sign', (_what, edit) => {
    const body = JSON.parse(JSON.stringify(edit(good()))) as unknown
    const d = checkPackage(body, trusted)
    expect(d).toMatchObject({ ok: false, reason: 'unsigned', name: 'geo-enrich', version: '1.2.3', publisher: 'acme' })
    if (d.ok) throw new Error('expected a refusal')
    expect(d.message).toContain(statementFor('acme', 'geo-enrich', '1.2.3', artifact))
  })

  it('unsigned wins over an unknown publisher (the security alert counts unsigned uploads)', () => {
    expect(checkPackage({ ...good(), publisher: 'nobody', signature: null }, trusted)).toMatchObject({ ok: false, reason: 'unsigned' })
  })

  it('a changed artifact, name or version, or another key → bad_signature', () => {
    const tampered = { ...good(), artifact: Buffer.concat([artifact, Buffer.from('!')]).toString('base64') }
    expect(checkPackage(tampered, trusted)).toMatchObject({ ok: false, reason: 'bad_signature', message: expect.stringMatching(/does not verify with any of the 2 trusted keys of "acme"/) })
    // The signature binds name and version, not only the bytes: replaying it elsewhere fails.
    expect(checkPackage({ ...good(), name: 'geo-enrich-pro' }, trusted)).toMatchObject({ ok: false, reason: 'bad_signature' })
    expect(checkPackage({ ...good(), version: '9.9.9' }, trusted)).toMatchObject({ ok: false, reason: 'bad_signature' })
    // Mallory signs a package claiming to be acme's.
    expect(checkPackage(signedPackage(mallory, { name: 'geo-enrich', version: '1.2.3', artifact, publisher: 'acme' }), trusted)).toMatchObject({ ok: false, reason: 'bad_signature' })
    // Not 64 bytes: not an ed25519 signature at all.
    expect(checkPackage({ ...good(), signature: Buffer.alloc(63, 1).toString('base64') }, trusted)).toMatchObject({ ok: false, reason: 'bad_signature', message: expect.stringContaining('got 63') })
  })

  it('a publisher without a trusted key, or an unknown keyId → untrusted_publisher', () => {
    expect(checkPackage(signedPackage(mallory, { name: 'geo-enrich', version: '1.2.3', artifact }), trusted)).toMatchObject({ ok: false, reason: 'untrusted_publisher', publisher: 'mallory', message: expect.stringContaining('"mallory"') })
    expect(checkPackage(good(), NO_TRUSTED_KEYS)).toMatchObject({ ok: false, reason: 'untrusted_publisher', message: expect.stringContaining('--plugin-trust') })
    expect(checkPackage({ ...good(), keyId: 'acme-1999' }, trusted)).toMatchObject({ ok: false, reason: 'untrusted_publisher', message: expect.stringContaining('acme-2026, acme-2027') })
  })

  it.each<[string, unknown, RegExp]>([
    ['not an object', [1, 2], /expected a JSON object/],
    ['null', null, /expected a JSON object/],
    ['no artifact', { name: 'x', version: '1.0.0', publisher: 'acme', signature: 'AA==' }, /artifact: required/],
    ['bad name', { ...good(), name: 'Geo Enrich' }, /name: expected a plugin name/],
    ['bad version', { ...good(), version: 'latest' }, /version: expected a semantic version/],
    ['artifact not base64', { ...good(), artifact: 'not base64!' }, /artifact: expected the artifact bytes, base64/],
    ['empty artifact', { ...good(), artifact: '' }, /artifact: expected the artifact bytes/],
    ['unknown field', { ...good(), sig: 'x' }, /unknown key "sig"/],
    ['signature of the wrong type', { ...good(), signature: 42 }, /signature/],
    ['signature not base64', { ...good(), signature: '***' }, /signature: expected the signature, base64/],
  ])('malformed: %s', (_what, body, message) => {
    const d = checkPackage(body, trusted)
    expect(d).toMatchObject({ ok: false, reason: 'malformed' })
    if (d.ok) throw new Error('expected a refusal')
    expect(d.message).toMatch(/^malformed plugin package: /)
    expect(d.message).toMatch(message)
  })

  it('an artifact over the size limit is malformed (checked on the decoded bytes and, before decoding, on the text)', () => {
    for (const size of [MAX_ARTIFACT_BYTES + 1, MAX_ARTIFACT_BYTES + 4]) {
      const big = Buffer.alloc(size)
      expect(checkPackage(signedPackage(acme, { name: 'big', version: '1.0.0', artifact: big }), trusted)).toMatchObject({ ok: false, reason: 'malformed', message: expect.stringContaining(`artifact: the artifact is larger than ${MAX_ARTIFACT_BYTES} bytes`) })
    }
    expect(checkPackage(signedPackage(acme, { name: 'big', version: '1.0.0', artifact: Buffer.alloc(MAX_ARTIFACT_BYTES) }), trusted)).toMatchObject({ ok: true })
  })

  it('a signature made with the openssl CLI (the documented recipe) verifies', () => {
    const key = join(scratch, 'publisher.pem')
    writeFileSync(key, acme.privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const statement = join(scratch, 'statement.txt')
    writeFileSync(statement, statementFor('acme', 'geo-enrich', '2.0.0', artifact))
    const r = spawnSync('openssl', ['pkeyutl', '-sign', '-rawin', '-inkey', key, '-in', statement], { maxBuffer: 1 << 20 })
    expect(r.status, String(r.stderr)).toBe(0)
    const body = { name: 'geo-enrich', version: '2.0.0', publisher: 'acme', artifact: artifact.toString('base64'), signature: r.stdout.toString('base64') }
    expect(checkPackage(body, trusted)).toMatchObject({ ok: true, plugin: { keyId: 'acme-2026' } })
  })
})

describe('plugin trust file', () => {
  it('reads JWKS-shaped Ed25519 keys per publisher; kid defaults to the key id the control plane uses', () => {
    const { kid: _kid, ...noKid } = acme.jwk
    const t = parsePluginTrust({ keys: [noKid, mallory.jwk] }, 'trust.json')
    expect([...t.keys()].sort()).toEqual(['acme', 'mallory'])
    expect(t.get('acme')![0]!.keyId).toBe(keyIdOf(acme.publicKey))
  })

  it.each<[string, unknown, RegExp]>([
    ['no keys array', { key: [] }, /keys: required/],
    ['a private key', { keys: [{ ...acme.jwk, d: 'c2VjcmV0' }] }, /keys\[0\]\.d: a private key does not belong in the trust file/],
    ['no publisher', { keys: [{ kty: 'OKP', crv: 'Ed25519', x: acme.jwk.x }] }, /keys\[0\]\.publisher: required/],
    ['an RSA key', { keys: [{ ...acme.jwk, kty: 'RSA' }] }, /keys\[0\]\.kty/],
    ['a short x', { keys: [{ ...acme.jwk, x: 'abc' }] }, /keys\[0\]\.x: expected the 32-byte public key/],
    ['a kid twice for one publisher', { keys: [acme.jwk, { ...acmeNext.jwk, kid: 'acme-2026' }] }, /keys\[1\]\.kid: "acme-2026" appears twice for publisher "acme"/],
  ])('refuses %s with the path named', (_what, raw, message) => {
    expect(() => parsePluginTrust(raw, 'trust.json')).toThrow(ConfigError)
    expect(() => parsePluginTrust(raw, 'trust.json')).toThrow(message)
  })

  it('a missing or non-JSON file is a config error naming it', () => {
    expect(() => loadPluginTrust(join(scratch, 'nope.json'))).toThrow(/--plugin-trust: invalid config\n {2}cannot read .*nope\.json/)
    const bad = join(scratch, 'bad.json')
    writeFileSync(bad, '{"keys": [')
    expect(() => loadPluginTrust(bad)).toThrow(/bad\.json: invalid config\n {2}not JSON/)
  })
})
