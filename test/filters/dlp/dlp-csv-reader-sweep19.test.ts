// DLP sweep 19: how CSV exports are read. A quote inside an unquoted cell is a literal character
// (Excel, Python's csv module and PapaParse read it so); rows end at CRLF, LF or CR whichever the
// first row used; blank lines before the header do not hide its column names. Real proxy (worker
// threads), a real node:http backend and undici clients on 127.0.0.1; the every-split checks
// drive the export session directly.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse as parseCsv } from 'csv-parse/sync'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { LocalKeyring } from '../../../filters/dlp/keyring.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { detokenize } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const PRESET = { email: 'mask', phone_e164: 'mask', ssn_us: 'redact' } as const
const JOIN_PRESET = { email: 'tokenize', phone_e164: 'hash', ssn_us: 'tokenize', iban: 'tokenize' } as const

// Cells with a stray quote (inches, a quoted word inside a note), beside properly quoted cells.
const STRAY =
  'id,desc,email,ssn\r\n' +
  '1,"24"" monitor, matte",jane@corp.com,123-45-6789\r\n' +
  '2,5" screen,bob@corp.com,234567890\r\n' +
  '3,call "Carol" re ssn 345-67-8901,carol@corp.com,\r\n' +
  '4,"quoted, still one cell",dave@corp.com,456789012\r\n'
// A CRLF header (Python's csv writer) with LF rows appended by another tool, and the reverse.
const MIXED_CRLF_LF = 'id,ssn,email\r\n1,123456789,ann@corp.com\n2,234567890,ben@corp.com\n3,345678901,cat@corp.com\n'
const MIXED_LF_CRLF = 'id,ssn,city,email\n1,123456789,Paris,ann@corp.com\r\n2,234567890,Oslo,ben@corp.com\r\n'
const BLANK_FIRST = '\r\nid,ssn,phone\r\n1,123456789,202 555 0147\r\n2,234567890,(202) 555-0148\r\n'
// The same people in a CSV written `a, b` style (a blank after each comma) and in NDJSON.
const SPACED_CSV = 'id, ssn, phone, iban\r\n1, 123-45-6789, +1 202 555 0147, DE89 3704 0044 0532 0130 00\r\n'
const JOIN_NDJSON = '{"id":1,"ssn":"123-45-6789","phone":"+1 202 555 0147","iban":"DE89 3704 0044 0532 0130 00"}\n'
const UNCLOSED = 'id,note\r\n1,"abc 123-45-6789\r\n2,x\r\n'

const RAW_VALUES = ['jane@corp.com', 'bob@corp.com', 'carol@corp.com', 'dave@corp.com', 'ann@corp.com', 'ben@corp.com', 'cat@corp.com', '123-45-6789', '345-67-8901', '123456789', '234567890', '345678901', '456789012', '555 0147', '555-0148']

const BODIES: Record<string, string> = {
  '/export/stray.csv': STRAY,
  '/export/mixed-crlf-lf.csv': MIXED_CRLF_LF,
  '/export/mixed-lf-crlf.csv': MIXED_LF_CRLF,
  '/export/blank-first.csv': BLANK_FIRST,
  '/export/unclosed.csv': UNCLOSED,
  '/joins/spaced.csv': SPACED_CSV,
  '/joins/people.ndjson': JOIN_NDJSON,
}

/** The output read back by a strict reader: what the client's CSV library sees. */
function cells(text: string): string[][] {
  return parseCsv(text, { bom: true, relax_column_count: true }) as string[][]
}

