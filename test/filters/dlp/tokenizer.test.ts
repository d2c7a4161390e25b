// Tokens, hashes, the keyring and rotation, without sockets.
import { createHmac, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { aessiv } from '@noble/ciphers/aes.js'
import { describe, expect, it } from 'vitest'
import { SivBatch, SivEncryptor, sivDecrypt } from '../../../filters/dlp/aes-siv.ts'
import { addKey, ensureKeyringFile, KeyringError, LocalKeyring, parseKeyring, promoteKey } from '../../../filters/dlp/keyring.ts'
import { detokenize, DetokenizeError, hmacSha256, Tokenizer, verifyHash } from '../../../filters/dlp/tokenizer.ts'

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s/g, ''), 'hex'))
const tmpKeyring = () => join(mkdtempSync(join(tmpdir(), 'igw-dlp-keys-')), 'keyring.json')

describe('AES-SIV (RFC 5297)', () => {
  it('matches the RFC 5297 A.1 test vector', () => {
    const key = hex('fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff')
    const ad = hex('10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627')
    const out = new SivEncryptor(key, [ad]).encrypt(hex('11223344 55667788 99aabbcc ddee'))
    expect(Buffer.from(out).toString('hex')).toBe('85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c')
  })
  it('agrees bit for bit with noble aessiv on random keys, AD and lengths 0..99', () => {
    for (let i = 0; i < 600; i++) {
      const key = randomBytes([32, 48, 64][i % 3]!)
      const ad = [randomBytes(i % 37), randomBytes(5)]
      const pt = randomBytes(i % 100)
      const enc = new SivEncryptor(key, ad)
      const mine = enc.encrypt(pt)
      expect(Buffer.from(mine)).toEqual(Buffer.from(aessiv(key, ...ad).encrypt(pt)))
      expect(Buffer.from(enc.encrypt(pt))).toEqual(Buffer.from(mine)) // reusable, deterministic
      expect(Buffer.from(sivDecrypt(key, ad, mine))).toEqual(pt)
    }
  })
})

describe('AES-SIV batches (OpenSSL AES-ECB per round)', () => {
  it('equal noble aessiv item by item: random keys, several AD sets, lengths 0..99, non-ASCII', () => {
    for (let round = 0; round < 30; round++) {
      const key = randomBytes([32, 48, 64][round % 3]!)
      const ads = [[randomBytes(7)], [randomBytes(16), randomBytes(3)], []]
      const encs = ads.map((ad) => new SivEncryptor(key, ad))
      const batch = new SivBatch(key)
      const items: { ad: Uint8Array[]; value: string }[] = []
      for (let i = 0; i < 100; i++) {
        const raw = randomBytes(i).toString('base64').slice(0, i)
        const value = i % 9 === 0 ? `ü€${raw}` : raw // multi-byte UTF-8 takes the encoder path
        items.push({ ad: ads[i % 3]!, value })
        expect(batch.add(encs[i % 3]!, value)).toBe(i)
      }
      const seen: number[] = []
      batch.run((i, bytes, start, end) => {
        seen.push(i)
        const want = aessiv(key, ...items[i]!.ad).encrypt(Buffer.from(items[i]!.value, 'utf8'))
        expect(Buffer.from(bytes.subarray(start, end))).toEqual(Buffer.from(want))
      })
      expect(seen).toEqual(items.map((_, i) => i))
      expect(batch.size).toBe(0) // emptied: reusable
    }
  })
  it('refuses an encryptor made with another key', () => {
    const batch = new SivBatch(randomBytes(64))
    expect(() => batch.add(new SivEncryptor(randomBytes(64), []), 'x')).toThrow(/another key/)
  })
})

