// Reversible deterministic tokens and keyed hashes.
//
//   tok_<type>_<keyId>_<base64url(AES-SIV(value; AD = "igw-dlp-token/1", type, keyId))>
//   hsh_<type>_<keyId>_<base64url(HMAC-SHA256(value)[0..16])>
//
// Same value + same key → same token, so joins across exports still work; the type and key id
// are bound into the associated data, so a token cannot be relabelled as another type or key.
// `detokenize` is the control plane's admin operation (POST /v1/dlp/detokenize).
import { hash as oneShotHash, hkdfSync, timingSafeEqual } from 'node:crypto'
import { SivBatch, SivEncryptor, sivDecrypt } from './aes-siv.ts'
import { GenerationalMemo } from './generational-memo.ts'
import { KEY_ID, type KeyEntry, type KeyringSnapshot } from './keyring.ts'
import { phoneE164 } from './validators.ts'

const AD_LABEL = new TextEncoder().encode('igw-dlp-token/1')
const SALT = new TextEncoder().encode('igw-dlp')
const TYPE = /^[a-z][a-z0-9_]{0,31}$/
const MAX_TYPE = 32
/** What follows `tok_`: type, key id and payload are all letters, digits, "_" and (payload) "-". */
const TOKEN_BODY = /^[A-Za-z0-9_-]+$/

interface DerivedKey {
  readonly id: string
  /** 64 bytes: AES-SIV-512 (two AES-256 keys). */
  readonly siv: Uint8Array
  readonly hmacInner: Buffer
  readonly hmacOuter: Buffer
  readonly encryptors: Map<string, TypeEncryptor>
}

/** AES-SIV state for one (key, type) and the token prefix `tok_<type>_<keyId>_`. */
interface TypeEncryptor {
  readonly siv: SivEncryptor
  readonly prefix: string
}

/** A token not computed yet: `value` is set when its batch is flushed. */
export class PendingToken {
  value = ''
  readonly prefix: string
  constructor(prefix: string) {
    this.prefix = prefix
  }
}

function derive(entry: KeyEntry): DerivedKey {
  const siv = new Uint8Array(hkdfSync('sha256', entry.secret, SALT, 'aes-siv-512/token', 64))
  const mac = Buffer.from(hkdfSync('sha256', entry.secret, SALT, 'hmac-sha256/hash', 32))
  // HMAC (RFC 2104) over one-shot hashes: H((K^opad) || H((K^ipad) || m)). crypto.createHmac
  // allocates an OpenSSL context per call (~9 µs); two one-shot digests cost ~1.5 µs.
  const inner = Buffer.alloc(64, 0x36)
  const outer = Buffer.alloc(64, 0x5c)
  for (let i = 0; i < 32; i++) {
    inner[i]! ^= mac[i]!
    outer[i]! ^= mac[i]!
  }
  return { id: entry.id, siv, hmacInner: inner, hmacOuter: outer, encryptors: new Map() }
}

function associatedData(type: string, keyId: string): Uint8Array[] {
  return [AD_LABEL, new TextEncoder().encode(type), new TextEncoder().encode(keyId)]
}

export function hmacSha256(key: DerivedKey, value: Buffer): Buffer {
  const inner = oneShotHash('sha256', Buffer.concat([key.hmacInner, value]), 'buffer')
  return oneShotHash('sha256', Buffer.concat([key.hmacOuter, inner]), 'buffer')
}

function isBlank(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13
}

/** "%XX" escapes decoded as UTF-8; a malformed sequence leaves only its ASCII escapes decoded. */
function percentDecode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s.replace(/%([0-7][0-9A-Fa-f])/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
  }
}

/**
 * What a token or hash of an e-mail address is computed over: the address as written with "@",
 * however the export spelled it, so the same address joins across exports. A percent-encoded
 * address (an "%40" and no "@": "jane%2Bnews%40corp.com" in a URL query or form body; "%2540"
 * encoded twice) is decoded ("jane+news@corp.com"); a field value's "mailto:" and surrounding
 * blanks are not part of the address. An address written with "@" is used as it is (its tokens never change: a "%" in
 * it is a character of the local part, and the domain's case is kept). A phone number: in E.164
 * ("+1 (415) 555-0143", "%2B1%20415%20555%200143" and "+14155550143" were three tokens of one
 * number, so joins on the token broke; the E.164 spelling keeps its token). A card number, SSN or
 * IBAN wrapped across lines: with a space for the line break. Other types: the value
 * without the blanks around it (a field's value is matched whole with them: the CSV cell
 * " 123-45-6789" of `a, b` style files got another token than "123-45-6789", so joins broke,
 * and detokenize gave the blank back as part of the value). `phoneRegion`: the one national phone
 * numbers were read in (default: this thread's `dlp.phoneRegion`).
 */
