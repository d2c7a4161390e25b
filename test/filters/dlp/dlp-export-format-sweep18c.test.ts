// DLP sweep 18c: what an export's client sees beside the masked values — the CSV byte-order
// mark, a HEAD answer's length and encoding, and an `x-dlp` head the upstream sent itself.
// Real proxy (worker threads), a real node:http backend and undici clients on 127.0.0.1.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const rec = (i: number) => `{"id":${i},"email":"person${i}@example.com"}\n`
const SMALL = rec(1) + rec(2)
const GZ_JSON = gzipSync(JSON.stringify({ rows: [{ email: 'jane@corp.com' }] }))
const BOM_CSV = '\ufeffname,email\r\nJörg Müller,jorg@example.com\r\nZoë,"zoe@example.com"\r\n'
// A note of 2,000 characters under a route whose maxValueBytes is 1 KiB, and a long number.
const LONG = JSON.stringify({ id: 1, note: 'n'.repeat(2000), email: 'jane@corp.com' })
const LONG_NUMBER = `{"id":1,"n":${'7'.repeat(2000)},"email":"jane@corp.com"}`
const SPOOF = 'preset=none; masked=0; tokenized=0; hashed=0; redacted=0; rules=fake@0'

describe('dlp export heads and formats (sweep 18c)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      const head = req.method === 'HEAD'
      switch (req.url) {
        case '/export/small.ndjson':
          res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-length': String(Buffer.byteLength(SMALL)) })
          return res.end(head ? undefined : SMALL)
        case '/export/gz.json':
          res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(GZ_JSON.length) })
          return res.end(head ? undefined : GZ_JSON)
        case '/export/bom.csv':
          res.writeHead(200, { 'content-type': 'text/csv; charset=utf-8' })
          // byte by byte at the start: the mark split across chunks
          for (const b of Buffer.from(BOM_CSV).subarray(0, 4)) res.write(Buffer.from([b]))
          return res.end(Buffer.from(BOM_CSV).subarray(4))
        case '/export/spoof.ndjson': {
          // past the 64 KiB lookahead: streamed, the counts come as a trailer
          res.writeHead(200, { 'content-type': 'application/x-ndjson', 'x-dlp': SPOOF })
          let s = ''
          for (let i = 0; i < 2000; i++) s += rec(i)
          return res.end(s)
        }
        case '/long/whole.json':
        case '/long/number-whole.json':
          res.writeHead(200, { 'content-type': 'application/json' })
          return res.end(req.url.includes('number') ? LONG_NUMBER : LONG)
        case '/long/split.json':
        case '/long/number-split.json': {
          // the same bytes, cut in the middle of the long value, the rest a moment later
          const body = req.url.includes('number') ? LONG_NUMBER : LONG
          res.writeHead(200, { 'content-type': 'application/json' })
          res.write(body.slice(0, 1500))
          return void setTimeout(() => res.end(body.slice(1500)), 100)
        }
      }
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"error":"not found"}')
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep18c-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, policy: { allowedPresets: ['tokenize_strict'] } },
      routes: [
        {
          name: 'long',
          match: { pathPrefix: '/long/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'tokenize_strict', maxValueBytes: 1024, exports: { paths: [{ prefix: '/long/' }] } }],
        },
        {
          name: 'api',
          match: { pathPrefix: '/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('a CSV export that starts with a UTF-8 byte-order mark keeps it (Excel needs it to read UTF-8)', async () => {
    const r = await request(`${proxy.url}/export/bom.csv`)
    const body = Buffer.from(await r.body.arrayBuffer())
    expect(r.statusCode).toBe(200)
    expect([...body.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf])
    const text = body.toString('utf8')
    expect(text.startsWith('\ufeffname,email\r\nJörg Müller,tok_email_')).toBe(true)
    expect(text).not.toContain('jorg@example.com')
    expect(text).not.toContain('zoe@example.com')
    expect(text.split('\r\n')).toHaveLength(4) // three rows, CRLF kept, the last one ending the file
    // and only one mark (not doubled by the rewrite)
    expect(text.lastIndexOf('\ufeff')).toBe(0)
  })

  it.each([
    ['/export/small.ndjson', 'identity'],
    ['/export/gz.json', 'gzip'],
  ])('HEAD on an export (%s, %s) does not announce the upstream\'s unmasked length or an encoding the GET does not have', async (path) => {
    const g = await request(`${proxy.url}${path}`)
    const getBody = Buffer.from(await g.body.arrayBuffer())
    expect(g.statusCode).toBe(200)
    expect(g.headers['content-encoding']).toBeUndefined() // served decoded
    const h = await request(`${proxy.url}${path}`, { method: 'HEAD' })
    await h.body.text()
    expect(h.statusCode).toBe(200)
    expect(h.headers['content-encoding']).toBe(g.headers['content-encoding'])
    // absent, or what the GET delivers; never the upstream's byte count of the unmasked export
    const len = h.headers['content-length']
    if (len !== undefined) expect(Number(len)).toBe(getBody.length)
  })

  it('a streamed export does not pass on an x-dlp header the upstream sent; the trailer has the real counts', async () => {
    const r = await request(`${proxy.url}/export/spoof.ndjson`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain('person1@example.com')
    expect(r.headers['x-dlp']).toBeUndefined()
    expect(r.trailers['x-dlp']).toBe('preset=tokenize_strict; masked=0; tokenized=2000; hashed=0; redacted=0; rules=igw-dlp-core@1.2.12')
  })

  it.each([['string', ''], ['number', 'number-']])('a %s longer than maxValueBytes is refused however the transfer splits it (it passed when it came in one piece)', async (_what, prefix) => {
    const answers: { status: number; text: string }[] = []
    for (const path of [`/long/${prefix}whole.json`, `/long/${prefix}split.json`]) {
      const r = await request(`${proxy.url}${path}`)
      answers.push({ status: r.statusCode, text: await r.body.text() })
    }
    for (const a of answers) {
      expect(a.status).toBe(403)
      expect(a.text).toContain('DLP_BLOCKED')
      expect(a.text).toContain('longer than 1024 characters')
      expect(a.text).not.toContain('jane@corp.com')
    }
  })
})
