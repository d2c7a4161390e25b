// ed25519 keys of the control plane: one key signs config snapshots (proxies verify them before
// applying or booting from disk) and the audit log's hash chain. The private key stays in a file
// outside the database, so someone who can edit the database cannot re-sign what they changed.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { keyIdOf } from '../config/key-id.ts'

export interface SigningKey {
  readonly keyId: string
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  readonly publicKeyPem: string
  sign(data: string | Buffer): string
}

export { keyIdOf }

function fromPrivate(privateKey: KeyObject): SigningKey {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`signing key must be ed25519, got ${privateKey.asymmetricKeyType}`)
  const publicKey = createPublicKey(privateKey)
  return {
    keyId: keyIdOf(publicKey),
    privateKey,
    publicKey,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    sign: (data) => sign(null, typeof data === 'string' ? Buffer.from(data) : data, privateKey).toString('base64'),
  }
}

/** Load the PEM private key at path, creating it (mode 0600) on first start. */
export function loadOrCreateSigningKey(path: string): SigningKey {
  if (existsSync(path)) return fromPrivate(createPrivateKey(readFileSync(path, 'utf8')))
  mkdirSync(dirname(path), { recursive: true })
  const { privateKey } = generateKeyPairSync('ed25519')
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  chmodSync(path, 0o600)
  return fromPrivate(privateKey)
}

export function generateSigningKey(): SigningKey {
  return fromPrivate(generateKeyPairSync('ed25519').privateKey)
}

/** A public key from PEM (SPKI) or from a private key PEM (the public half is derived). */
export function loadPublicKey(pemText: string): KeyObject {
  if (pemText.includes('PRIVATE KEY')) return createPublicKey(createPrivateKey(pemText))
  return createPublicKey(pemText)
}

export function verifySignature(publicKey: KeyObject, data: string | Buffer, signatureB64: string): boolean {
  try {
    return verify(null, typeof data === 'string' ? Buffer.from(data) : data, publicKey, Buffer.from(signatureB64, 'base64'))
  } catch {
    return false
  }
}
