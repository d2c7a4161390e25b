// A key's kid in the plugin trust file is a label: it defaults to the key's hash, and an operator
// who later names the same key ("kid": "acme-2026") or renames its kid still trusts that key.
// trustOf looked keys up by the kid stored at upload, so every plugin the key had signed turned
// `revoked` (GET /v1/plugins, ?trust=revoked, the start-up warning) although nothing was revoked.
// Removing the key, or pointing the kid at another key, must still revoke. Real ed25519 keys.
import { describe, expect, it } from 'vitest'
import { checkPackage, trustOf } from '../../control-plane/plugin-package.ts'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { makePublisher, signedPackage } from '../helpers/plugins.ts'

const acme = makePublisher('acme', 'acme-2026')
const other = makePublisher('acme', 'acme-2027')
const { kid: _kid, ...unnamed } = acme.jwk
const trust = (...keys: Record<string, unknown>[]) => parsePluginTrust({ keys }, 'trust.json')

function stored() {
  const d = checkPackage(signedPackage(acme, { name: 'geo', version: '1.0.0', artifact: Buffer.from('\0asm geo') }), trust(unnamed))
  if (!d.ok) throw new Error(d.message)
  // As GET /v1/plugins hands it to trustOf: the digest with its prefix, the kid the upload verified with.
  return { ...d.plugin, digest: `sha256:${d.plugin.digest}` }
}

describe('plugin trust follows the key, not its kid', () => {
  it('stays trusted when the same key gets a kid or a new kid', () => {
    const p = stored()
    expect(p.keyId).toMatch(/^[0-9a-f]{16}$/)
    expect(trustOf(p, trust(unnamed))).toBe('trusted')
    expect(trustOf(p, trust(acme.jwk))).toBe('trusted')
    expect(trustOf(p, trust({ ...acme.jwk, kid: 'acme-renamed' }, other.jwk))).toBe('trusted')
  })

  it('is revoked when the key is removed, its kid names another key, or it moves to another publisher', () => {
    const p = stored()
    expect(trustOf(p, trust(other.jwk))).toBe('revoked')
    expect(trustOf(p, trust({ ...other.jwk, kid: p.keyId }))).toBe('revoked')
    expect(trustOf(p, trust({ ...acme.jwk, publisher: 'beta' }))).toBe('revoked')
    expect(trustOf({ ...p, version: '1.0.1' }, trust(acme.jwk))).toBe('revoked')
  })
})
