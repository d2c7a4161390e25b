// Detectors, validators, masks and actions, without sockets.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { BUILTIN_RULE_PACK, requiredLiteral, RulePack, RulePackError } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner, BLOCK, FOUND, MASK } from '../../../filters/dlp/scanner.ts'
import { ibanValid, luhnValid, ssnDigitsValid } from '../../../filters/dlp/validators.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const all = (action: string) => Object.fromEntries(pack.types.map((t) => [t.name, action]))
const scan = (preset: Record<string, string>) => new ExportScanner(pack, compileActions(pack, preset), undefined)

describe('validators', () => {
  it('SSN area/group/serial rules', () => {
    expect(ssnDigitsValid('123456789')).toBe(true)
    for (const bad of ['000123456', '666123456', '900123456', '999123456', '123006789', '123450000', '12345678']) expect(ssnDigitsValid(bad)).toBe(false)
  })
  it('Luhn and mod-97', () => {
    expect(luhnValid('4111111111111111')).toBe(true)
    expect(luhnValid('4111111111111112')).toBe(false)
    expect(ibanValid('DE89370400440532013000')).toBe(true)
    expect(ibanValid('DE89370400440532013001')).toBe(false)
    expect(ibanValid('GB82WEST12345698765432')).toBe(true)
    expect(ibanValid('DE8937040044053201300')).toBe(false) // wrong length for DE
  })
})

describe('rule pack v1.2', () => {
  it('is versioned data with an id and version on every rule', () => {
    expect(pack.name).toBe('igw-dlp-core')
    expect(pack.version).toBe('1.2.12') // 1.2.11: field words, Mir/RuPay/Troy cards (sweep 28g); 1.2.10: lower-case IBANs (sweep 26j); 1.2.9: only spaced groups of at most 6 joined across a line break (sweep 24i); 1.2.8: card numbers, SSNs and IBANs wrapped at a space across a line break (sweep 23e); 1.2.7: encoded separators, twice-encoded values and values inside an encoded URL (sweep 22b); 1.2.6: _-led addresses, %2B-encoded and 00-prefixed numbers, no Add::Bad IPv6 (sweep 21d); 1.2.5: ipv4.value refuses version tags (sweep 20p); 1.2.4: phone_e164.field reads numbers written without their + (sweep 19b)
    expect(pack.types.map((t) => t.name)).toEqual(['email', 'phone_e164', 'ssn_us', 'credit_card', 'iban', 'ipv4', 'ipv6'])
    for (const r of pack.rules) expect(r.label).toMatch(/^[a-z0-9_]+\.[a-z]+@1\.2\.[0-9]{1,2}$/) // 1.2.1-1.2.4: rules the sweeps changed; 1.2.6: phone_e164.urlencoded; 1.2.7: the e-mail and %2B rules, new in pack 1.2.6; 1.2.8: the rules for numbers wrapped across a line; 1.2.9: their joins narrowed; 1.2.10: iban.value reads lower case
  })
  it('bad packs are refused with the place of the problem', () => {
    const doc = { pack: 'p', version: '1.0', types: { email: { risk: 'low' } }, rules: [{ id: 'a', version: '1', type: 'email', pattern: '(x)' }] }
    expect(() => new RulePack(doc, 'p.json')).toThrow(/rules\[0\]\.pattern: use non-capturing groups/)
    expect(() => new RulePack({ ...doc, rules: [{ ...doc.rules[0], pattern: 'x', validator: 'nope' }] }, 'p.json')).toThrow(/rules\[0\]\.validator: expected one of/)
    expect(() => new RulePack({ ...doc, rules: [{ ...doc.rules[0], pattern: 'x', type: 'ssn' }] }, 'p.json')).toThrow(/rules\[0\]\.type: expected one of email/)
    expect(() => new RulePack({ ...doc, types: { email: { risk: 'extreme' } } }, 'p.json')).toThrow(RulePackError)
    expect(() => compileActions(pack, { passport: 'mask' })).toThrow(/preset type "passport" is not in rule pack igw-dlp-core@1.2.12/)
    expect(() => compileActions(pack, { email: 'shred' })).toThrow(/expected one of mask, tokenize, hash, redact, block/)
  })
  it('field names (JSON keys, CSV headers) hint the type', () => {
    const name = (k: string) => pack.types.filter((t) => (pack.fieldHint(k) & (1 << t.index)) !== 0).map((t) => t.name)
    expect(name('email')).toEqual(['email'])
    expect(name('contact_email')).toEqual(['email'])
    expect(name('phoneNumber')).toEqual(['phone_e164'])
    expect(name('SSN')).toEqual(['ssn_us'])
    expect(name('cardNumber')).toEqual(['credit_card'])
    expect(name('ip')).toEqual(['ipv4', 'ipv6'])
    expect(name('order_id')).toEqual([])
  })
})

