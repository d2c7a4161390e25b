// DLP sweep 30p: personal values an export let out readable (pack 1.2.12).
// - The 00 international prefix before the trunk zero in brackets, as German and UK business text
//   writes numbers ("Tel. 0049 (0)30 12345678", "0044 (0)20 7946 0018"): found neither in text
//   nor under a phone field, while "+49 (0)30 12345678" and "0049 30 12345678" were masked.
//   Now phone_e164.national@1.2.12 finds it, and phone_e164.field@1.2.12 reads it as "+49 (0)30 …".
// - A plural field name ({"ssns": ["123456789"]}, "tels", "customerSSNs") hinted nothing, so the
//   bare SSNs and national numbers in its list left readable. Exact and word names of a field
//   rule now match with "s" (or "es" after s, x, z, ch, sh) appended.
// - "(+44) 20 7946 0018" masked to "(+44*******0018": the ")" closing the country code is kept.
// Scanner driven directly, then a real proxy (worker thread), a real backend and an undici client
// on 127.0.0.1.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { phoneE164 } from '../../../filters/dlp/validators.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const scanner = new ExportScanner(pack, compileActions(pack, Object.fromEntries(pack.types.map((t) => [t.name, 'mask']))), undefined)
const mask = (text: string, field = 'note') => scanner.visit(text, pack.fieldHint(field))
/** What the scanner finds in `text` under `field`: "type:value:rule". */
function found(text: string, field = 'note'): string[] {
  const out: { type: string; value: string; rule: string }[] = []
  scanner.findings = out
  try {
    scanner.visit(text, pack.fieldHint(field))
  } finally {
    scanner.findings = undefined
  }
  return out.map((f) => `${f.type}:${f.value}:${f.rule}`)
}

describe('00 international prefix with a bracketed trunk zero (sweep 30p)', () => {
  it.each([
    ['Tel. 0049 (0)30 12345678', 'Tel. +49*******5678', '0049 (0)30 12345678'],
    ['phone 0044 (0)20 7946 0018', 'phone +44*******0018', '0044 (0)20 7946 0018'],
    ['Tel. 0049(0)30 12345678', 'Tel. +49*******5678', '0049(0)30 12345678'],
    ['Tel. 0049 (0) 30 12345678', 'Tel. +49*******5678', '0049 (0) 30 12345678'],
    ['Fax: 0049 (0)30-12345678.', 'Fax: +49*******5678.', '0049 (0)30-12345678'],
  ])('in text: %j', (text, want, value) => {
    expect(found(text)).toEqual([`phone_e164:${value}:phone_e164.national@1.2.12`])
    expect(mask(text)).toBe(want)
  })

  it.each([
    ['phone', '0049 (0)30 12345678', '+49*******5678'],
    ['telefon', '0049 (0)30 12345678', '+49*******5678'],
    ['Telefonnummer', '0044 (0)20 7946 0018', '+44*******0018'],
  ])('under a %s field', (field, value, want) => {
    expect(found(value, field)).toEqual([`phone_e164:${value}:phone_e164.field@1.2.12`])
    expect(mask(value, field)).toBe(want)
  })

  it('one number, one E.164 form (so one token): as the + and the compact 00 spellings', () => {
    expect(phoneE164('0049 (0)30 12345678')).toBe('+493012345678')
    expect(phoneE164('0044 (0)20 7946 0018')).toBe('+442079460018')
  })

  it('no new false alarms: without a context word, after an exclusion word, not a valid number', () => {
    expect(found('ref 0049 (0)30 12345678')).toEqual([])
    expect(found('Tel. order 0049 (0)30 12345678')).toEqual([])
    expect(found('Tel. 0049 (0)30 1')).toEqual([])
    expect(found('0049 (0)30 1', 'phone')).toEqual([])
  })
})

describe('plural field names (sweep 30p)', () => {
  it.each([
    ['ssns', '123456789', 'ssn_us', '***-**-6789'],
    ['SSNs', '078051120', 'ssn_us', '***-**-1120'],
    ['customerSSNs', '078051120', 'ssn_us', '***-**-1120'],
    ['customer_ssns', '123 45 6789', 'ssn_us', '***-**-6789'],
    ['tins', '123456789', 'ssn_us', '***-**-6789'],
    ['tels', '(415) 555-0143', 'phone_e164', '+1*******0143'],
    ['faxes', '415.555.0143', 'phone_e164', '+1*******0143'],
    ['msisdns', '447911123456', 'phone_e164', '+44*******3456'],
  ])('%s: %s is a %s', (field, value, type, want) => {
    expect(found(value, field)).toEqual([`${type}:${value}:${type}.field@1.2.12`])
    expect(mask(value, field)).toBe(want)
  })

  it('hints of the plural are those of the name; words ending in "ss" and other plurals hint nothing', () => {
    for (const [plural, one] of [['ssns', 'ssn'], ['cards', 'card'], ['ccs', 'cc'], ['mails', 'mail'], ['ips', 'ip'], ['addrs', 'addr'], ['cells', 'cell']]) expect({ plural, hint: pack.fieldHint(plural!) }).toEqual({ plural, hint: pack.fieldHint(one!) })
    for (const key of ['address', 'class', 'status', 'tips', 'hotels', 'classNames', 'items', 'pass', 'ss'])
      expect({ key, hint: pack.fieldHint(key) }).toEqual({ key, hint: 0 })
    expect(found('123456789', 'tips')).toEqual([])
    expect(found('4155550143', 'hotels')).toEqual([])
  })
})