describe('tokens', () => {
  const ring = parseKeyring(JSON.stringify({ format: 'igw-dlp-keyring/1', active: 'k1', keys: [{ id: 'k1', created: '', secret: randomBytes(32).toString('base64url') }] }), 'test')
  const tok = new Tokenizer(ring)

  it('tok_<type>_<keyId>_<base64url>, deterministic, reversible, distinct per value and type', () => {
    const a = tok.tokenize('email', 'jane@example.com')
    expect(a).toMatch(/^tok_email_k1_[A-Za-z0-9_-]+$/)
    expect(tok.tokenize('email', 'jane@example.com')).toBe(a)
    expect(new Tokenizer(ring).tokenize('email', 'jane@example.com')).toBe(a) // not the memo: the construction
    expect(tok.tokenize('email', 'john@example.com')).not.toBe(a)
    const p = tok.tokenize('phone_e164', '+12025550123')
    expect(p).toMatch(/^tok_phone_e164_k1_/)
    expect(detokenize(a, ring)).toEqual({ type: 'email', keyId: 'k1', value: 'jane@example.com' })
    expect(detokenize(p, ring)).toEqual({ type: 'phone_e164', keyId: 'k1', value: '+12025550123' })
    expect(detokenize(tok.tokenize('ssn_us', 'ü 123-45-6789'), ring).value).toBe('ü 123-45-6789')
  })

  it('a TokenBatch gives exactly the tokens tokenize() gives, once flushed', () => {
    const values = Array.from({ length: 300 }, (_, i) => (i % 5 === 0 ? `ünï${i}@exämple.com` : `user${i}@example.com`))
    const batch = tok.batch()
    const pending = values.map((v, i) => batch.add(i % 2 ? 'email' : 'phone_e164', v))
    expect(pending[0]!.value).toBe('') // not computed before flush
    batch.flush()
    values.forEach((v, i) => {
      expect(pending[i]!.value).toBe(tok.tokenize(i % 2 ? 'email' : 'phone_e164', v))
      expect(detokenize(pending[i]!.value, ring).value).toBe(v)
    })
    expect(batch.size).toBe(0)
    const again = batch.add('email', values[1]!)
    batch.flush()
    expect(again.value).toBe(pending[1]!.value) // the batch is reusable and deterministic
  })

  it('the type and key id are authenticated: relabelled or altered tokens do not reverse', () => {
    const t = tok.tokenize('email', 'jane@example.com')
    const relabelled = t.replace('tok_email_', 'tok_ssn_us_')
    expect(() => detokenize(relabelled, ring)).toThrow(DetokenizeError)
    try {
      detokenize(relabelled, ring)
    } catch (err) {
      expect((err as DetokenizeError).code).toBe('INVALID_TOKEN')
      expect((err as Error).message).not.toContain('jane')
    }
    const flipped = t.slice(0, -2) + (t.at(-2) === 'A' ? 'B' : 'A') + t.at(-1)
    expect(() => detokenize(flipped, ring)).toThrow(/does not authenticate/)
    expect(() => detokenize('tok_email_k9_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', ring)).toThrow(/not in this keyring/)
    expect(() => detokenize('hello', ring)).toThrow(/expected a token/)
    const other = parseKeyring(JSON.stringify({ format: 'igw-dlp-keyring/1', active: 'k1', keys: [{ id: 'k1', created: '', secret: randomBytes(32).toString('base64url') }] }), 'other')
    expect(() => detokenize(t, other)).toThrow(/does not authenticate/)
  })

  it('hash is a keyed HMAC-SHA256 (RFC 2104), deterministic and verifiable, not reversible', () => {
    const h = tok.hash('email', 'jane@example.com')
    expect(h).toMatch(/^hsh_email_k1_[A-Za-z0-9_-]{22}$/)
    expect(tok.hash('email', 'jane@example.com')).toBe(h)
    expect(verifyHash(h, 'email', 'jane@example.com', ring)).toBe(true)
    expect(verifyHash(h, 'email', 'john@example.com', ring)).toBe(false)
    // the one-shot-hash HMAC equals node:crypto's
    const key = randomBytes(32)
    const inner = Buffer.alloc(64, 0x36)
    const outer = Buffer.alloc(64, 0x5c)
    for (let i = 0; i < 32; i++) {
      inner[i]! ^= key[i]!
      outer[i]! ^= key[i]!
    }
    const msg = Buffer.from('some value')
    expect(hmacSha256({ id: 'x', siv: new Uint8Array(64), hmacInner: inner, hmacOuter: outer, encryptors: new Map() }, msg)).toEqual(createHmac('sha256', key).update(msg).digest())
  })
})

describe('keyring file and rotation', () => {
  it('is created on first use with one key, owner-only, and concurrent creators agree', async () => {
    const path = tmpKeyring()
    const results = [ensureKeyringFile(path), ensureKeyringFile(path), ensureKeyringFile(path)]
    expect(results.filter((r) => r.created)).toHaveLength(1)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const ring = await new LocalKeyring(path, { create: false }).load()
    expect(ring.active).toBe('k1')
    expect(ring.keys.get('k1')!.secret).toHaveLength(32)
  })
  it('a missing file without create, or a broken one, is a clear error', async () => {
    await expect(new LocalKeyring(join(tmpdir(), 'nope', 'k.json'), { create: false }).load()).rejects.toThrow(/cannot read DLP keyring/)
    const path = tmpKeyring()
    writeFileSync(path, '{"format":"igw-dlp-keyring/1","active":"k2","keys":[{"id":"k1","secret":"AAAA"}]}')
    await expect(new LocalKeyring(path, { create: false }).load()).rejects.toThrow(KeyringError)
  })
  it('rotation: add + promote; new tokens use the new key, old tokens still reverse', async () => {
    const path = tmpKeyring()
    const provider = new LocalKeyring(path, { create: true })
    const ring1 = await provider.load()
    const old = new Tokenizer(ring1).tokenize('email', 'jane@example.com')
    const v1 = await provider.version()
    const id = addKey(path)
    expect(id).toBe('k2')
    expect((await provider.load()).active).toBe('k1') // added, not yet active
    promoteKey(path, id)
    const ring2 = await provider.load()
    expect(await provider.version()).not.toBe(v1)
    const fresh = new Tokenizer(ring2).tokenize('email', 'jane@example.com')
    expect(fresh).toMatch(/^tok_email_k2_/)
    expect(fresh).not.toBe(old)
    expect(detokenize(old, ring2).value).toBe('jane@example.com')
    expect(detokenize(fresh, ring2).value).toBe('jane@example.com')
    expect(() => promoteKey(path, 'k9')).toThrow(/no key "k9"/)
    expect(() => addKey(path, 'bad_id')).toThrow(/expected 1-32 letters or digits/)
    expect(readFileSync(path, 'utf8')).toContain('"active": "k2"')
  })
})