describe('detection and masks', () => {
  const mask = scan(all('mask'))
  const cases: [string, string | undefined][] = [
    ['write to jane.doe@example.com today', 'write to j***@example.com today'],
    ['+12025550123', '+1*******0123'],
    ['call +44 20 7183 8750 now', 'call +44*******8750 now'],
    ['ssn 123-45-6789', 'ssn ***-**-6789'],
    ['card 4111 1111 1111 1111 ok', 'card **** **** **** 1111 ok'],
    ['iban DE89 3704 0044 0532 0130 00', 'iban DE** **** **** **** **30 00'],
    ['from 203.0.113.7', 'from 203.0.*.*'],
    ['peer 2001:db8::8a2e:370:7334', 'peer 2001:db8:*'],
    // hard negatives
    ['https://cdn.example.com/u/jane@example.com/avatar.png', 'https://cdn.example.com/u/j***@example.com/avatar.png'],
    ['https://jane@example.com/', undefined],
    ['logo@2x.png', undefined],
    ['order 100005 shipped', undefined],
    ['order 2025550143 shipped', undefined],
    ['id 000-12-3456 rejected', undefined],
    ['id 666-12-3456 rejected', undefined],
    ['id 912-12-3456 rejected', undefined],
    ['id 123-00-4567 rejected', undefined],
    ['id 123-45-0000 rejected', undefined],
    ['card 4111 1111 1111 1112 declined', undefined],
    ['acct DE89370400440532013001', undefined],
    ['version 1.2.3.4', undefined],
    ['999.1.1.1', undefined],
    ['at 12:30:45', undefined],
    ['dial +1 123 456 7890 failed', undefined],
    ['ref 123456789', undefined],
    ['2026-01-01T00:01:00.000Z', undefined],
  ]
  it.each(cases)('%j → %j', (input, want) => {
    expect(mask.visit(input, 0)).toBe(want)
  })
  it('context words and field names unlock formats that are ambiguous in free text', () => {
    expect(mask.visit('SSN: 123456789', 0)).toBe('SSN: ***-**-6789')
    expect(mask.visit('123456789', pack.fieldHint('ssn'))).toBe('***-**-6789')
    expect(mask.visit('123456789', pack.fieldHint('order_id'))).toBeUndefined()
    expect(mask.visit('phone (202) 555-0143', 0)).toBe('phone +1*******0143')
    expect(mask.visit('(202) 555-0143', pack.fieldHint('mobile'))).toBe('+1*******0143')
    expect(mask.visit('(202) 555-0143', 0)).toBeUndefined()
  })
  it('redact and block; counts by type, action and rule', () => {
    const s = scan({ email: 'redact', ssn_us: 'block' })
    expect(s.visit('a jane@example.com b', 0)).toBe('a [redacted:email] b')
    expect(s.visit('ssn 123-45-6789', 0)).toBeUndefined()
    expect(s.blockedType).toBe(pack.typeIndex('ssn_us'))
    expect(s.blockedRule).toBe('ssn_us.value@1.2.1')
    expect(s.count(pack.typeIndex('ssn_us'), BLOCK)).toBe(1)
    expect(s.ruleCounts.get('email.value@1.2.7')).toBe(1)
  })
  it('high-risk types without an action are still detected (for the policy) and pass unchanged', () => {
    const s = scan({ email: 'mask' })
    expect(s.visit('card 4111111111111111', 0)).toBeUndefined()
    expect(s.count(pack.typeIndex('credit_card'), FOUND)).toBe(1)
    expect(s.policyDirty).toBe(true)
    expect(s.unprotectedSeen).toBe(1 << pack.typeIndex('credit_card'))
    // a low-risk type outside the preset is not even looked for
    const before = s.detected
    expect(s.visit('from 10.0.0.1', 0)).toBeUndefined()
    expect(s.detected).toBe(before)
    expect(s.count(pack.typeIndex('email'), MASK)).toBe(0)
  })
})

