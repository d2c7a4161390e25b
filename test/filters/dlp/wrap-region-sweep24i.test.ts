// DLP sweep 24i, without sockets (the scanner, validators and tokenizer driven directly).
// - a number written without separators and followed by a line break was joined to the digits of
//   the next line when a space stood among them ("ref 4000123412341008\n1 05 2027": a 16-digit
//   reference above a date became a 19-digit "card", masked or blocking the export);
// - verifyHash read a phone number written nationally in the process's own region: a hash made by
//   a proxy with `dlp.phoneRegion: GB` never verified where that config is not loaded.
import { afterEach, describe, expect, it } from 'vitest'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer, verifyHash } from '../../../filters/dlp/tokenizer.ts'
import { luhnValid, setDefaultPhoneRegion } from '../../../filters/dlp/validators.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const ring = { active: 'k1', keys: new Map([['k1', { id: 'k1', created: '2026-01-01T00:00:00.000Z', secret: new Uint8Array(32).fill(9) }]]) }
const PHONE = 1 << pack.typeIndex('phone_e164')
const redacting = () => new ExportScanner(pack, compileActions(pack, { credit_card: 'redact', ssn_us: 'redact', iban: 'redact' }), undefined)

describe('a compact number before a line break is a token of its own (sweep 24i)', () => {
  it('is not joined to the next line into a card', () => {
    // The 16 digits fail Luhn alone; with the date's first digits they pass as a 19-digit Visa.
    expect(luhnValid('4000123412341008')).toBe(false)
    expect(luhnValid('4000123412341008105')).toBe(true)
    for (const v of ['Delivered ref 4000123412341008\n1 05 2027', 'ids 1 05\n4000123412341008']) expect({ v, out: redacting().visit(v, 0) }).toEqual({ v, out: undefined })
  })
  it('numbers wrapped at a space between their groups are still found', () => {
    for (const [v, want] of [
      ['Card: 4111 1111 1111\n1111 exp 05/27', 'Card: [redacted:credit_card] exp 05/27'],
      ['Card: 4111\n1111 1111 1111', 'Card: [redacted:credit_card]'],
      ['Amex 3782 822463 \r\n10005 on file', 'Amex [redacted:credit_card] on file'],
      ['SSN 123\n45 6789', 'SSN [redacted:ssn_us]'],
      ['IBAN DE89\n3704 0044 0532 0130 00', 'IBAN [redacted:iban]'],
    ]) expect({ v, out: redacting().visit(v!, 0) }).toEqual({ v, out: want })
  })
})

describe('verifyHash of a national phone number (sweep 24i)', () => {
  afterEach(() => setDefaultPhoneRegion('US'))
  it('verifies in the region the proxy read it in, whatever this process reads', () => {
    setDefaultPhoneRegion('GB') // the proxy
    const scanner = new ExportScanner(pack, compileActions(pack, { phone_e164: 'hash' }), new Tokenizer(ring))
    const hashed = scanner.visit('020 7946 0018', PHONE) as string
    expect(hashed).toBe(new Tokenizer(ring).hash('phone_e164', '+442079460018'))
    setDefaultPhoneRegion('US') // a control plane: no dlp config loaded
    expect(verifyHash(hashed, 'phone_e164', '020 7946 0018', ring, 'GB')).toBe(true)
    expect(verifyHash(hashed, 'phone_e164', '+44 20 7946 0018', ring)).toBe(true)
    expect(verifyHash(hashed, 'phone_e164', '020 7946 0018', ring, 'FR')).toBe(false)
    // the region's verdicts do not leak into the thread's own reading
    expect(verifyHash(new Tokenizer(ring).hash('phone_e164', '(415) 555-0143'), 'phone_e164', '+1 415 555 0143', ring)).toBe(true)
  })
})
