// DLP sweep 31f: a CSV export refused by csv-parse said only "malformed CSV", for broken quoting
// and for a perfectly valid file with one row over maxValueBytes alike: the operator could not
// tell which limit to raise, nor where the file broke. The reason now names the limit or the
// open quote, and the line (never a byte of the input). Through ExportSession at several splits
// of the transfer, then the 403 of a real proxy.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)

async function stopOf(text: string, chunk: number, maxTokenChars: number): Promise<{ out: string; message: string | undefined }> {
  const s = new ExportSession(new ExportScanner(pack, compileActions(pack, { email: 'mask' }), undefined), { format: 'csv', maxTokenChars, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const b = Buffer.from(text)
  let out = ''
  for (let i = 0; i < b.length; i += chunk) out += (await s.write(b.subarray(i, i + chunk)))?.toString() ?? ''
  out += (await s.end())?.toString() ?? ''
  return { out, message: s.stop?.message }
}

describe('why a CSV export is refused (sweep 31f)', () => {
  it('a row over maxValueBytes names the limit and the line; the rows before it go out', async () => {
    const text = `id,email\n1,jane@corp.com\n2,${'x'.repeat(300)}\n3,joe@corp.com\n`
    for (const chunk of [1, 9, 1 << 20]) {
      const r = await stopOf(text, chunk, 200)
      expect(r.message).toBe("the export is not valid CSV and cannot be inspected (a row longer than 200 bytes at line 3, the dlp filter's maxValueBytes)")
      expect(r.out).toBe('id,email\n1,j***@corp.com\n')
    }
  })

  it('a quoted field never closed says so, with its line; no input byte is quoted', async () => {
    const text = 'id,note\n1,ok\n2,"jane@corp.com wrote\nand never closed\n'
    for (const chunk of [1, 5, 1 << 20]) {
      const r = await stopOf(text, chunk, 1 << 20)
      expect(r.message).toBe('the export is not valid CSV and cannot be inspected (a quoted field still open when the export ends at line 4)')
      expect(r.message).not.toContain('jane')
    }
  })
})

describe('the 403 of a CSV export with a long row (sweep 31f)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-31f-csv-'))
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/csv' })
      res.end(`id,note\n1,${'n'.repeat(5000)}\n`)
    })
    proxy = await startTestProxy({
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { email: 'mask' } }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', maxValueBytes: '4kib', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('tells the client and the audit line which limit', async () => {
    const r = await request(`${proxy.url}/export/notes.csv`)
    const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(r.statusCode).toBe(403)
    expect(body.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
    expect(body.errors[0]!.message).toContain("a row longer than 4096 bytes at line 2, the dlp filter's maxValueBytes")
    await expect.poll(() => proxy.logs.find('dlp export').length, { timeout: 5_000 }).toBe(1)
    expect(proxy.logs.find('dlp export')[0]).toMatchObject({ outcome: 'malformed', stop: { kind: 'malformed', message: expect.stringContaining('maxValueBytes') } })
  })
})
