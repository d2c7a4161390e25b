// DLP sweep 23e: one value, one token; grouped numbers wrapped across lines. Real proxy (worker
// threads) with a real node:http backend and undici clients on loopback; the scanner and
// tokenizer driven directly for the spellings. Defects fixed (rule pack igw-dlp-core@1.2.8):
// - a phone number got a different token (and hash) for each way it was written ("+1 (415)
//   555-0143", "%2B1%20415%20555%200143", JSON "\u002B1 415 555 0143", "+14155550143"): joins on
//   the token broke. Tokens are computed over the E.164 number (its own token is unchanged);
// - a card number, SSN or IBAN written with spaces and hard-wrapped at one of them ("4111 1111
//   1111\n1111" in a note) left readable; wrapped, it gets the token of the unwrapped spelling.
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { parseKeyring } from '../../../filters/dlp/keyring.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { detokenize, Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', created: '2026-01-01T00:00:00.000Z', secret: new Uint8Array(32).fill(7) }]]) })
const PHONE = 1 << pack.typeIndex('phone_e164')

describe('tokens of one phone number however it is written (sweep 23e)', () => {
  const spellings = ['+14155550143', '+1 415 555 0143', '+1 (415) 555-0143', '+1.415.555.0143', '%2B1%20415%20555%200143', '%2B1+%28415%29+555-0143', '%252B14155550143']
  it('a number in text gets the token of its E.164 spelling, which keeps its token', () => {
    const scanner = new ExportScanner(pack, compileActions(pack, { phone_e164: 'tokenize' }), tokenizer)
    const e164 = tokenizer.tokenize('phone_e164', '+14155550143')
    for (const v of spellings) expect({ v, out: scanner.visit(`call ${v} today`, 0) }).toEqual({ v, out: `call ${e164} today` })
  })
  it('a phone field (national in the default region, an MSISDN, 00-prefixed) and hashes too', () => {
    const scanner = new ExportScanner(pack, compileActions(pack, { phone_e164: 'hash' }), tokenizer)
    const want = tokenizer.hash('phone_e164', '+442079460018')
    for (const v of ['+44 20 7946 0018', '442079460018', '0044 20 7946 0018', '%2B44%2020%207946%200018']) expect({ v, out: scanner.visit(v, PHONE) }).toEqual({ v, out: want })
    expect(tokenizer.tokenize('phone_e164', '(415) 555-0143')).toBe(tokenizer.tokenize('phone_e164', '+14155550143'))
  })
})

describe('grouped numbers wrapped across lines (sweep 23e)', () => {
  const scanner = () => new ExportScanner(pack, compileActions(pack, { credit_card: 'redact', ssn_us: 'redact', iban: 'redact' }), undefined)
  it.each([
    ['Card: 4111 1111 1111\n1111 exp 05/27', 'Card: [redacted:credit_card] exp 05/27'],
    ['Card: 4111 1111\r\n1111 1111 exp 05/27', 'Card: [redacted:credit_card] exp 05/27'],
    ['Amex 3782 822463 \n10005 on file', 'Amex [redacted:credit_card] on file'],
    ['Customer SSN 123 45\n6789 verified', 'Customer SSN [redacted:ssn_us] verified'],
    ['Pay to IBAN DE89 3704 0044\n0532 0130 00 by Friday', 'Pay to IBAN [redacted:iban] by Friday'],
  ])('%j', (text, want) => {
    expect(scanner().visit(text, 0)).toBe(want)
  })
  it('a number ending a line keeps what the next line holds (a CVV, a year)', () => {
    expect(scanner().visit('4111 1111 1111 1111\n123', 0)).toBe('[redacted:credit_card]\n123')
    expect(scanner().visit('card 4111111111111111\n2027', 0)).toBe('card [redacted:credit_card]\n2027')
  })
  it('digits on two lines that were never one spaced number stay (no new false alarms)', () => {
    for (const v of ['ids 41111111\n11111111', 'ids 4111-1111-1111\n1111', 'ref 123\n456789 ssn', 'SSN 123\n45\n6789']) expect({ v, out: scanner().visit(v, 0) }).toEqual({ v, out: undefined })
  })
  it('a wrapped number gets the token of the unwrapped one; masks keep the line break', () => {
    const s = new ExportScanner(pack, compileActions(pack, { credit_card: 'tokenize', iban: 'mask' }), tokenizer)
    expect(s.visit('card 4111 1111 1111\n1111', 0)).toBe(`card ${tokenizer.tokenize('credit_card', '4111 1111 1111 1111')}`)
    expect(s.visit('IBAN DE89 3704 0044\n0532 0130 00', 0)).toBe('IBAN DE** **** ****\n**** **30 00')
  })
})

describe('an export through a real proxy (sweep 23e)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const keyringFile = join(mkdtempSync(join(tmpdir(), 'igw-dlp-23e-')), 'keyring.json')
  // JSON.stringify leaves "+" as it is: the \u-escaped spelling is written by hand.
  const BODY = [
    '{"id":1,"phone":"+14155550143"}',
    '{"id":2,"phone":"\\u002B1 (415) 555-0143"}',
    '{"id":3,"link":"https://crm.example/c?tel=%2B1%20415%20555%200143"}',
    '{"id":4,"note":"card on file 4111 1111 1111\\n1111, call +1 415 555 0143"}',
  ].join('\n') + '\n'

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      res.writeHead(req.url === '/export/people.ndjson' ? 200 : 404, { 'content-type': 'application/x-ndjson' })
      res.end(req.url === '/export/people.ndjson' ? BODY : '')
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: {
        keyring: { file: keyringFile },
        presets: { t: { email: 'tokenize', phone_e164: 'tokenize', ssn_us: 'redact', credit_card: 'redact', iban: 'redact' } },
        policy: { allowedPresets: ['t'] },
      },
      routes: [{ name: 'exports', upstream: raw.url, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'dlp', preset: 't', exports: { paths: [{ prefix: '/export/' }] } }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('every spelling of the number leaves as one token that reverses to E.164; the wrapped card is redacted', async () => {
    const r = await request(`${proxy.url}/export/people.ndjson`)
    const text = await r.body.text()
    expect(r.statusCode, text).toBe(200)
    const rows = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>)
    const token = rows[0]!.phone!
    expect(token).toMatch(/^tok_phone_e164_[A-Za-z0-9]+_[A-Za-z0-9_-]+$/)
    expect(rows[1]!.phone).toBe(token)
    expect(rows[2]!.link).toBe(`https://crm.example/c?tel=${token}`)
    expect(rows[3]!.note).toBe(`card on file [redacted:credit_card], call ${token}`)
    expect(detokenize(token, parseKeyring(readFileSync(keyringFile, 'utf8'), keyringFile)).value).toBe('+14155550143')
  })
})
