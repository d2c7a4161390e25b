// Sweep 20p: precision and recall of each built-in rule on a labelled corpus built here (seeded),
// the way an export meets values: alone, inside sentences, next to punctuation, in URLs, one per
// line, and as lists after one context word. Plus the transformations: mask formats, tokens
// (deterministic per key, reversible only with the key, across a rotation, distinct per type).
// Defects fixed: a list of national phone numbers / bare SSNs after one context word left every
// value past the 32-character window readable; an international number in brackets took the
// closing bracket with it ("([redacted:phone_e164]", tokens of "+1…)"); "v1.2.3.4" version tags
// were masked as addresses; a custom rule that can match the empty string hung the scan forever.
import { randomBytes } from 'node:crypto'
import { Worker } from 'node:worker_threads'
import { getExampleNumber, type CountryCode } from 'libphonenumber-js/max'
import examples from 'libphonenumber-js/mobile/examples'
import { afterEach, describe, expect, it } from 'vitest'
import { ibanCheckDigits, luhnComplete, rng } from '../../../filters/dlp/eval/corpus.ts'
import type { KeyringSnapshot } from '../../../filters/dlp/keyring.ts'
import { maskerFor } from '../../../filters/dlp/masks.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { detokenize, DetokenizeError, Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { setDefaultPhoneRegion } from '../../../filters/dlp/validators.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const TYPES = pack.types.map((t) => t.name)

const REDACT_ALL = compileActions(pack, Object.fromEntries(TYPES.map((t) => [t, 'redact'])))

/** What every type enabled finds in one value (the scanner's findings: type and value as written). */
function findings(text: string, field = ''): { type: string; value: string }[] {
  const s = new ExportScanner(pack, REDACT_ALL, undefined)
  s.findings = []
  s.visit(text, field === '' ? 0 : pack.fieldHint(field))
  return s.findings.map(({ type, value }) => ({ type, value }))
}

afterEach(() => setDefaultPhoneRegion('US'))

// --- the corpus ----------------------------------------------------------------------------

const r = rng(0x20f)
const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1))
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!
const digits = (n: number) => Array.from({ length: n }, () => String(int(0, 9))).join('')
const pad = (n: number, w: number) => String(n).padStart(w, '0')

interface Sample {
  text: string
  field: string
  labels: { type: string; value: string }[]
}

const emails = (): string[] => {
  const first = pick(['jane', 'ivan', 'o.brien', 'mei', 'ana-luisa', 'k9'])
  return [
    `${first}.${pick(['doe', 'x', 'smith'])}@${pick(['corp.com', 'mail.example.co.uk', 'sub.domain.example.museum'])}`,
    `${first}+${pick(['news', 'tag', 'a.b'])}@example.org`,
    `"${first} ${pick(['doe', 'de la cruz'])}"@example.com`,
    `${pick(['jörg', 'josé', 'ünal'])}@${pick(['bücher.de', 'exámple.com'])}`,
    `${first}@xn--bcher-kva.de`,
    `${first}'s.inbox@example.net`,
  ]
}
const REGIONS: CountryCode[] = ['US', 'GB', 'DE', 'FR', 'IN', 'BR', 'JP', 'AU', 'MX', 'ZA', 'ES', 'IT', 'NG', 'KR', 'SE']
const phones = (): string[] => {
  const p = getExampleNumber(pick(REGIONS), examples)!
  return [p.number, p.formatInternational()]
}
const validSsn = (): string => {
  let area = int(1, 899)
  if (area === 666) area = 667
  return `${pad(area, 3)}-${pad(int(1, 99), 2)}-${pad(int(1, 9999), 4)}`
}
const invalidSsn = (): string =>
  pick([`000-${pad(int(1, 99), 2)}-${pad(int(1, 9999), 4)}`, `666-${pad(int(1, 99), 2)}-${pad(int(1, 9999), 4)}`, `${int(900, 999)}-${pad(int(1, 99), 2)}-${pad(int(1, 9999), 4)}`, `${pad(int(1, 899), 3)}-00-${pad(int(1, 9999), 4)}`, `${pad(int(1, 899), 3)}-${pad(int(1, 99), 2)}-0000`])
