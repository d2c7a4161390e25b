// AES-SIV (RFC 5297): deterministic authenticated encryption, the construction Google's
// Sensitive Data Protection and Tink use for reversible deterministic tokens. Encryption runs
// here on @noble/ciphers' audited AES block primitives with the per-(key, associated data)
// state computed once: the key schedules, the CMAC subkeys and the S2V accumulator over the
// associated data. That makes a short token cost a handful of AES blocks instead of the ~15 µs
// of rebuilding it all per value. Decryption (rare, an admin operation) uses noble's complete
// `aessiv` unchanged, and the tests check that both agree bit for bit and match the RFC vectors.
import { aessiv, unsafe } from '@noble/ciphers/aes.js'

const { expandKeyLE, encryptBlock, encrypt: encryptWords, dbl } = unsafe

// The word-level AES primitive reads blocks as little-endian 32-bit words (noble's layout on
// little-endian hosts); elsewhere fall back to the byte-level call, which swaps for us.
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

function xorInto(a: Uint8Array, b: Uint8Array, offset = 0): void {
  for (let i = 0; i < b.length; i++) a[offset + i]! ^= b[i]!
}

/** AES-SIV encryption bound to one key and one list of associated-data components. */
export class SivEncryptor {
  readonly #xkMac: Uint32Array
  readonly #xkCtr: Uint32Array
  readonly #k1 = new Uint8Array(16)
  readonly #k2 = new Uint8Array(16)
  /** S2V state after the zero block and every associated-data component. */
  readonly #d: Uint8Array

  /** key: 32 bytes (AES-SIV-256) or 64 bytes (AES-SIV-512): first half for S2V, second for CTR. */
  constructor(key: Uint8Array, associatedData: readonly Uint8Array[]) {
    if (key.length !== 32 && key.length !== 48 && key.length !== 64) throw new Error('AES-SIV key must be 32, 48 or 64 bytes')
    const half = key.length / 2
    this.#xkMac = expandKeyLE(key.slice(0, half))
    this.#xkCtr = expandKeyLE(key.slice(half))
    const l = encryptBlock(this.#xkMac, new Uint8Array(16))
    this.#k1.set(dbl(l))
    this.#k2.set(dbl(new Uint8Array(this.#k1)))
    let d = this.cmac(new Uint8Array(16))
    for (const ad of associatedData) {
      dbl(d)
      xorInto(d, this.cmac(ad))
    }
    this.#d = d
  }

  // One aligned scratch block per instance: no view or validation per AES block.
  readonly #block = new Uint8Array(16)
  readonly #words = new Uint32Array(this.#block.buffer)

  /** Encrypt this.#block in place. */
  #aes(xk: Uint32Array): void {
    if (!LITTLE_ENDIAN) {
      encryptBlock(xk, this.#block)
      return
    }
    const w = this.#words
    const o = encryptWords(xk, w[0]!, w[1]!, w[2]!, w[3]!)
    w[0] = o.s0
    w[1] = o.s1
    w[2] = o.s2
    w[3] = o.s3
  }

  /** AES-CMAC (RFC 4493) under the S2V key. */
  cmac(msg: Uint8Array): Uint8Array {
    const x = this.#block
    x.fill(0)
    const n = msg.length === 0 ? 1 : Math.ceil(msg.length / 16)
    for (let b = 0; b < n - 1; b++) {
      for (let i = 0; i < 16; i++) x[i]! ^= msg[b * 16 + i]!
      this.#aes(this.#xkMac)
    }
    const rest = msg.length - (n - 1) * 16
    const off = (n - 1) * 16
    if (rest === 16) {
      for (let i = 0; i < 16; i++) x[i]! ^= msg[off + i]! ^ this.#k1[i]!
    } else {
      for (let i = 0; i < rest; i++) x[i]! ^= msg[off + i]!
      x[rest]! ^= 0x80
      for (let i = 0; i < 16; i++) x[i]! ^= this.#k2[i]!
    }
    this.#aes(this.#xkMac)
    return new Uint8Array(x)
  }

  /** V || C, exactly what RFC 5297 (and noble's aessiv) produce for these inputs. */
  encrypt(plaintext: Uint8Array): Uint8Array {
    let t: Uint8Array
    if (plaintext.length >= 16) {
      t = new Uint8Array(plaintext)
      xorInto(t, this.#d, t.length - 16)
    } else {
      t = dbl(new Uint8Array(this.#d))
      for (let i = 0; i < plaintext.length; i++) t[i]! ^= plaintext[i]!
      t[plaintext.length]! ^= 0x80
    }
    const v = this.cmac(t)
    const out = new Uint8Array(16 + plaintext.length)
    out.set(v)
    // CTR with the 128-bit big-endian counter Q = V with bits 31 and 63 cleared.
    const q = new Uint8Array(v)
    q[8]! &= 0x7f
    q[12]! &= 0x7f
    const ks = this.#block
    for (let off = 0; off < plaintext.length; off += 16) {
      ks.set(q)
      this.#aes(this.#xkCtr)
      const end = Math.min(16, plaintext.length - off)
      for (let i = 0; i < end; i++) out[16 + off + i] = plaintext[off + i]! ^ ks[i]!
      for (let j = 15; j >= 0; j--) {
        q[j] = (q[j]! + 1) & 0xff
        if (q[j] !== 0) break
      }
    }
    return out
  }
}

/** RFC 5297 decryption with noble's complete implementation; throws on a wrong key or tampering. */
export function sivDecrypt(key: Uint8Array, associatedData: readonly Uint8Array[], ciphertext: Uint8Array): Uint8Array {
  return aessiv(key, ...associatedData).decrypt(ciphertext)
}
