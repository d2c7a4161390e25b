// The id of an ed25519 public key, the same on both sides of the config push: the control plane
// prints it (GET /v1/signing-key) and stamps it on each snapshot; a proxy names the key it pinned
// with it when a signature does not verify.
import { createHash, type KeyObject } from 'node:crypto'

/** sha256 of the key's SPKI DER, first 16 hex digits. */
export function keyIdOf(key: KeyObject): string {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16)
}