const card = (): string => {
  const prefix = pick(['4', '51', '55', '2221', '6011', '3528'])
  const n = luhnComplete(prefix + digits(15 - prefix.length))
  return pick([n, n.replace(/(\d{4})(?=\d)/g, '$1 '), n.replace(/(\d{4})(?=\d)/g, '$1-')])
}
const badLuhn = (): string => {
  const d = luhnComplete(`4${digits(14)}`)
  return d.slice(0, 15) + String((Number(d[15]) + int(1, 9)) % 10)
}
const iban = (): string => {
  const [cc, bban] = pick([['DE', digits(18)], ['FR', digits(23)], ['NL', `ABNA${digits(10)}`], ['ES', digits(20)], ['BE', digits(12)]] as const)
  const v = `${cc}${ibanCheckDigits(cc, bban)}${bban}`
  return r() < 0.5 ? v : v.replace(/(.{4})(?=.)/g, '$1 ')
}
const NEGATIVES = (): string[] => [
  `order ${digits(10)}`,
  `ORD-${int(2019, 2026)}-${digits(9)}`,
  `invoice #${digits(8)}`,
  `${int(2019, 2026)}-${pad(int(1, 12), 2)}-${pad(int(1, 28), 2)}T${pad(int(0, 23), 2)}:${pad(int(0, 59), 2)}:${pad(int(0, 59), 2)}.${digits(3)}Z`,
  `${int(2019, 2026)}-${pad(int(1, 12), 2)}-${pad(int(1, 28), 2)} ${pad(int(0, 23), 2)}:${pad(int(0, 59), 2)}:${pad(int(0, 59), 2)}+05:30`,
  `ts=17${digits(11)}`,
  crypto.randomUUID(),
  `v${int(1, 9)}.${int(0, 20)}.${int(0, 9)}.${int(0, 200)}`,
  `release ${int(1, 9)}.${int(0, 20)}.${int(0, 9)}.${int(0, 200)}`,
  `app-v${int(1, 9)}.${int(0, 9)}.${int(0, 9)}.${int(0, 9)}`,
  `Chrome/${int(100, 140)}.0.0.0`,
  `$${int(1, 999)},${digits(3)}.${digits(2)}`,
  `EUR ${int(1, 999)}.${digits(3)},${digits(2)}`,
  invalidSsn(),
  `card ${badLuhn()}`,
  `sha ${randomBytes(20).toString('hex')}`,
]

/** Values placed where exports carry them; the label is the value itself. */
function embed(type: string, v: string): Sample[] {
  const one = (text: string, field = ''): Sample => ({ text, field, labels: [{ type, value: v }] })
  const out = [one(v), one(`see ${v}, thanks`), one(`(${v})`), one(`${v}.`), one(`first line\n${v}\nlast line`)]
  if (type === 'email') out.push(one(`https://x.example/u?email=${v}&x=1`), one(`https://x.example/users/${v}/profile`))
  if (type === 'phone_e164' && !v.includes(' ')) out.push(one(`tel:${v}`), one(`https://x.example/call?to=${v}&x=1`))
  if (type === 'ssn_us' || type === 'credit_card' || type === 'iban') out.push(one(`id=${v.replaceAll(' ', '')}&x`, ''))
  return out.map((s) => (s.text.includes(v) ? s : { ...s, labels: [{ type, value: s.text.match(/id=([^&]+)/)![1]! }] }))
}

function corpus(): Sample[] {
  const out: Sample[] = []
  for (let i = 0; i < 40; i++) {
    for (const e of emails()) out.push(...embed('email', e))
    for (const p of phones()) out.push(...embed('phone_e164', p))
    out.push(...embed('ssn_us', validSsn()), ...embed('credit_card', card()), ...embed('iban', iban()))
    // national numbers and bare SSNs: only with a context word or a field name, here as lists
    const us = Array.from({ length: 4 }, () => `(${pick(['415', '212', '646', '917'])}) 555-01${pad(int(0, 99), 2)}`)
    out.push({ text: `Phone numbers: ${us.join(pick([', ', ' / ', '; ', ' or ']))}`, field: '', labels: us.map((value) => ({ type: 'phone_e164', value })) })
    const ssns = Array.from({ length: 4 }, () => validSsn().replaceAll('-', pick(['', ' '])))
    out.push({ text: `SSNs on file: ${ssns.join(pick([', ', '\n', ' and ']))}`, field: '', labels: ssns.map((value) => ({ type: 'ssn_us', value })) })
    out.push({ text: us[0]!, field: 'homePhone', labels: [{ type: 'phone_e164', value: us[0]! }] })
    for (const n of NEGATIVES()) out.push({ text: n, field: '', labels: [] })
  }
  return out
}

