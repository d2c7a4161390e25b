// The signed snapshot: what the control plane pushes and what a proxy keeps on disk as its
// last-known-good. The signature covers the exact payload bytes (a JSON string inside the
// envelope), so no canonicalization is needed to verify it, and any edit to the file breaks it.
import type { KeyObject } from 'node:crypto'
import { sha256Hex } from '../config/canonical-json.ts'
import { verifySignature, type SigningKey } from './signing.ts'

export interface SnapshotPayload {
  version: number
  /** sha256 of the document's JSON text as stored. */
  digest: string
  issuedAt: string
  /** The config document as authored (the proxy validates it with its own schema). */
  document: unknown
}

export interface SignedSnapshot {
  /** JSON text of a SnapshotPayload; the signature covers exactly these bytes. */
  payload: string
  keyId: string
  /** base64 ed25519 signature of payload. */
  signature: string
}

export function signSnapshot(key: SigningKey, version: number, documentJson: string, issuedAt = new Date()): SignedSnapshot {
  const payload = `{"version":${version},"digest":"${sha256Hex(documentJson)}","issuedAt":"${issuedAt.toISOString()}","document":${documentJson}}`
  return { payload, keyId: key.keyId, signature: key.sign(payload) }
}

export class SnapshotError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'SnapshotError'
  }
}

/** Check shape and signature; returns the payload or throws SnapshotError saying why. */
export function openSnapshot(envelope: unknown, publicKey: KeyObject): SnapshotPayload {
  const e = envelope as Partial<SignedSnapshot> | null
  if (e === null || typeof e !== 'object' || typeof e.payload !== 'string' || typeof e.signature !== 'string') {
    throw new SnapshotError('not a signed snapshot (expected {payload, keyId, signature})')
  }
  if (!verifySignature(publicKey, e.payload, e.signature)) throw new SnapshotError(`signature does not verify with the control plane key${e.keyId ? ` (snapshot says key ${e.keyId})` : ''}`)
  let p: SnapshotPayload
  try {
    p = JSON.parse(e.payload) as SnapshotPayload
  } catch {
    throw new SnapshotError('payload is not JSON')
  }
  if (!Number.isInteger(p.version) || p.version < 1) throw new SnapshotError('payload has no valid version')
  return p
}