describe('required literals (rules skipped on values that lack their character)', () => {
  it('reads a required top-level literal, and gives up on what it does not understand', () => {
    const pack = RulePack.load(BUILTIN_RULE_PACK)
    const lit = Object.fromEntries(pack.rules.map((r) => [r.id, r.literal === -1 ? undefined : pack.literals[r.literal]]))
    expect(lit).toEqual({ 'email.value': '@', 'email.urlencoded': '%', 'phone_e164.value': '+', 'phone_e164.urlencoded': '%', 'phone_e164.national': undefined, 'ssn_us.value': '-', 'ssn_us.context': undefined, 'credit_card.value': undefined, 'iban.value': undefined, 'ipv4.value': undefined, 'ipv6.value': undefined, 'email.atext': '@', 'email.literal': '@', 'iban.dashed': undefined })
    expect(requiredLiteral('x{0,3}@')).toBe('@')
    expect(requiredLiteral('@{2,}?')).toBe('@')
    expect(requiredLiteral('\\.+')).toBe('.')
    expect(requiredLiteral('(?:a|b)-\\d')).toBe('-')
    for (const p of ['a|b@', '\\+?\\d', '@*', '(@)', '[@]', '(?=@)', '\\k<n>@', '\\u0040', 'a{2', '\\d{0}@?', '\\']) expect(requiredLiteral(p), p).toBeUndefined()
  })
  it('finds exactly what the full scan finds, value by value, on the labeled corpus', async () => {
    const { generateCorpus } = await import('../../../filters/dlp/eval/corpus.ts')
    const pack = RulePack.load(BUILTIN_RULE_PACK)
    // The reference: the same pack with every pattern wrapped in a group, so no rule has a
    // required literal and every value is scanned with every rule.
    const raw = JSON.parse(readFileSync(BUILTIN_RULE_PACK, 'utf8')) as { rules: { pattern: string }[] }
    for (const r of raw.rules) r.pattern = `(?:${r.pattern})`
    const plain = new RulePack(raw, 'no-literals')
    expect(plain.literals).toEqual([])
    const redactAll = (p: RulePack) => compileActions(p, Object.fromEntries(p.types.map((t) => [t.name, 'redact'])))
    const fast = new ExportScanner(pack, redactAll(pack), undefined)
    const ref = new ExportScanner(plain, redactAll(plain), undefined)
    let values = 0
    for (const rec of generateCorpus().slice(0, 3000)) {
      for (const [field, value] of Object.entries(rec.fields)) {
        const a: { type: string; value: string; rule: string }[] = []
        const b: { type: string; value: string; rule: string }[] = []
        fast.findings = a
        ref.findings = b
        expect(fast.visit(value, pack.fieldHint(field))).toBe(ref.visit(value, plain.fieldHint(field)))
        expect(a).toEqual(b)
        values++
      }
    }
    expect(values).toBeGreaterThan(5000)
  })
})