describe('per-rule precision and recall on a labelled corpus', () => {
  it('finds every labelled value and nothing else, per type', () => {
    const tally = Object.fromEntries(TYPES.map((t) => [t, { tp: 0, fp: 0, fn: 0 }]))
    const misses: string[] = []
    for (const s of corpus()) {
      const got = findings(s.text, s.field).map((f) => `${f.type}\u0000${f.value}`)
      const want = s.labels.map((l) => `${l.type}\u0000${l.value}`)
      for (const g of got) {
        const type = g.split('\u0000')[0]!
        if (want.includes(g)) tally[type]!.tp++
        else {
          tally[type]!.fp++
          misses.push(`FP ${g.replace('\u0000', ': ')} in ${JSON.stringify(s.text)}`)
        }
      }
      for (const w of want) {
        if (got.includes(w)) continue
        tally[w.split('\u0000')[0]!]!.fn++
        misses.push(`FN ${w.replace('\u0000', ': ')} in ${JSON.stringify(s.text)}`)
      }
    }
    const scores = Object.fromEntries(
      Object.entries(tally)
        .filter(([, c]) => c.tp + c.fp + c.fn > 0)
        .map(([t, c]) => [t, { precision: c.tp / Math.max(1, c.tp + c.fp), recall: c.tp / Math.max(1, c.tp + c.fn), n: c.tp + c.fn }]),
    )
    console.table(scores)
    expect(misses.slice(0, 20)).toEqual([])
    for (const t of ['email', 'phone_e164', 'ssn_us', 'credit_card', 'iban']) expect(scores[t]!.n, t).toBeGreaterThan(100)
  })
})

describe('fixed: lists after one context word', () => {
  it('national phone numbers past the 32-character window of "Phone numbers:" are still phones', () => {
    const list = ['(415) 555-0143', '(212) 555-0199', '(646) 555-0123', '(917) 555-0144']
    for (const sep of [', ', ' / ', '; ', ' and ', '\n', ' - ']) {
      expect(findings(`Phone numbers: ${list.join(sep)}`).map((f) => f.value), JSON.stringify(sep)).toEqual(list)
    }
  })
  it('bare SSNs in a list after "SSN" are all found', () => {
    expect(findings('SSN 123456789, 234567890, 345678901, 456789012').map((f) => f.value)).toEqual(['123456789', '234567890', '345678901', '456789012'])
  })
  it('a list does not carry across other words or an exclusion', () => {
    // the third number is past the window and follows words, not a separator
    expect(findings('phone 415-555-0143, order 1234567, ref 212-555-0199 and filler text 646 555 0123').map((f) => f.value)).toEqual(['415-555-0143'])
    // without any context word nothing starts a list
    expect(findings('(415) 555-0143, (212) 555-0199')).toEqual([])
  })
})

describe('fixed: an international number in brackets', () => {
  it('is found without the closing bracket, so masks, tokens and redactions keep it', () => {
    for (const v of ['+14155550143', '+1 415 555 0143', '+44 (0)20 7946 0018', '+27 71 123 4567']) {
      expect(findings(`call (${v}) now`), v).toEqual([{ type: 'phone_e164', value: v }])
    }
    const s = new ExportScanner(pack, compileActions(pack, { phone_e164: 'mask' }), undefined)
    expect(s.visit('tel (+1 415 555 0143), fax (+44 20 7946 0018)', 0)).toBe('tel (+1*******0143), fax (+44*******0018)')
    const t = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(32).fill(7), created: '' }]]) })
    const tok = new ExportScanner(pack, compileActions(pack, { phone_e164: 'tokenize' }), t).visit('(+14155550143)', 0)
    expect(tok).toBe(`(${t.tokenize('phone_e164', '+14155550143')})`)
    // a bracket the number opens stays its own
    expect(findings('+1 (415) 555-0143')).toEqual([{ type: 'phone_e164', value: '+1 (415) 555-0143' }])
  })
})

describe('fixed: version tags are not IPv4 addresses', () => {
  it('"v1.2.3.4", "V10.0.0.1", "app-v1.0.0.0" stay; addresses after other letters or words do not', () => {
    for (const v of ['v1.2.3.4', 'V10.0.0.1', 'app-v1.0.0.0', 'build v2.0.0.1 ok']) expect(findings(v), v).toEqual([])
    expect(findings('via 10.0.0.1')).toEqual([{ type: 'ipv4', value: '10.0.0.1' }])
    expect(findings('src=10.0.0.1;dev 192.168.1.20')).toEqual([{ type: 'ipv4', value: '10.0.0.1' }, { type: 'ipv4', value: '192.168.1.20' }])
    expect(pack.rules.find((x) => x.id === 'ipv4.value')!.version).toBe('1.2.2')
  })
})

