// DLP sweep 25b: on a block (or a policy denial) the export's `records` counted the record that
// tripped it, which is never sent: the audit line said N+1 while the NDJSON error record (which
// subtracted one itself) said N. Now `records` is the records delivered — those that passed
// inspection — everywhere. Driven through ExportSession for each format, then through a real
// proxy (worker thread), a real backend and an undici client on 127.0.0.1.
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

async function exportOf(format: ExportFormat, text: string, deny: boolean): Promise<{ out: string; records: number; kind: string | undefined }> {
  // deny: ssn_us left readable, the policy denies it when it first shows up; else blocked
  const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask', ssn_us: deny ? 'mask' : 'block' }), tokenizer)
  const judge = deny ? () => ({ allow: false, reason: 'no SSNs' }) : undefined
  const session = new ExportSession(scanner, { format, maxTokenChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge })
  let out = ''
  out += (await session.write(Buffer.from(text)))?.toString() ?? ''
  out += (await session.end())?.toString() ?? ''
  return { out, records: session.records, kind: session.stop?.kind }
}

describe('records: the records delivered (sweep 25b)', () => {
  const ndjson = `{"id":1,"email":"a@corp.com"}\n{"id":2,"email":"b@corp.com"}\n{"id":3,"ssn":"123-45-6789"}\n{"id":4}\n`
  const csv = 'id,ssn\n1,none\n2,none\n3,123-45-6789\n4,none\n'

  for (const deny of [false, true]) {
    it(`NDJSON and CSV, ${deny ? 'policy denial' : 'block'}: the stopping record is not counted`, async () => {
      const n = await exportOf('ndjson', ndjson, deny)
      expect(n.kind).toBe(deny ? 'policy' : 'block')
      expect(n.out.split('\n').filter((l) => l !== '')).toHaveLength(2)
      expect(n.records).toBe(2)
      const c = await exportOf('csv', csv, deny)
      expect(c.kind).toBe(deny ? 'policy' : 'block')
      // the header row and two data rows went out; records counts the two data rows (sweep 26j)
      expect(c.out.split('\n').filter((l) => l !== '')).toHaveLength(3)
      expect(c.records).toBe(2)
    })
  }

  it('JSON: a blocked document delivers no record; an allowed one, one', async () => {
    const blocked = await exportOf('json', '{"items":[{"ssn":"123-45-6789"}]}', false)
    expect([blocked.kind, blocked.out, blocked.records]).toEqual(['block', '', 0])
    const allowed = await exportOf('json', '{"items":[{"email":"a@corp.com"}]}', false)
    expect([allowed.kind, allowed.records]).toEqual([undefined, 1])
  })

  it('a clean export counts every record', async () => {
    expect((await exportOf('ndjson', ndjson.split('\n').filter((l) => !l.includes('ssn')).join('\n'), false)).records).toBe(3)
  })
})

describe('the audit line and the NDJSON error record agree (sweep 25b)', () => {
  const CLEAN = 300
  let raw: RawBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-rec25b-'))
  const lines = (n: number) => Array.from({ length: n }, (_, i) => `${JSON.stringify({ id: i + 1, email: `user${i}@example.com` })}\n`).join('')
  const bodies: Record<string, string> = {
    // past the 1 KiB lookahead: stopped mid-stream
    '/export/late': `${lines(CLEAN)}{"id":0,"ssn":"123-45-6789"}\n{"id":-1}\n`,
    // within the lookahead: refused before the head
    '/export/early': `${lines(3)}{"id":0,"ssn":"123-45-6789"}\n${lines(CLEAN)}`,
  }
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      const b = bodies[req.url!]!
      let at = 0
      // pieces of 4 KiB: the first one is past the lookahead, the head goes out after it
      const step = () => {
        if (at >= b.length) return res.end()
        res.write(b.slice(at, at + 4096))
        at += 4096
        setImmediate(step)
      }
      step()
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { email: 'mask', ssn_us: 'block' } }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', lookaheadBytes: '1kib', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const audit = async (phase: string) => {
    const line = () => proxy.logs.find('dlp export').findLast((l) => l.phase === phase)
    await expect.poll(line, { timeout: 5_000 }).toBeDefined()
    return line() as { outcome: string; records: number }
  }

  it('mid-stream: both say the records the client got', async () => {
    const r = await request(`${proxy.url}/export/late`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    const got = text.split('\n').filter((l) => l !== '')
    const err = JSON.parse(got.at(-1)!) as { errors: { extensions: { code: string; records: number } }[] }
    expect(err.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', records: CLEAN })
    expect(got.length - 1).toBe(CLEAN)
    expect(await audit('mid-stream')).toMatchObject({ outcome: 'blocked', records: CLEAN })
  })

  it('before the head: the records that passed before the blocked one', async () => {
    const r = await request(`${proxy.url}/export/early`)
    await r.body.text()
    expect(r.statusCode).toBe(403)
    expect(await audit('before-head')).toMatchObject({ outcome: 'blocked', records: 3 })
  })
})
