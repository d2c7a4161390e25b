// DLP sweep 24w: an export taken as UTF-8 (declared so, or with no charset) holding bytes that
// are not UTF-8 (an unlabeled Latin-1 export: "J\xf6rg") was decoded leniently, every such byte
// became U+FFFD, and the export left as "J\ufffdrg": its letters lost for good, with an x-dlp
// header saying all was well. It is malformed now (RFC 8259 §8.1: JSON is UTF-8), refused
// like invalid JSON; the records before the bad byte go out however the transfer splits them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { ExportSession, type ExportFormat } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startExportMaskingProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(32).fill(7), created: '' }]]) })
const latin1 = (s: string) => Buffer.from(s, 'latin1')

async function exportOf(format: ExportFormat, bytes: Buffer, chunk: number): Promise<{ out: string; stop: string | undefined; records: number }> {
  const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask' }), tokenizer)
  const session = new ExportSession(scanner, { format, maxTokenChars: 1 << 16, maxRecordChars: 1 << 16, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const out: Buffer[] = []
  for (let i = 0; i < bytes.length; i += chunk) {
    const b = await session.write(bytes.subarray(i, i + chunk))
    if (b !== undefined) out.push(b)
  }
  const last = await session.end()
  if (last !== undefined) out.push(last)
  return { out: Buffer.concat(out).toString('utf8'), stop: session.stop?.message, records: session.records }
}

describe('dlp: exports that are not UTF-8 (sweep 24w)', () => {
  it.each([
    ['json', latin1('{"name":"Jörg","email":"jorg@example.com"}')],
    ['csv', latin1('name,email\nJörg,jorg@example.com\n')],
    ['json', Buffer.concat([Buffer.from('{"ssn":"123-45'), Buffer.from([0xc0, 0xad]), Buffer.from('6789"}')])], // an overlong "-"
    ['json', Buffer.concat([Buffer.from('{"n":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])], // a UTF-16 surrogate
    ['json', Buffer.from('{"n":"é😀"}').subarray(0, 10)], // ends inside a character
  ] as const)('%s with invalid bytes is malformed, at every split, never turned into U+FFFD', async (format, bytes) => {
    for (const chunk of [1, 2, 3, 5, bytes.length]) {
      const r = await exportOf(format, bytes, chunk)
      expect(r.out).not.toContain('\ufffd')
      expect(r.stop, `chunk ${chunk}`).toMatch(/not valid (JSON|CSV) .*invalid UTF-8 at byte \d+/)
    }
  })

  it('names the same byte, and delivers the same records before it, however the transfer splits', async () => {
    const text = Buffer.concat([Buffer.from('{"e":"a@corp.com","n":"é😀"}\n{"e":"b@corp.com"}\n{"n":"J'), Buffer.from([0xf6]), Buffer.from('rg"}\n{"e":"c@corp.com"}\n')])
    const whole = await exportOf('ndjson', text, text.length)
    expect(whole.stop).toMatch(`invalid UTF-8 at byte ${text.indexOf(0xf6)}`)
    expect(whole.records).toBe(2)
    expect(whole.out).toContain('"n":"é😀"')
    expect(whole.out).toContain('b***@corp.com')
    for (let chunk = 1; chunk < 40; chunk++) expect({ chunk, ...(await exportOf('ndjson', text, chunk)) }).toEqual({ chunk, ...whole })
  })

  it('valid multi-byte text split anywhere (é, €, 😀, a BOM) is still read and kept as it is', async () => {
    const json = Buffer.from('\ufeff{"n":"é € 😀 jörg@bücher.de"}')
    for (let chunk = 1; chunk <= 8; chunk++) {
      const r = await exportOf('json', json, chunk)
      expect(r.stop).toBeUndefined()
      expect(r.out).toBe('\ufeff{"n":"é € 😀 j***@bücher.de"}')
    }
  })
})

describe('dlp: a Latin-1 export without its charset, through the proxy (sweep 24w)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const body = req.url === '/export/a.ndjson' ? latin1('{"email":"ann@example.com"}\n{"name":"Jörg"}\n') : latin1('{"name":"Jörg","email":"jorg@example.com"}')
      res.writeHead(200, { 'content-type': req.url === '/export/a.ndjson' ? 'application/x-ndjson' : 'application/json' })
      res.end(body)
    })
    proxy = await startExportMaskingProxy(raw.url)
  })

  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it.each(['/export/a.json', '/export/a.ndjson'])('%s is refused before the head (403 DLP_BLOCKED), not served with U+FFFD', async (path) => {
    const r = await request(`${proxy.url}${path}`)
    const body = await r.body.text()
    expect(body).not.toContain('\ufffd')
    expect(r.statusCode).toBe(403)
    expect(JSON.parse(body).errors[0]).toMatchObject({ extensions: { code: 'DLP_BLOCKED' } })
    expect(JSON.parse(body).errors[0].message).toMatch(/invalid UTF-8 at byte \d+/)
  })
})