describe('fixed: a custom rule that can match the empty string', () => {
  it('does not hang the scan (run in a worker, killed after 5 s)', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads')
      ;(async () => {
        const { RulePack } = await import(${JSON.stringify(new URL('../../../filters/dlp/rule-pack.ts', import.meta.url).href)})
        const { compileActions, ExportScanner } = await import(${JSON.stringify(new URL('../../../filters/dlp/scanner.ts', import.meta.url).href)})
        const pack = new RulePack({ pack: 'x', version: '1.0', types: { acct: { risk: 'medium' } }, rules: [{ id: 'acct.value', version: '1', type: 'acct', pattern: '(?<=acct )\\\\d{0,8}' }] }, 'inline')
        const s = new ExportScanner(pack, compileActions(pack, { acct: 'redact' }), undefined)
        parentPort.postMessage(s.visit('acct 12345678 and acct x, acct 42', 0))
      })().catch((e) => parentPort.postMessage('error: ' + e.message))`
    const w = new Worker(code, { eval: true })
    try {
      const out = await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('scan hung')), 5000)
        w.once('message', (m) => (clearTimeout(t), resolve(m)))
        w.once('error', (e) => (clearTimeout(t), reject(e)))
      })
      expect(out).toBe('acct [redacted:acct] and acct x, acct [redacted:acct]')
    } finally {
      await w.terminate()
    }
  })
})

describe('masks keep the documented format', () => {
  it('per type, for values found in text and whole field values', () => {
    const m = (type: string, v: string) => maskerFor(type)(v)
    expect(m('email', 'jane.doe+news@example.com')).toBe('j***@example.com')
    expect(m('email', 'jane%40corp.com')).toBe('j***%40corp.com')
    expect(m('phone_e164', '+44 20 7946 0018')).toBe('+44*******0018')
    expect(m('phone_e164', '(415) 555-0143')).toBe('+1*******0143')
    expect(m('ssn_us', '123 45 6789')).toBe('***-**-6789')
    expect(m('ssn_us', ' 123-45-6789 ')).toBe(' ***-**-6789 ')
    expect(m('credit_card', '4111-1111-1111-1111')).toBe('****-****-****-1111')
    expect(m('credit_card', '3782 822463 10005')).toBe('**** ****** *0005')
    expect(m('iban', 'DE89 3704 0044 0532 0130 00')).toBe('DE** **** **** **** **30 00')
    expect(m('ipv4', '203.0.113.9')).toBe('203.0.*.*')
    expect(m('ipv6', '2001:db8::1')).toBe('2001:db8:*')
  })
})

describe('tokens', () => {
  const key = (id: string) => ({ id, secret: new Uint8Array(randomBytes(32)), created: '' })
  const k1 = key('k1')
  const k2 = key('k2')
  const ring1: KeyringSnapshot = { active: 'k1', keys: new Map([['k1', k1]]) }
  const rotated: KeyringSnapshot = { active: 'k2', keys: new Map([['k1', k1], ['k2', k2]]) }
  const values: [string, string][] = [['email', 'jane+news@bücher.de'], ['phone_e164', '+14155550143'], ['ssn_us', '123-45-6789'], ['credit_card', '4111 1111 1111 1111'], ['iban', 'DE89370400440532013000']]

  it('are deterministic per key, batch or not, and reverse only with the key that made them', () => {
    const t = new Tokenizer(ring1)
    for (const [type, v] of values) {
      const tok = t.tokenize(type, v)
      expect(new Tokenizer(ring1).tokenize(type, v)).toBe(tok)
      const b = t.batch()
      const p = b.add(type, v)
      b.flush()
      expect(p.value).toBe(tok)
      expect(detokenize(tok, ring1)).toEqual({ type, keyId: 'k1', value: v })
      // another keyring with a key of the same id cannot read it
      expect(() => detokenize(tok, { active: 'k1', keys: new Map([['k1', key('k1')]]) })).toThrow(DetokenizeError)
      expect(new Tokenizer({ active: 'k1', keys: new Map([['k1', key('k1')]]) }).tokenize(type, v)).not.toBe(tok)
    }
  })
  it('made before a rotation still reverse after it; new ones use the new key', () => {
    const before = values.map(([type, v]) => new Tokenizer(ring1).tokenize(type, v))
    const after = new Tokenizer(rotated)
    values.forEach(([type, v], i) => {
      expect(detokenize(before[i]!, rotated).value).toBe(v)
      const tok = after.tokenize(type, v)
      expect(tok.startsWith(`tok_${type}_k2_`)).toBe(true)
      expect(detokenize(tok, rotated)).toEqual({ type, keyId: 'k2', value: v })
      expect(() => detokenize(tok, ring1)).toThrow(expect.objectContaining({ code: 'UNKNOWN_KEY' }))
    })
  })
  it('of different types never collide, and a token relabelled as another type does not reverse', () => {
    const t = new Tokenizer(ring1)
    const v = '4111111111111111'
    const toks = TYPES.map((type) => t.tokenize(type, v))
    expect(new Set(toks).size).toBe(TYPES.length)
    const payloads = toks.map((x) => x.slice(x.lastIndexOf('_k1_') + 4))
    expect(new Set(payloads).size).toBe(TYPES.length)
    const relabelled = `tok_ssn_us_k1_${payloads[TYPES.indexOf('credit_card')]}`
    expect(() => detokenize(relabelled, ring1)).toThrow(expect.objectContaining({ code: 'INVALID_TOKEN' }))
  })
})
