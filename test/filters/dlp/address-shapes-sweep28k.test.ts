// Sweep 28k: spellings of values the rules did not know (pack 1.2.11).
// - An SSN written with dots (123.45.6789) was found nowhere, not even under an `ssn` field.
// - An IBAN in groups joined by "-" (NL91-ABNA-0417-1643-00) left readable.
// - RFC 5322 atext in a local part: in sales&marketing@corp.com only marketing@corp.com was
//   found, "sales&" stayed readable.
// - An address literal (user@[192.168.1.1]) was an IPv4 address alone: "user@" stayed readable.
// - Field names lost their accented letters (teléfono → telfono, tél → tl): no field hint.
import { describe, expect, it } from 'vitest'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const REDACT_ALL = compileActions(pack, Object.fromEntries(pack.types.map((t) => [t.name, 'redact'])))
const MASK_ALL = compileActions(pack, Object.fromEntries(pack.types.map((t) => [t.name, 'mask'])))

function found(value: string, field = 'note'): string[] {
  const s = new ExportScanner(pack, REDACT_ALL, undefined)
  s.findings = []
  s.visit(value, pack.fieldHint(field))
  return s.findings.map((f) => `${f.type}:${f.value}:${f.rule}`)
}

function masked(value: string, field = 'note'): string | undefined {
  const out = new ExportScanner(pack, MASK_ALL, undefined).visit(value, pack.fieldHint(field))
  return typeof out === 'string' ? out : undefined
}

describe('dlp: dotted SSNs and dashed IBANs (sweep 28k)', () => {
  it('finds an SSN written with dots after a context word and under an SSN field', () => {
    expect(found('SSN: 078.05.1120.')).toEqual(['ssn_us:078.05.1120:ssn_us.context@1.2.11'])
    expect(found('078.05.1120', 'ssn')).toEqual(['ssn_us:078.05.1120:ssn_us.field@1.2.12'])
    expect(masked('078.05.1120', 'customerSsn')).toBe('***-**-1120')
  })

  it('a dotted number is no SSN without context, inside a longer dotted number, or invalid', () => {
    expect(found('build 123.45.6789')).toEqual([])
    expect(found('ssn 1.123.45.6789')).toEqual([])
    expect(found('ssn 123.45.6789.1')).toEqual([])
    expect(found('ssn 666.45.6789')).toEqual([])
    expect(found('123.45-6789', 'ssn')).toEqual([])
  })

  it('finds an IBAN in groups joined by "-", in text and under an IBAN field, and masks it in shape', () => {
    expect(found('pay to NL91-ABNA-0417-1643-00 today')).toEqual(['iban:NL91-ABNA-0417-1643-00:iban.dashed@1.2.11'])
    expect(found('de89-3704-0044-0532-0130-00')).toEqual(['iban:de89-3704-0044-0532-0130-00:iban.dashed@1.2.11'])
    expect(found('NL91-ABNA-0417-1643-00', 'payoutIban')).toEqual(['iban:NL91-ABNA-0417-1643-00:iban.field@1.2.11'])
    expect(masked('acct NL91-ABNA-0417-1643-00')).toBe('acct NL**-****-****-**43-00')
  })

  it('a dashed IBAN-like run inside a longer dashed id, or with a bad check, is none', () => {
    expect(found('key NL91-ABNA-0417-1643-00-7Q2Z')).toEqual([])
    expect(found('key X-NL91-ABNA-0417-1643-00')).toEqual([])
    expect(found('NL92-ABNA-0417-1643-00')).toEqual([])
    expect(found('Nl91-AbNA-0417-1643-00')).toEqual([])
  })
})

