// Sweep 28g: what slipped past the masking.
// - A bare 9-digit SSN or a national phone number is read as one only under a field that names
//   its type, and only the whole key was compared: `customerSsn`, `ssn_number`, `SSNNumber`,
//   `tel_no`, `faxNumber`, `Telefonnummer` left them readable. Field words (pack 1.2.11).
// - Cards of the national schemes (Mir 2200-2204, RuPay 81/82, Troy 9792) were no known issuer:
//   they left readable, even under `cardNumber`.
import { describe, expect, it } from 'vitest'
import { luhnComplete } from '../../../filters/dlp/eval/corpus.ts'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const REDACT_ALL = compileActions(pack, Object.fromEntries(pack.types.map((t) => [t.name, 'redact'])))

function found(value: string, field: string): string[] {
  const s = new ExportScanner(pack, REDACT_ALL, undefined)
  s.findings = []
  s.visit(value, pack.fieldHint(field))
  return s.findings.map((f) => `${f.type}:${f.value}`)
}

async function ndjson(body: Buffer, pieces: Buffer[]): Promise<{ out: string; rules: Record<string, number>; stop: string | undefined }> {
  const scanner = new ExportScanner(pack, REDACT_ALL, undefined)
  const session = new ExportSession(scanner, { format: 'ndjson', maxTokenChars: 1 << 20, maxRecordChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge: undefined })
  let out = ''
  for (const p of pieces) out += (await session.write(p))?.toString() ?? ''
  out += (await session.end())?.toString() ?? ''
  return { out, rules: Object.fromEntries(scanner.ruleCounts), stop: session.stop?.message }
}

describe('dlp: field names read word by word (sweep 28g)', () => {
  it.each([
    ['customerSsn', '123456789', 'ssn_us'],
    ['ssn_number', '123 45 6789', 'ssn_us'],
    ['SSNNumber', '123456789', 'ssn_us'],
    ['applicant-tin', '123456789', 'ssn_us'],
    ['tel_no', '(415) 555-0143', 'phone_e164'],
    ['telNumber', '415.555.0143', 'phone_e164'],
    ['faxNumber', '4155550143', 'phone_e164'],
    ['customer_tel', '415-555-0143', 'phone_e164'],
    ['msisdn_primary', '447911123456', 'phone_e164'],
    ['Telefonnummer', '(415) 555-0143', 'phone_e164'],
  ])('%s: %s is a %s', (field, value, type) => {
    expect(found(value, field)).toEqual([`${type}:${value}`])
  })

  it.each([
    ['className', '123456789'],
    ['hotel', '(415) 555-0143'],
    ['intelId', '4155550143'],
    ['tinted', '123456789'],
    ['cellValue', '4155550143'],
    ['lessons', '123456789'],
  ])('%s: %s is no finding (a word, not a substring)', (field, value) => {
    expect(found(value, field)).toEqual([])
  })

  it('an NDJSON export leaves no such value readable, wherever the transfer splits it', async () => {
    const records = [
      { customerSsn: '123456789', tel_no: '(415) 555-0143', className: '123456789' },
      { SSNNumber: '078051120', faxNumber: '2025550188', order: 'A-1' },
    ]
    const body = Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n')
    const whole = await ndjson(body, [body])
    expect(whole.stop).toBeUndefined()
    expect(whole.out).toBe(
      '{"customerSsn":"[redacted:ssn_us]","tel_no":"[redacted:phone_e164]","className":"123456789"}\n' +
        '{"SSNNumber":"[redacted:ssn_us]","faxNumber":"[redacted:phone_e164]","order":"A-1"}\n',
    )
    expect(whole.rules).toEqual({ 'ssn_us.field@1.2.12': 2, 'phone_e164.field@1.2.12': 2 })
    for (let at = 1; at < body.length; at++) {
      const split = await ndjson(body, [body.subarray(0, at), body.subarray(at)])
      if (split.out !== whole.out) throw new Error(`split at byte ${at}: ${split.stop ?? split.out}`)
    }
  })
})

describe('dlp: national card schemes (sweep 28g)', () => {
  const group = (d: string) => d.replace(/(\d{4})(?=\d)/g, '$1 ')
  const mir = luhnComplete('220070012345678')
  const rupay = luhnComplete('817012345678901')
  const troy = luhnComplete('979200123456789')

  it.each([
    ['Mir', mir],
    ['RuPay', rupay],
    ['Troy', troy],
  ])('a %s card is found in text and under a card field', (_, digits) => {
    expect(found(`paid with ${group(digits)} today`, '')).toEqual([`credit_card:${group(digits)}`])
    expect(found(digits, 'cardNumber')).toEqual([`credit_card:${digits}`])
  })

  it('still by Luhn and length: a failing check digit or a wrong length is none', () => {
    const bad = mir.slice(0, 15) + String((Number(mir[15]) + 1) % 10)
    expect(found(`paid with ${bad}`, '')).toEqual([])
    expect(found(`ref ${luhnComplete('81701234567890')}`, '')).toEqual([]) // RuPay is 16 digits
    expect(found(`ref ${luhnComplete('2205001234567890')}`, '')).toEqual([]) // 2205 is no Mir range
  })

  it('the rule that found it is credit_card.value@1.2.11, in pack 1.2.12', () => {
    const s = new ExportScanner(pack, REDACT_ALL, undefined)
    s.visit(`card ${group(mir)}`, 0)
    expect(pack.version).toBe('1.2.12')
    expect(Object.fromEntries(s.ruleCounts)).toEqual({ 'credit_card.value@1.2.11': 1 })
  })
})