export function tokenInput(type: string, value: string, phoneRegion?: string): string {
  const n = value.length
  const c0 = value.charCodeAt(0)
  if (type === 'phone_e164') {
    const e164 = phoneE164(value, phoneRegion)
    if (e164 !== undefined) return e164
  }
  // A grouped number wrapped across lines is the number with a space there (the same token).
  if ((type === 'credit_card' || type === 'ssn_us' || type === 'iban') && value.indexOf('\n') !== -1) return tokenInput(type, value.replace(/ ?\r?\n/g, ' '))
  if (type !== 'email') {
    if (!isBlank(c0) && !isBlank(value.charCodeAt(n - 1))) return value
    let s = 0
    let e = n
    while (s < e && isBlank(value.charCodeAt(s))) s++
    while (e > s && isBlank(value.charCodeAt(e - 1))) e--
    return s === e ? value : value.slice(s, e)
  }
  // the common case: a bare address with "@"
  if (value.indexOf('%') === -1 && !isBlank(c0) && (c0 | 0x20) !== 109 && !isBlank(value.charCodeAt(n - 1))) return value
  let s = 0
  let e = n
  while (s < e && isBlank(value.charCodeAt(s))) s++
  while (e > s && isBlank(value.charCodeAt(e - 1))) e--
  let address = s === 0 && e === n ? value : value.slice(s, e)
  if (address.indexOf('@') === -1 && address.indexOf('%40') !== -1) address = percentDecode(address)
  // encoded twice (a URL inside a query value): "%2540" decodes to "%40"
  else if (address.indexOf('@') === -1 && address.indexOf('%2540') !== -1) address = percentDecode(percentDecode(address))
  return address.length > 7 && address.slice(0, 7).toLowerCase() === 'mailto:' ? address.slice(7) : address
}

/** Tokens and hashes under the active key of one keyring snapshot (one per worker thread). */
export class Tokenizer {
  readonly activeKeyId: string
  readonly #active: DerivedKey
  // Hashes cost two SHA-256 digests; exports repeat values (a customer on many rows). Tokens are
  // not memoized: batched (TokenBatch) they cost less than a memo lookup and insert.
  readonly #memo = new GenerationalMemo<string>(65_536)

  constructor(ring: KeyringSnapshot) {
    const entry = ring.keys.get(ring.active)
    if (entry === undefined) throw new Error(`active key "${ring.active}" is not in the keyring`)
    this.activeKeyId = entry.id
    this.#active = derive(entry)
  }

  encryptor(type: string): TypeEncryptor {
    const k = this.#active
    let enc = k.encryptors.get(type)
    if (enc === undefined) {
      if (!TYPE.test(type)) throw new Error(`invalid token type "${type}"`)
      enc = { siv: new SivEncryptor(k.siv, associatedData(type, k.id)), prefix: `tok_${type}_${k.id}_` }
      k.encryptors.set(type, enc)
    }
    return enc
  }

  /** One token now (CSV rows, values inside free text); TokenBatch is the cheaper way for many. */
  tokenize(type: string, value: string): string {
    const enc = this.encryptor(type)
    return enc.prefix + Buffer.from(enc.siv.encrypt(Buffer.from(tokenInput(type, value), 'utf8'))).toString('base64url')
  }

  /** Tokens collected now and computed together on flush() (same tokens as tokenize()). */
  batch(): TokenBatch {
    return new TokenBatch(this, this.#active.siv)
  }

  hash(type: string, value: string): string {
    value = tokenInput(type, value)
    const memoKey = `h${type}\u0000${value}`
    const hit = this.#memo.get(memoKey)
    if (hit !== undefined) return hit
    const k = this.#active
    const digest = hmacSha256(k, Buffer.from(`${type}\u0000${value}`, 'utf8'))
    const out = `hsh_${type}_${k.id}_${digest.subarray(0, 16).toString('base64url')}`
    this.#memo.set(memoKey, out)
    return out
  }
}

/**
 * Tokens of one export chunk: add() returns a PendingToken whose value is set by flush(), which
 * encrypts the whole batch with a few AES-ECB calls (SivBatch). Bounded by what one chunk holds.
 */
export class TokenBatch {
  readonly #tokenizer: Tokenizer
  readonly #siv: SivBatch
  #pending: PendingToken[] = []

  constructor(tokenizer: Tokenizer, key: Uint8Array) {
    this.#tokenizer = tokenizer
    this.#siv = new SivBatch(key)
  }

  get size(): number {
    return this.#pending.length
  }

  add(type: string, value: string): PendingToken {
    const enc = this.#tokenizer.encryptor(type)
    const p = new PendingToken(enc.prefix)
    this.#siv.add(enc.siv, tokenInput(type, value))
    this.#pending.push(p)
    return p
  }

  flush(): void {
    const pending = this.#pending
    if (pending.length === 0) return
    this.#pending = []
    let view: Buffer | undefined
    this.#siv.run((i, bytes, start, end) => {
      view ??= Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
      const p = pending[i]!
      p.value = p.prefix + view.toString('base64url', start, end)
    })
  }
}

