// DLP sweep 31f: records shaped as name/value pairs (EAV and key-value exports: CRM custom
// fields, form submissions, AWS tags, GA4 event_params, FHIR identifiers, `field,value` CSV)
// kept the field name in a sibling member, so field-name rules never applied: a bare SSN or a
// national phone number under {"name":"ssn","value":…} left readable. A `value` member now takes
// the hints of its object's naming member (either order), of the key holding the object, and
// passes them one level down into an object value; ordinary objects with a `name` stay as they
// were. Driven through ExportSession at every split of the transfer, then through a real proxy.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExportSession, type ExportFormat, type StopReason } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(randomBytes(32)), created: '' }]]) })
const MASK_ALL = { email: 'mask', phone_e164: 'mask', ssn_us: 'mask', credit_card: 'mask', iban: 'mask' }

interface Result {
  out: string
  stop: StopReason | undefined
  rules: Record<string, number>
}

async function exportOf(format: ExportFormat, text: string, chunk: number, preset: Record<string, string> = MASK_ALL): Promise<Result> {
  const scanner = new ExportScanner(pack, compileActions(pack, preset), tokenizer)
  const session = new ExportSession(scanner, { format, maxTokenChars: 1 << 20, maxRecordChars: 1 << 22, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const bytes = Buffer.from(text)
  let out = ''
  for (let i = 0; i < bytes.length; i += chunk) out += (await session.write(bytes.subarray(i, i + chunk)))?.toString() ?? ''
  out += (await session.end())?.toString() ?? ''
  return { out, stop: session.stop, rules: Object.fromEntries(scanner.ruleCounts) }
}

/** The result for the whole text in one write, checked to be the same at every split (1..64 bytes, and a few larger). */
async function everySplit(format: ExportFormat, text: string, preset?: Record<string, string>): Promise<Result> {
  const whole = await exportOf(format, text, 1 << 22, preset)
  const sizes = text.length <= 400 ? Array.from({ length: 64 }, (_, i) => i + 1) : [5, 997, 4096, 65_536]
  for (const chunk of sizes) expect({ chunk, ...(await exportOf(format, text, chunk, preset)) }).toEqual({ chunk, ...whole })
  return whole
}

describe('name/value pairs take the field name of their naming member (sweep 31f)', () => {
  it('JSON: {"name":…,"value":…} in either order, the value a string or a number', async () => {
    const doc = {
      fields: [
        { name: 'ssn', value: '123456789' },
        { name: 'Mobile Phone', value: '(415) 555-0143' },
        { value: '234567890', name: 'tin' },
        { value: 4155550199, id: 7, label: 'Cell' },
        { name: 'email', value: 'jane@corp.com' },
      ],
    }
    const r = await everySplit('json', JSON.stringify(doc))
    expect(JSON.parse(r.out)).toEqual({
      fields: [
        { name: 'ssn', value: '***-**-6789' },
        { name: 'Mobile Phone', value: '+1*******0143' },
        { value: '***-**-7890', name: 'tin' },
        { value: '+1*******0199', id: 7, label: 'Cell' },
        { name: 'email', value: 'j***@corp.com' },
      ],
    })
    expect(r.rules).toEqual({ 'ssn_us.field@1.2.12': 2, 'phone_e164.field@1.2.12': 2, 'email.field@1.2.12': 1 })
  })

  it('NDJSON: AWS tags (Key/Value), GA4 event_params (a value object), SCIM phoneNumbers, FHIR identifiers, CSV-style names', async () => {
    const lines = [
      { Tags: [{ Key: 'Owner', Value: 'ops' }, { Key: 'SSN', Value: '123 45 6789' }] },
      { event_params: [{ key: 'phone', value: { string_value: '415-555-0143', int_value: null } }, { key: 'page', value: { string_value: '/home' } }] },
      { phoneNumbers: [{ value: '415 555 0143', type: 'work' }], emails: [{ value: 'a@corp.com', primary: true }] },
      { identifier: [{ system: 'http://hl7.org/fhir/sid/us-ssn', value: '123456789' }, { system: 'urn:mrn', value: '123456789' }] },
      { attributes: [{ field_name: 'iban', field_value: 'DE89370400440532013000' }] },
    ]
    const r = await everySplit('ndjson', lines.map((l) => `${JSON.stringify(l)}\n`).join(''))
    expect(r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { Tags: [{ Key: 'Owner', Value: 'ops' }, { Key: 'SSN', Value: '***-**-6789' }] },
      { event_params: [{ key: 'phone', value: { string_value: '+1*******0143', int_value: null } }, { key: 'page', value: { string_value: '/home' } }] },
      { phoneNumbers: [{ value: '+1*******0143', type: 'work' }], emails: [{ value: 'a***@corp.com', primary: true }] },
      // a medical record number is no SSN: only the identifier whose system names one
      { identifier: [{ system: 'http://hl7.org/fhir/sid/us-ssn', value: '***-**-6789' }, { system: 'urn:mrn', value: '123456789' }] },
      { attributes: [{ field_name: 'iban', field_value: 'DE****************3000' }] },
    ])
  })

  it('no false positives: ordinary objects with a name, values of other members, pairs naming no sensitive field', async () => {
    const text = [
      { name: 'Ada', value: 3 },
      { name: 'Ada Lovelace', value: '123456789', phoneModel: 'Pixel' },
      { name: 'ssn', note: '123456789', count: 415555014 },
      { name: 'order', value: '(415) 555-0143' },
      { value: '123456789', title: 'ssn' },
      { name: { first: 'ssn' }, value: '123456789' },
      { value: ['123456789'], name: 'ssn' },
      { type: 'Feature', properties: { name: 'ssn' }, value: '123456789' },
    ]
      .map((l) => `${JSON.stringify(l)}\n`)
      .join('')
    const r = await everySplit('ndjson', text)
    expect(r.out).toBe(text)
    expect(r.rules).toEqual({})
  })

  it('only the first naming member counts, and nested pairs keep their own names', async () => {
    const text = '{"name":"nickname","key":"ssn","value":"123456789"}\n{"value":"123456789","child":{"value":"234567890","name":"ssn"},"name":"tin"}\n'
    const r = await everySplit('ndjson', text)
    expect(r.out).toBe('{"name":"nickname","key":"ssn","value":"123456789"}\n{"value":"***-**-6789","child":{"value":"***-**-7890","name":"ssn"},"name":"tin"}\n')
  })

  it('tokens, hashes and redaction apply to a held value too; a block never lets it out', async () => {
    const text = '{"rows":[{"value":"123456789","name":"ssn"},{"name":"phone","value":"(415) 555-0143"}]}'
    const tok = await exportOf('json', text, 5, { ssn_us: 'tokenize', phone_e164: 'hash' })
    const doc = JSON.parse(tok.out) as { rows: { value: string }[] }
    expect(doc.rows[0]!.value).toBe(tokenizer.tokenize('ssn_us', '123456789'))
    expect(doc.rows[1]!.value).toBe(tokenizer.hash('phone_e164', '(415) 555-0143'))
    expect((await exportOf('json', text, 3, { ssn_us: 'redact' })).out).toContain('"value":"[redacted:ssn_us]"')

    for (const t of [text, '{"name":"ssn","value":"123456789"}\n']) {
      for (const chunk of [1, 4, 1 << 20]) {
        const b = await exportOf(t.endsWith('\n') ? 'ndjson' : 'json', t, chunk, { ssn_us: 'block' })
        expect(b.stop).toMatchObject({ kind: 'block', type: 'ssn_us', count: 1, rule: 'ssn_us.field@1.2.12' })
        expect(b.out).not.toContain('123456789')
      }
    }
  })

  it('a name more than 64 KiB after its value is not read as its name, wherever the transfer splits', async () => {
    const far = `{"value":"123456789","pad":"${'x'.repeat(70_000)}","name":"ssn"}`
    expect((await everySplit('json', far)).out).toBe(far)
    const near = `{"value":"123456789","pad":"${'x'.repeat(60_000)}","name":"ssn"}`
    expect((await everySplit('json', near)).out).toBe(near.replace('"123456789"', '"***-**-6789"'))
  })

  it('CSV: a row under `field,value` columns (any spelling) takes the field it names', async () => {
    const csv = 'record_id,Field Name,Field Value\r\n1,ssn,123456789\r\n1,Phone,(415) 555-0143\r\n2,nickname,123456789\r\n2,ssn,\r\n'
    const r = await everySplit('csv', csv)
    expect(r.out).toBe('record_id,Field Name,Field Value\r\n1,ssn,***-**-6789\r\n1,Phone,+1*******0143\r\n2,nickname,123456789\r\n2,ssn,\r\n')
    // a CSV with a name column and no value column is not a pair file
    const plain = 'name,note\nssn,123456789\n'
    expect((await everySplit('csv', plain)).out).toBe(plain)
  })
})

describe('name/value pairs through the proxy (sweep 31f)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-31f-pairs-'))
  const json = JSON.stringify({ customFields: [{ value: '123456789', name: 'SSN' }, { name: 'Phone', value: '(415) 555-0143' }, { name: 'Ada', value: 3 }] })
  const ndjson = '{"key":"ssn","value":"123456789"}\n{"value":"(212) 555-0199","key":"tel"}\n'
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      if (req.url === '/export/fields.json') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(json)
        return
      }
      // one byte per write: every split of the transfer
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      const b = Buffer.from(ndjson)
      let i = 0
      const next = () => {
        if (i >= b.length) return res.end()
        res.write(b.subarray(i, ++i), next)
      }
      next()
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { ssn_us: 'mask', phone_e164: 'mask' } }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('JSON and NDJSON exports are masked, counted, and no log line carries a value', async () => {
    const j = await request(`${proxy.url}/export/fields.json`)
    expect(j.statusCode).toBe(200)
    expect(JSON.parse(await j.body.text())).toEqual({ customFields: [{ value: '***-**-6789', name: 'SSN' }, { name: 'Phone', value: '+1*******0143' }, { name: 'Ada', value: 3 }] })
    expect(j.headers['x-dlp']).toContain('masked=2')

    const n = await request(`${proxy.url}/export/fields.ndjson`)
    expect(n.statusCode).toBe(200)
    expect(await n.body.text()).toBe('{"key":"ssn","value":"***-**-6789"}\n{"value":"+1*******0199","key":"tel"}\n')

    await expect.poll(() => proxy.logs.find('dlp export').length, { timeout: 5_000 }).toBe(2)
    const audit = proxy.logs.find('dlp export') as { counts: Record<string, Record<string, number>> }[]
    expect(audit.map((a) => a.counts)).toEqual([
      { phone_e164: { mask: 1 }, ssn_us: { mask: 1 } },
      { phone_e164: { mask: 1 }, ssn_us: { mask: 1 } },
    ])
    const logs = proxy.logs.raw.join("\n")
    for (const v of ['123456789', '555-0143', '555-0199']) expect(logs).not.toContain(v)
  })
})
