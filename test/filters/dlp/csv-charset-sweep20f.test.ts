// DLP sweep 20f: an export in a single-byte charset DLP reads (windows-1252, ISO-8859-x, as
// Excel and older Java or PHP stacks write CSV) was decoded as UTF-8: every accented letter
// became U+FFFD and left as EF BF BD under the upstream's unchanged charset ("Jörg" reached the
// client as "J�rg", for good). Now the export comes back in its own charset, byte for byte
// except the values DLP rewrote. Real proxy (worker thread), a node:http backend, undici.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startExportMaskingProxy, type TestProxy } from '../../helpers/proxy.ts'

// "Jörg Müller" in Latin-1, a euro sign (0x80 in windows-1252), "Łódź" in ISO-8859-2 (0xA3 0xF3 0x64 0xBC).
const LATIN1_CSV = Buffer.concat([Buffer.from('name,email,note\r\nJ'), Buffer.from([0xf6]), Buffer.from('rg M'), Buffer.from([0xfc]), Buffer.from('ller,jorg@example.com,'), Buffer.from([0x80]), Buffer.from('5\r\n')])
const LATIN2_CSV = Buffer.concat([Buffer.from('city,email\n'), Buffer.from([0xa3, 0xf3, 0x64, 0xbc]), Buffer.from(',anna@example.pl\n')])
const LATIN1_JSON = Buffer.concat([Buffer.from('{"name":"J'), Buffer.from([0xf6]), Buffer.from('rg","email":"jorg@example.com"}')])

describe('dlp: exports in a single-byte charset (sweep 20f)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const [body, type] =
        req.url === '/export/latin1.csv'
          ? [LATIN1_CSV, 'text/csv; charset=ISO-8859-1']
          : req.url === '/export/cp1252.csv'
            ? [LATIN1_CSV, 'text/csv; charset="cp-1252"']
            : req.url === '/export/latin2.csv'
              ? [LATIN2_CSV, 'text/csv; charset=iso-8859-2']
              : req.url === '/export/latin1.json'
                ? [LATIN1_JSON, 'application/json; charset=latin1']
                : [Buffer.from(''), 'text/plain']
      res.writeHead(200, { 'content-type': type })
      // one byte at a time around the accented letters: chunk boundaries inside the text
      res.write(body.subarray(0, 12))
      res.end(body.subarray(12))
    })
    proxy = await startExportMaskingProxy(raw.url)
  })

  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  async function get(path: string): Promise<{ status: number; type: unknown; body: Buffer }> {
    const r = await request(`${proxy.url}${path}`)
    return { status: r.statusCode, type: r.headers['content-type'], body: Buffer.from(await r.body.arrayBuffer()) }
  }

  /** The input with one value replaced, as bytes. */
  const replaced = (input: Buffer, from: string, to: string) => {
    const at = input.indexOf(from)
    return Buffer.concat([input.subarray(0, at), Buffer.from(to), input.subarray(at + from.length)])
  }

  it.each([
    ['/export/latin1.csv', 'text/csv; charset=ISO-8859-1'],
    ['/export/cp1252.csv', 'text/csv; charset="cp-1252"'],
  ])('%s keeps its bytes (ö, ü, €) and its charset; only the address is masked', async (path, type) => {
    const r = await get(path)
    expect(r.status).toBe(200)
    expect(r.type).toBe(type)
    expect(r.body.includes(Buffer.from([0xef, 0xbf, 0xbd]))).toBe(false)
    expect(r.body.equals(replaced(LATIN1_CSV, 'jorg@example.com', 'j***@example.com'))).toBe(true)
    expect(new TextDecoder('windows-1252').decode(r.body)).toContain('Jörg Müller,j***@example.com,€5')
  })

  it('ISO-8859-2 keeps its own letters (Łódź)', async () => {
    const r = await get('/export/latin2.csv')
    expect(r.status).toBe(200)
    expect(r.body.equals(replaced(LATIN2_CSV, 'anna@example.pl', 'a***@example.pl'))).toBe(true)
    expect(new TextDecoder('iso-8859-2').decode(r.body)).toContain('Łódź,a***@example.pl')
  })

  it('a JSON export declared latin1 keeps its letters too', async () => {
    const r = await get('/export/latin1.json')
    expect(r.status).toBe(200)
    expect(r.body.equals(replaced(LATIN1_JSON, 'jorg@example.com', 'j***@example.com'))).toBe(true)
  })
})