export type DetokenizeErrorCode = 'MALFORMED_TOKEN' | 'UNKNOWN_KEY' | 'INVALID_TOKEN'

/** Why a token could not be reversed. Messages never contain the token's payload or a value. */
export class DetokenizeError extends Error {
  readonly code: DetokenizeErrorCode
  constructor(code: DetokenizeErrorCode, message: string) {
    super(message)
    this.code = code
  }
}

export interface DetokenizedValue {
  type: string
  keyId: string
  value: string
}

const derivedCache = new WeakMap<KeyEntry, DerivedKey>()

/**
 * Reverse a token made by any key still in the keyring (rotation keeps old keys for this).
 * Throws DetokenizeError: MALFORMED_TOKEN (not `tok_<type>_<keyId>_<base64url>`), UNKNOWN_KEY
 * (its key is not in this keyring), INVALID_TOKEN (authentication failed: altered, relabelled
 * or made by another keyring).
 */
export function detokenize(token: string, keyring: KeyringSnapshot): DetokenizedValue {
  if (typeof token !== 'string' || !token.startsWith('tok_') || token.length > 16_384) {
    throw new DetokenizeError('MALFORMED_TOKEN', 'expected a token of the form tok_<type>_<keyId>_<base64url>')
  }
  // The type may itself contain "_" (phone_e164): try each split whose key id is in the ring;
  // the associated data authenticates the type, so only the right split decrypts. A type is at
  // most 32 characters, so only the underscores within its reach are split points: a token made
  // of thousands of "_" costs as much as any other (was quadratic: ~0.3 s for 16 KiB).
  const body = token.slice(4)
  if (!TOKEN_BODY.test(body)) throw new DetokenizeError('MALFORMED_TOKEN', 'expected a token of the form tok_<type>_<keyId>_<base64url>')
  let wellFormed = false
  let sawKey = false
  for (let typeEnd = body.indexOf('_'); typeEnd !== -1 && typeEnd <= MAX_TYPE; typeEnd = body.indexOf('_', typeEnd + 1)) {
    const keyEnd = body.indexOf('_', typeEnd + 1)
    if (keyEnd === -1) break
    const type = body.slice(0, typeEnd)
    const keyId = body.slice(typeEnd + 1, keyEnd)
    const payload = body.slice(keyEnd + 1)
    if (!TYPE.test(type) || !KEY_ID.test(keyId) || payload === '') continue
    wellFormed = true
    const entry = keyring.keys.get(keyId)
    if (entry === undefined) continue
    sawKey = true
    const ct = Buffer.from(payload, 'base64url')
    if (ct.length < 16) continue
    let k = derivedCache.get(entry)
    if (k === undefined) derivedCache.set(entry, (k = derive(entry)))
    try {
      const pt = sivDecrypt(k.siv, associatedData(type, keyId), new Uint8Array(ct))
      return { type, keyId, value: Buffer.from(pt).toString('utf8') }
    } catch {
      // wrong split or altered token: try the next split, then report INVALID_TOKEN
    }
  }
  // UNKNOWN_KEY only for a token that has the right shape: an admin reads it as "rotated out".
  if (!wellFormed) throw new DetokenizeError('MALFORMED_TOKEN', 'expected a token of the form tok_<type>_<keyId>_<base64url>')
  if (!sawKey) throw new DetokenizeError('UNKNOWN_KEY', 'the token was made with a key that is not in this keyring')
  throw new DetokenizeError('INVALID_TOKEN', 'the token does not authenticate (altered, relabelled, or from another keyring)')
}

/**
 * Whether `candidate` is the keyed hash of (type, value) under some key of the ring (for audits).
 * A phone number written nationally ("020 7946 0018") is read in `phoneRegion`, which must be the
 * `dlp.phoneRegion` of the proxy that hashed it: the hash is of its E.164 form, and a process that
 * never loaded that config (the control plane) reads national numbers as US ones.
 */
export function verifyHash(candidate: string, type: string, value: string, keyring: KeyringSnapshot, phoneRegion?: string): boolean {
  const prefix = `hsh_${type}_`
  if (!candidate.startsWith(prefix)) return false
  const m = /^([A-Za-z0-9]{1,32})_([A-Za-z0-9_-]+)$/.exec(candidate.slice(prefix.length))
  if (m === null) return false
  const entry = keyring.keys.get(m[1]!)
  if (entry === undefined) return false
  let k = derivedCache.get(entry)
  if (k === undefined) derivedCache.set(entry, (k = derive(entry)))
  value = tokenInput(type, value, phoneRegion)
  const want = hmacSha256(k, Buffer.from(`${type}\u0000${value}`, 'utf8')).subarray(0, 16)
  const got = Buffer.from(m[2]!, 'base64url')
  return got.length === want.length && timingSafeEqual(got, want)
}
