// DLP sweep 18d: exports an upstream sends compressed although the gateway asked for identity —
// zstd (Node 24 decodes it) and `Content-Encoding: deflate` holding raw deflate (no zlib header,
// as old IIS and some Java/PHP stacks send it; browsers and curl read both). Both are decoded
// and vetted; a body that decodes as neither is still refused before the head.
// Real proxy (worker threads), a real node:http backend and undici clients on 127.0.0.1.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deflateRawSync, deflateSync, zstdCompressSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

/** A proxy whose one route applies DLP `preset` to exports under /export/ of `upstream`. */
function exportProxy(upstream: string, preset: string, presets?: Record<string, Record<string, string>>): Promise<TestProxy> {
  const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep18d-')), 'keyring.json')
  return startTestProxy({
    mode: 'ingress',
    dlp: { keyring: { file: keyring }, ...(presets ? { presets } : {}), policy: { allowedPresets: [preset] } } as never,
    routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'dlp', preset, exports: { paths: [{ prefix: '/export/' }] } }] as never }],
  })
}

const rec = (i: number) => `{"id":${i},"email":"person${i}@example.com"}\n`
let NDJSON = ''
for (let i = 0; i < 3000; i++) NDJSON += rec(i) // past the 64 KiB lookahead: streamed
const JSON_BODY = JSON.stringify({ rows: [{ email: 'jane@corp.com' }] })
const SSN_JSON = JSON.stringify({ rows: [{ ssn: '123-45-6789' }] })

const BODIES: Record<string, [string, string, Buffer]> = {
  '/export/zstd.json': ['application/json', 'zstd', zstdCompressSync(JSON_BODY)],
  '/export/zstd.ndjson': ['application/x-ndjson', 'zstd', zstdCompressSync(NDJSON)],
  '/export/zstd-ssn.json': ['application/json', 'zstd', zstdCompressSync(SSN_JSON)],
  '/export/raw.json': ['application/json', 'deflate', deflateRawSync(JSON_BODY)],
  '/export/raw.ndjson': ['application/x-ndjson', 'deflate', deflateRawSync(NDJSON)],
  '/export/raw-ssn.json': ['application/json', 'deflate', deflateRawSync(SSN_JSON)],
  '/export/zlib.json': ['application/json', 'deflate', deflateSync(JSON_BODY)],
  '/export/junk.json': ['application/json', 'deflate', Buffer.from('this is not deflate at all, neither zlib nor raw')],
  '/export/junk-zstd.json': ['application/json', 'zstd', Buffer.from('not zstd either')],
  '/export/empty.json': ['application/json', 'deflate', Buffer.alloc(0)],
  '/export/raw-late-ssn.ndjson': ['application/x-ndjson', 'deflate', deflateRawSync(NDJSON + '{"id":3000,"ssn":"123-45-6789"}\n' + rec(3001))],
}

// Free text in a CSV: no column name tells the type, only the rules over the cell's text see it.
const CSV = 'name,contact,note\r\nJane,jane@corp.com,id 123-45-6789 card 4111 1111 1111 1111\r\n'
const CSV_OK = 'name,contact\r\nJane,jane@corp.com\r\n'
const PLAIN: Record<string, [string, Buffer]> = {
  '/export/utf16-charset.csv': ['text/csv; charset=utf-16le', Buffer.from('\ufeff' + CSV, 'utf16le')],
  '/export/utf16-bom.csv': ['text/csv', Buffer.from('\ufeff' + CSV, 'utf16le')],
  '/export/utf16-nobom.csv': ['text/csv', Buffer.from(CSV, 'utf16le')],
  '/export/ebcdic.csv': ['text/csv; charset=IBM037', Buffer.from(CSV_OK)], // the bytes do not matter here
  '/export/utf8-quoted.csv': ['text/csv; header=present; charset="UTF-8"', Buffer.from(CSV_OK)],
  '/export/cp1252.csv': ['text/csv; charset=windows-1252', Buffer.from(CSV_OK)],
}