describe('dlp: e-mail local parts with atext and address literals (sweep 28k)', () => {
  it('masks the whole address when the local part holds ! $ & ^ ~', () => {
    expect(found('mail sales&marketing@corp.com now')).toEqual(['email:sales&marketing@corp.com:email.atext@1.2.11'])
    expect(found('to: R&D!team@corp.com')).toEqual(['email:R&D!team@corp.com:email.atext@1.2.11'])
    expect(masked('<a href="mailto:sales&marketing@corp.com">')).toBe('<a href="mailto:s***@corp.com">')
    expect(found('sales&marketing@corp.com', 'email')).toEqual(['email:sales&marketing@corp.com:email.field@1.2.12'])
  })

  it('query strings and form bodies still give only the address after "="', () => {
    expect(found('https://x.example/?a=1&to=jane@corp.com')).toEqual(['email:jane@corp.com:email.value@1.2.7'])
    expect(found('email=jane@corp.com&cc=bob@corp.com')).toEqual(['email:jane@corp.com:email.value@1.2.7', 'email:bob@corp.com:email.value@1.2.7'])
    expect(found('prvs=1234abcd=user@example.com')).toEqual(['email:user@example.com:email.value@1.2.7'])
    expect(found('plain jane@corp.com')).toEqual(['email:jane@corp.com:email.value@1.2.7'])
  })

  it('an address literal is one e-mail address, its IP masked as an IP is', () => {
    expect(found('reply to user@[192.168.1.1].')).toEqual(['email:user@[192.168.1.1]:email.literal@1.2.11'])
    expect(found('ops@[IPv6:2001:db8::1]')).toEqual(['email:ops@[IPv6:2001:db8::1]:email.literal@1.2.11'])
    expect(masked('reply to user@[192.168.1.1].')).toBe('reply to u***@[192.168.*.*].')
    expect(masked('ops@[IPv6:2001:db8::1]')).toBe('o***@[IPv6:2001:db8:*]')
  })

  it('no address literal: a bad IP, or userinfo of a URL (the IP alone is found)', () => {
    expect(found('user@[999.1.1.1]')).toEqual([])
    expect(found('https://u@[10.0.0.1]/x')).toEqual(['ipv4:10.0.0.1:ipv4.value@1.2.2'])
  })
})

describe('dlp: accented field names (sweep 28k)', () => {
  it.each([
    ['tél', '(415) 555-0143', 'phone_e164'],
    ['númeroteléfono', '415.555.0143', 'phone_e164'],
    ['Teléfono', '4155550143', 'phone_e164'],
    ['TÉL', '+1 415 555 0143', 'phone_e164'],
  ])('%s: %s is a %s', (field, value, type) => {
    expect(found(value, field)).toEqual([`${type}:${value}:${type}.field@1.2.12`])
  })

  it('an accent no longer splits a word: "hôtel" is no "tel" field', () => {
    expect(pack.fieldHint('hôtel')).toBe(0)
    expect(found('4155550143', 'hôtel')).toEqual([])
  })

  it('an NDJSON export through the session: every new shape redacted, wherever the transfer splits it', async () => {
    const body = Buffer.from(
      JSON.stringify({ tél: '(415) 555-0143', ssn: '078.05.1120', to: 'sales&marketing@corp.com', via: 'user@[192.168.1.1]', iban: 'NL91-ABNA-0417-1643-00' }) + '\n',
    )
    const run = async (pieces: Buffer[]) => {
      const scanner = new ExportScanner(pack, REDACT_ALL, undefined)
      const session = new ExportSession(scanner, { format: 'ndjson', maxTokenChars: 1 << 20, maxRecordChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge: undefined })
      let out = ''
      for (const p of pieces) out += (await session.write(p))?.toString() ?? ''
      out += (await session.end())?.toString() ?? ''
      return { out, stop: session.stop?.message }
    }
    const whole = await run([body])
    expect(whole.stop).toBeUndefined()
    expect(whole.out).toBe('{"tél":"[redacted:phone_e164]","ssn":"[redacted:ssn_us]","to":"[redacted:email]","via":"[redacted:email]","iban":"[redacted:iban]"}\n')
    for (let at = 1; at < body.length; at += 7) {
      const split = await run([body.subarray(0, at), body.subarray(at)])
      if (split.out !== whole.out) throw new Error(`split at byte ${at}: ${split.stop ?? split.out}`)
    }
  })
})
