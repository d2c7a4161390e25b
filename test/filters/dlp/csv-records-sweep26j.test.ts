// DLP sweep 26j: a CSV export's `records` (audit line) counted its header row, and blank lines,
// as records: N data rows were reported as N + 1, where the same rows as NDJSON said N. `records`
// is the records delivered (sweep 25b): for CSV, the data rows. Driven through ExportSession,
// then through a real proxy (worker thread), a real backend and an undici client on 127.0.0.1.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExportSession, type ExportFormat } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(randomBytes(32)), created: '' }]]) })

async function exportOf(format: ExportFormat, text: string | Buffer, csvHeader = true): Promise<{ out: string; records: number; kind: string | undefined }> {
  const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask', ssn_us: 'block' }), tokenizer)
  const session = new ExportSession(scanner, { format, maxTokenChars: 1 << 20, csvHeader, csvDelimiter: ',', judge: undefined })
  let out = ''
  out += (await session.write(Buffer.from(text)))?.toString() ?? ''
  out += (await session.end())?.toString() ?? ''
  return { out, records: session.records, kind: session.stop?.kind }
}

describe('CSV records are its data rows (sweep 26j)', () => {
  const rows = [{ id: 1, email: 'a@corp.com' }, { id: 2, email: 'b@corp.com' }, { id: 3, email: 'c@corp.com' }]
  const csv = `id,email\n${rows.map((r) => `${r.id},${r.email}`).join('\n')}\n`
  const ndjson = rows.map((r) => `${JSON.stringify(r)}\n`).join('')

  it('the same rows count the same as CSV and as NDJSON', async () => {
    const c = await exportOf('csv', csv)
    const n = await exportOf('ndjson', ndjson)
    expect(c.kind).toBeUndefined()
    expect(c.out).toBe('id,email\n1,a***@corp.com\n2,b***@corp.com\n3,c***@corp.com\n')
    expect(n.records).toBe(rows.length)
    expect(c.records).toBe(n.records)
  })

  it('a header-only export delivers no record; without a header every row is one', async () => {
    expect((await exportOf('csv', 'id,email\n')).records).toBe(0)
    expect((await exportOf('csv', csv, false)).records).toBe(rows.length + 1)
  })

  it('blank lines are no records (as in NDJSON), before the header or between rows', async () => {
    const c = await exportOf('csv', `\n\n${csv.replace('\n2,', '\n\n2,')}\n`)
    expect(c.out.split('\n').filter((l) => l.includes('@'))).toHaveLength(rows.length)
    expect(c.records).toBe(rows.length)
    expect((await exportOf('ndjson', `\n${ndjson}\n\n`)).records).toBe(rows.length)
  })

  it('a block: the data rows before the blocked one', async () => {
    const c = await exportOf('csv', 'id,ssn\n1,none\n2,none\n3,123-45-6789\n4,none\n')
    expect(c.kind).toBe('block')
    expect(c.out).toBe('id,ssn\n1,none\n2,none\n')
    expect(c.records).toBe(2)
  })

  it('a UTF-8 BOM still goes back in front of the header row only', async () => {
    const c = await exportOf('csv', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(csv)]))
    expect(c.out.startsWith('\ufeffid,email\n')).toBe(true)
    expect(c.out.split('\ufeff')).toHaveLength(2)
    expect(c.records).toBe(rows.length)
  })
})

describe('the audit line of a CSV export (sweep 26j)', () => {
  const ROWS = 50
  let raw: RawBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-26j-csv-'))
  const body = `id,email\n${Array.from({ length: ROWS }, (_, i) => `${i + 1},user${i}@example.com\n`).join('')}`
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/csv' })
      res.end(body)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { email: 'mask' } }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('says the data rows the client got', async () => {
    const r = await request(`${proxy.url}/export/users.csv`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    const lines = text.split('\n').filter((l) => l !== '')
    expect(lines[0]).toBe('id,email')
    const line = () => proxy.logs.find('dlp export').at(-1) as { outcome: string; format: string; records: number } | undefined
    await expect.poll(line, { timeout: 5_000 }).toBeDefined()
    expect(line()).toMatchObject({ outcome: 'allowed', format: 'csv', records: lines.length - 1 })
    expect(line()!.records).toBe(ROWS)
  })
})