describe('dlp exports in zstd and raw deflate (sweep 18d)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      const b = BODIES[req.url ?? '']
      if (b === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' })
        return res.end('{"error":"not found"}')
      }
      const [type, coding, body] = b
      res.writeHead(200, { 'content-type': type, 'content-encoding': coding, 'content-length': String(body.length) })
      if (req.method === 'HEAD') return res.end()
      // in small pieces: the deflate format is told from the first two bytes, split here
      for (let i = 0; i < Math.min(body.length, 3); i++) res.write(body.subarray(i, i + 1))
      res.end(body.subarray(3))
    })
    proxy = await exportProxy(raw.url, 'tokenize_strict')
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const get = async (path: string, method: 'GET' | 'HEAD' = 'GET') => {
    const r = await request(`${proxy.url}${path}`, { method })
    const text = await r.body.text()
    return { status: r.statusCode, headers: r.headers, text }
  }

  it.each([
    ['zstd', '/export/zstd.json'],
    ['raw deflate', '/export/raw.json'],
    ['zlib deflate', '/export/zlib.json'],
  ])('a %s JSON export is decoded, its e-mail tokenized, and served without a Content-Encoding', async (_name, path) => {
    const r = await get(path)
    expect(r.status).toBe(200)
    expect(r.headers['content-encoding']).toBeUndefined()
    const body = JSON.parse(r.text) as { rows: { email: string }[] }
    expect(body.rows[0]!.email).toMatch(/^tok_email_k1_/)
    expect(r.text).not.toContain('jane@corp.com')
    expect(String(r.headers['x-dlp'])).toContain('tokenized=1')
  })

  it.each([
    ['zstd', '/export/zstd.ndjson'],
    ['raw deflate', '/export/raw.ndjson'],
  ])('a %s NDJSON export past the lookahead streams decoded, every record tokenized', async (_name, path) => {
    const r = await get(path)
    expect(r.status).toBe(200)
    const lines = r.text.split('\n').filter((l) => l !== '')
    expect(lines).toHaveLength(3000)
    expect(r.text).not.toContain('@example.com')
    expect((JSON.parse(lines[2999]!) as { id: number; email: string })).toMatchObject({ id: 2999, email: expect.stringMatching(/^tok_email_/) })
  })

  it.each([
    ['zstd', '/export/zstd-ssn.json'],
    ['raw deflate', '/export/raw-ssn.json'],
  ])('a %s export holding an SSN the preset blocks is refused (it was refused as uninspectable/undecodable before, now for the SSN)', async (_name, path) => {
    const r = await get(path)
    expect(r.status).toBe(403)
    const body = JSON.parse(r.text) as { errors: { extensions: { code: string; type?: string } }[] }
    expect(body.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', type: 'ssn_us' })
  })

  it.each([
    ['deflate', '/export/junk.json'],
    ['zstd', '/export/junk-zstd.json'],
    ['deflate', '/export/empty.json'],
  ])('a body that does not decode as %s is still refused before the head (fail closed)', async (coding, path) => {
    const r = await get(path)
    expect(r.status).toBe(403)
    const body = JSON.parse(r.text) as { errors: { message: string; extensions: { code: string } }[] }
    expect(body.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
    expect(body.errors[0]!.message).toContain(`${coding} content encoding does not decode`)
  })

  it('a HEAD of a zstd export answers like the GET: no Content-Encoding, no Content-Length', async () => {
    const r = await get('/export/zstd.json', 'HEAD')
    expect(r.status).toBe(200)
    expect(r.headers['content-encoding']).toBeUndefined()
    expect(r.headers['content-length']).toBeUndefined()
  })

  it('a raw deflate NDJSON export with an SSN past the lookahead ends with the error record after the records before it', async () => {
    const r = await get('/export/raw-late-ssn.ndjson')
    expect(r.status).toBe(200)
    const lines = r.text.split('\n').filter((l) => l !== '')
    expect(lines).toHaveLength(3001)
    expect(r.text).not.toContain('123-45-6789')
    expect(JSON.parse(lines[3000]!)).toMatchObject({ errors: [{ extensions: { code: 'DLP_BLOCKED', type: 'ssn_us' } }] })
  })
})

describe('dlp CSV exports in charsets the rules cannot read (sweep 18d)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      const p = PLAIN[req.url ?? '']
      if (p === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' })
        return res.end('{"error":"not found"}')
      }
      res.writeHead(200, { 'content-type': p[0] })
      res.end(p[1])
    })
    proxy = await exportProxy(raw.url, 'all', { all: { email: 'tokenize', ssn_us: 'tokenize', credit_card: 'tokenize' } })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const get = async (path: string) => {
    const r = await request(`${proxy.url}${path}`)
    const bytes = Buffer.from(await r.body.arrayBuffer())
    return { status: r.statusCode, headers: r.headers, bytes, text: bytes.toString('utf8') }
  }

  it.each([
    ['declared charset=utf-16le', '/export/utf16-charset.csv', 'content type "text/csv; charset=utf-16le", which DLP cannot inspect'],
    ['undeclared, with a UTF-16 BOM', '/export/utf16-bom.csv', 'NUL bytes'],
    ['undeclared, without a BOM', '/export/utf16-nobom.csv', 'NUL bytes'],
    ['declared EBCDIC', '/export/ebcdic.csv', 'content type "text/csv; charset=IBM037"'],
  ])('a UTF-16/EBCDIC CSV export (%s) is refused, not served with its SSN, card and e-mail readable', async (_name, path, message) => {
    const r = await get(path)
    expect(r.status).toBe(403)
    expect(r.bytes.toString('utf16le')).not.toContain('123-45-6789')
    expect(r.bytes.toString('utf16le')).not.toContain('jane@corp.com')
    const body = JSON.parse(r.text) as { errors: { message: string; extensions: { code: string } }[] }
    expect(body.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
    expect(body.errors[0]!.message).toContain(message)
  })

  it.each([
    ['charset="UTF-8" quoted, with header=present', '/export/utf8-quoted.csv'],
    ['charset=windows-1252', '/export/cp1252.csv'],
  ])('a CSV export with %s is read and tokenized as before', async (_name, path) => {
    const r = await get(path)
    expect(r.status).toBe(200)
    expect(r.text).not.toContain('jane@corp.com')
    expect(r.text).toMatch(/^name,contact\r\nJane,tok_email_k1_/)
  })
})
