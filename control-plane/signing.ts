// ed25519 keys of the control plane: one key signs config snapshots (proxies verify them before
// applying or booting from disk) and the audit log's hash chain. The private key stays in a file
// outside the database, so someone who can edit the database cannot re-sign what they changed.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { keyIdOf } from '../config/key-id.ts'
import { writeFileAtomicSync } from '../proxy/atomic-file.ts'

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

/** How to make a key this control plane takes, for error texts. */
const KEY_HINT = 'an ed25519 private key in PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it'

/** The signing key in `text` (read from `path`), or an error that names the file and what is wrong with it. */
function parseSigningKey(text: string, path: string): SigningKey {
  if (text.trim() === '') throw new Error(`signing key ${path} is empty: expected ${KEY_HINT} (delete the file to have one created)`)
  if (!text.includes('PRIVATE KEY') && text.includes('PUBLIC KEY')) {
    throw new Error(`signing key ${path} holds a public key: the control plane signs, so it needs the private key (${KEY_HINT}); the public half is what proxies pin`)
  }
  let key: KeyObject
  try {
    key = createPrivateKey(text)
  } catch (err) {
    throw new Error(`signing key ${path} is not a usable private key (${(err as Error).message}): expected ${KEY_HINT}`)
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`signing key ${path} holds a key of type ${key.asymmetricKeyType ?? 'unknown'}: expected ${KEY_HINT}`)
  return fromPrivate(key)
}

/**
 * Load the PEM private key at path, creating it (mode 0600) on first start.
 *
 * Creation is atomic and never replaces a key: the PEM is written to a temporary file and linked
 * into place, which fails if the path exists. Two control planes starting at once on one volume
 * (or a restart racing the old process) used to both see no file and both write one: the first
 * kept signing with a key the file no longer held, so after its restart every proxy that had
 * pinned it refused its snapshots and the audit entries it had signed no longer verified. A
 * reader never sees a half-written file either (which failed the start as a key it could not parse).
 */
export function loadOrCreateSigningKey(path: string): SigningKey {
  const existing = readKeyFile(path)
  if (existing !== undefined) return parseSigningKey(existing, path)
  const { privateKey } = generateKeyPairSync('ed25519')
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  try {
    mkdirSync(dirname(path), { recursive: true })
    // A temp file linked into place (proxy/atomic-file.ts): EEXIST when a key is there already.
    writeFileAtomicSync(path, pem, { mode: 0o600, exclusive: true })
  } catch (err) {
    // Another process created it first: that key is the one, for both of us.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return parseSigningKey(readKeyFile(path) ?? '', path)
    throw new Error(`signing key ${path}: cannot create it: ${(err as Error).message}`)
  }
  return fromPrivate(privateKey)
}

function readKeyFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`signing key ${path}: cannot read it: ${(err as Error).message}`)
  }
}

export function generateSigningKey(): SigningKey {
  return fromPrivate(generateKeyPairSync('ed25519').privateKey)
}

/** A public key from PEM (SPKI) or from a private key PEM (the public half is derived). */
export function loadPublicKey(pemText: string): KeyObject {
  const key = pemText.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(pemText)) : createPublicKey(pemText)
  // Any other key type would verify nothing: every signature would be reported as forged.
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`the control plane key must be ed25519, got a key of type ${key.asymmetricKeyType ?? 'unknown'}`)
  return key
}

export function verifySignature(publicKey: KeyObject, data: string | Buffer, signatureB64: string): boolean {
  try {
    return verify(null, typeof data === 'string' ? Buffer.from(data) : data, publicKey, Buffer.from(signatureB64, 'base64'))
  } catch {
    return false
  }
}
