// Plugin publishers for tests: real ed25519 key pairs (node:crypto), a trust file in the format
// the control plane reads, and packages signed the way a publisher signs them.
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'

export interface TestPublisher {
  publisher: string
  kid: string
  privateKey: KeyObject
  publicKey: KeyObject
  /** The trust-file entry (a JWKS key with `publisher`). */
  jwk: Record<string, unknown>
}

export function makePublisher(publisher: string, kid = `${publisher}-1`): TestPublisher {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, publisher, use: 'sig', alg: 'EdDSA' }
  return { publisher, kid, privateKey, publicKey, jwk }
}

export function writeTrustFile(path: string, publishers: TestPublisher[]): string {
  writeFileSync(path, JSON.stringify({ keys: publishers.map((p) => p.jwk) }, null, 2))
  return path
}

/** The statement a publisher signs, built here independently of the control plane's code. */
export function statementFor(publisher: string, name: string, version: string, artifact: Buffer, description?: string): string {
  const v1 = `igw-plugin/v1:${publisher}/${name}@${version}:sha256:${createHash('sha256').update(artifact).digest('hex')}`
  // A package with a description is signed over it too (v2).
  return description === undefined ? v1 : `${v1.replace('igw-plugin/v1:', 'igw-plugin/v2:')}:description-sha256:${createHash('sha256').update(description).digest('hex')}`
}

export function signedPackage(signer: TestPublisher, p: { name: string; version: string; artifact: Buffer; publisher?: string; description?: string }): Record<string, unknown> {
  const publisher = p.publisher ?? signer.publisher
  const signature = sign(null, Buffer.from(statementFor(publisher, p.name, p.version, p.artifact, p.description || undefined)), signer.privateKey).toString('base64')
  return { name: p.name, version: p.version, publisher, ...(p.description ? { description: p.description } : {}), artifact: p.artifact.toString('base64'), signature }
}