describe('dlp CSV export reading (sweep 19)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  let keyring: string

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      const body = BODIES[req.url ?? '']
      if (body === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' })
        return res.end('{"error":"not found"}')
      }
      res.writeHead(200, { 'content-type': req.url!.endsWith('.ndjson') ? 'application/x-ndjson' : 'text/csv; charset=utf-8' })
      // In pieces cut inside the interesting bytes (after the stray quote, between CR and LF).
      const b = Buffer.from(body)
      const cuts = [0]
      for (const needle of ['5"', '\r', '\n']) {
        const at = b.indexOf(needle, 20)
        if (at !== -1) cuts.push(at + 1)
      }
      cuts.push(b.length)
      cuts.sort((x, y) => x - y)
      for (let i = 0; i + 1 < cuts.length; i++) if (cuts[i + 1]! > cuts[i]!) res.write(b.subarray(cuts[i], cuts[i + 1]))
      res.end()
    })
    keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep19-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, presets: { csv_safe: PRESET, tok_join: JOIN_PRESET }, policy: { allowedPresets: ['csv_safe', 'tok_join'] } },
      routes: [
        {
          name: 'joins',
          match: { pathPrefix: '/joins/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'tok_join', exports: { paths: [{ prefix: '/joins/' }] } }],
        },
        {
          name: 'api',
          match: { pathPrefix: '/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'csv_safe', exports: { paths: [{ prefix: '/export/' }] } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  async function get(path: string): Promise<{ status: number; text: string }> {
    const r = await request(`${proxy.url}${path}`)
    return { status: r.statusCode, text: await r.body.text() }
  }

  function noRawValues(text: string): void {
    for (const v of RAW_VALUES) expect(text, v).not.toContain(v)
  }

  it('a quote inside an unquoted cell is a literal (it failed the whole export as malformed); values in and beside it are still masked', async () => {
    const { status, text } = await get('/export/stray.csv')
    expect(status).toBe(200)
    noRawValues(text)
    expect(cells(text)).toEqual([
      ['id', 'desc', 'email', 'ssn'],
      ['1', '24" monitor, matte', 'j***@corp.com', '[redacted:ssn_us]'],
      ['2', '5" screen', 'b***@corp.com', '[redacted:ssn_us]'],
      ['3', 'call "Carol" re ssn [redacted:ssn_us]', 'c***@corp.com', ''],
      // a quote that opens a cell still quotes it: the comma stays inside, four columns
      ['4', 'quoted, still one cell', 'd***@corp.com', '[redacted:ssn_us]'],
    ])
    expect(text.split('\r\n')).toHaveLength(6) // CRLF kept, the last row ending the file
  })

  it('a quoted cell that never closes still fails closed', async () => {
    const { status, text } = await get('/export/unclosed.csv')
    expect(status).toBe(403)
    expect(text).toContain('DLP_BLOCKED')
    expect(text).not.toContain('123-45-6789')
  })

  it('LF rows after a CRLF header are rows, not one cell (bare SSNs under the ssn column leaked)', async () => {
    const { status, text } = await get('/export/mixed-crlf-lf.csv')
    expect(status).toBe(200)
    noRawValues(text)
    expect(cells(text)).toEqual([
      ['id', 'ssn', 'email'],
      ['1', '[redacted:ssn_us]', 'a***@corp.com'],
      ['2', '[redacted:ssn_us]', 'b***@corp.com'],
      ['3', '[redacted:ssn_us]', 'c***@corp.com'],
    ])
  })

  it('CRLF rows after an LF header do not get a carriage return appended to their last cell', async () => {
    const { status, text } = await get('/export/mixed-lf-crlf.csv')
    expect(status).toBe(200)
    noRawValues(text)
    expect(cells(text)).toEqual([
      ['id', 'ssn', 'city', 'email'],
      ['1', '[redacted:ssn_us]', 'Paris', 'a***@corp.com'],
      ['2', '[redacted:ssn_us]', 'Oslo', 'b***@corp.com'],
    ])
  })

  it('a blank line before the header does not leave the columns unnamed (bare SSNs and national phones leaked)', async () => {
    const { status, text } = await get('/export/blank-first.csv')
    expect(status).toBe(200)
    noRawValues(text)
    expect(text.startsWith('\r\nid,ssn,phone\r\n')).toBe(true) // the blank line is kept
    expect(cells(text).filter((r) => r.length > 1)).toEqual([
      ['id', 'ssn', 'phone'],
      ['1', '[redacted:ssn_us]', '+1*******0147'],
      ['2', '[redacted:ssn_us]', '+1*******0148'],
    ])
  })

  it('a value with blanks around it in its cell gets the same token and hash as without (joins broke; detokenize gave the blank back)', async () => {
    const csv = await get('/joins/spaced.csv')
    const nd = await get('/joins/people.ndjson')
    expect(csv.status).toBe(200)
    expect(nd.status).toBe(200)
    const rec = JSON.parse(nd.text) as Record<string, string>
    expect(rec.ssn).toMatch(/^tok_ssn_us_/)
    expect(rec.phone).toMatch(/^hsh_phone_e164_/)
    expect(rec.iban).toMatch(/^tok_iban_/)
    const row = cells(csv.text)[1]!.map((c) => c.trim())
    expect(row).toEqual(['1', rec.ssn, rec.phone, rec.iban])
    const ring = await new LocalKeyring(keyring, { create: false }).load()
    expect(detokenize(row[1]!, ring).value).toBe('123-45-6789')
    expect(detokenize(row[3]!, ring).value).toBe('DE89 3704 0044 0532 0130 00')
  })
})

describe('dlp CSV export session: stray quotes and mixed line endings at every split (sweep 19)', () => {
  const pack = RulePack.load(BUILTIN_RULE_PACK)

  async function run(pieces: Buffer[]): Promise<{ out: string; stop: string | undefined }> {
    const scanner = new ExportScanner(pack, compileActions(pack, PRESET), undefined)
    const session = new ExportSession(scanner, { format: 'csv', maxTokenChars: 1024 * 1024, csvHeader: true, csvDelimiter: ',', judge: undefined })
    let out = ''
    for (const p of pieces) out += (await session.write(p))?.toString('utf8') ?? ''
    out += (await session.end())?.toString('utf8') ?? ''
    return { out, stop: session.stop?.kind }
  }

  it('gives the output of the whole input however the transfer splits it', async () => {
    const input = '\ufeff\r\nname,email,ssn,note\r\nJörg 😀,jörg@bücher.de,123456789,"multi\r\nline ☃ 4111"\n"Zoë ""Z""",zoe@example.com,234-56-7890,12" ruler 345-67-8901\r3,"x"y,456789012,end'
    const bytes = Buffer.from(input)
    const whole = await run([bytes])
    expect(whole.stop).toBeUndefined()
    expect(cells(whole.out)).toEqual([
      [''],
      ['name', 'email', 'ssn', 'note'],
      ['Jörg 😀', 'j***@bücher.de', '[redacted:ssn_us]', 'multi\r\nline ☃ 4111'],
      ['Zoë "Z"', 'z***@example.com', '[redacted:ssn_us]', '12" ruler [redacted:ssn_us]'],
      // a cell that was quoted and goes on after its closing quote keeps its quotes as text
      ['3', '"x"y', '[redacted:ssn_us]', 'end'],
    ])
    for (let at = 1; at < bytes.length; at++) {
      const split = await run([bytes.subarray(0, at), bytes.subarray(at)])
      if (split.out !== whole.out || split.stop !== undefined) throw new Error(`split at byte ${at}: ${split.stop ?? 'different output'}`)
    }
    expect(await run([...bytes].map((b) => Buffer.from([b])))).toEqual(whole)
  })
})