describe('a bracketed country code keeps its ")" in the mask (sweep 30p)', () => {
  it.each([
    ['call (+44) 20 7946 0018', 'call (+44)*******0018'],
    ['Tel (+49) 30 12345678 or +1 415 555 0143', 'Tel (+49)*******5678 or +1*******0143'],
    ['(+1 415 555 0143)', '(+1*******0143)'],
  ])('%j', (text, want) => {
    expect(mask(text)).toBe(want)
  })
})

describe('through a real proxy (sweep 30p)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-30p-'))
  const records = [
    { id: 1, note: 'Tel. 0049 (0)30 12345678' },
    { id: 2, phone: '0049 (0)30 12345678', telefon: '0044 (0)20 7946 0018' },
    { id: 3, ssns: ['123456789', '078051120'], tels: ['(415) 555-0143'] },
    { id: 4, note: 'call (+44) 20 7946 0018' },
    { id: 5, note: '+49 30 12345678' },
  ]
  const NDJSON = records.map((r) => JSON.stringify(r)).join('\n') + '\n'
  const CSV = 'id,SSNs\r\n1,123456789\r\n'
  const values = ['12345678', '7946 0018', '123456789', '078051120', '555-0143']
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const csv = req.url!.endsWith('.csv')
      res.writeHead(200, { 'content-type': csv ? 'text/csv' : 'application/x-ndjson' })
      res.end(csv ? CSV : NDJSON)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { phone_e164: 'mask', ssn_us: 'mask' }, t: { phone_e164: 'tokenize', ssn_us: 'tokenize' } }, policy: { enabled: false } },
      routes: [
        { name: 'mask', match: { pathPrefix: '/m/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/m/' }] } }] },
        { name: 'tok', match: { pathPrefix: '/t/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 't', exports: { paths: [{ prefix: '/t/' }] } }] },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('masked on its way out, and the audit line names the new rules', async () => {
    const r = await request(`${proxy.url}/m/export.ndjson`, { headers: { 'x-request-id': 'sweep30p-mask' } })
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text.trimEnd().split('\n').map((l) => JSON.parse(l))).toEqual([
      { id: 1, note: 'Tel. +49*******5678' },
      { id: 2, phone: '+49*******5678', telefon: '+44*******0018' },
      { id: 3, ssns: ['***-**-6789', '***-**-1120'], tels: ['+1*******0143'] },
      { id: 4, note: 'call (+44)*******0018' },
      { id: 5, note: '+49*******5678' },
    ])
    for (const v of values) expect(text).not.toContain(v)
    expect(r.trailers['x-dlp'] ?? r.headers['x-dlp']).toBe('preset=m; masked=8; tokenized=0; hashed=0; redacted=0; rules=igw-dlp-core@1.2.12')
    const audit = () => proxy.logs.find('dlp export').find((l) => l.reqId === 'sweep30p-mask') as { rules: Record<string, number> } | undefined
    await expect.poll(() => audit()?.rules, { timeout: 5_000 }).toMatchObject({ 'phone_e164.national@1.2.12': 1, 'phone_e164.field@1.2.12': 3, 'ssn_us.field@1.2.12': 2 })
  })

  it('tokenized: the bracketed-trunk spelling gets the token of the + spelling', async () => {
    const r = await request(`${proxy.url}/t/export.ndjson`)
    const lines = (await r.body.text()).trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(r.statusCode).toBe(200)
    const tok = String(lines[4]!.note)
    expect(tok).toMatch(/^tok_phone_e164_/)
    expect(lines[0]!.note).toBe(`Tel. ${tok}`)
    expect(lines[1]!.phone).toBe(tok)
    expect(String(lines[1]!.telefon)).toMatch(/^tok_phone_e164_/)
    expect((lines[2]!.ssns as string[]).every((s) => s.startsWith('tok_ssn_us_'))).toBe(true)
  })

  it('a CSV column headed by a plural', async () => {
    const r = await request(`${proxy.url}/m/export.csv`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).toBe('id,SSNs\r\n1,***-**-6789\r\n')
  })
})
