// DLP sweep 17: application/json-seq exports (RFC 7464: an RS byte, 0x1E, before each record).
// The filter reads the media type as NDJSON, but the lexer refused the RS as "not a JSON value":
// every json-seq export was refused with 403 DLP_BLOCKED (malformed) before its head. RS between
// records is now copied like whitespace, and a block found mid-stream ends the sequence with an
// error record that starts with RS like every other record.
// Real proxy (worker thread), real node:http backend, undici client, 127.0.0.1 only.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const RS = '\x1e'

describe('application/json-seq exports', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const small = [
    { id: 1, email: 'alice@example.com', phone: '+12025550123' },
    { id: 2, note: 'write to bob@example.org' },
  ]
  // ~2,000 clean records (well past the 1 KiB lookahead), then one with an SSN the preset blocks
  const big = Array.from({ length: 2000 }, (_, i) => ({ id: i + 1, email: `user${i}@example.com` }))
  big.push({ id: 2001, ssn: '123-45-6789' } as never)
  const seq = (records: object[]) => records.map((r) => `${RS}${JSON.stringify(r)}\n`).join('')

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json-seq' })
      if (req.url!.includes('big')) {
        // in pieces, so the block is found after the head went out
        const body = seq(big)
        let at = 0
        const step = () => {
          if (at >= body.length) return res.end()
          res.write(body.slice(at, at + 8192))
          at += 8192
          setImmediate(step)
        }
        step()
      } else res.end(seq(small))
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-seq17-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, presets: { m: { email: 'mask', phone_e164: 'mask', ssn_us: 'block' } }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', lookaheadBytes: '1kib', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('is inspected and served masked, each record still starting with RS (was: 403 malformed)', async () => {
    const r = await request(`${proxy.url}/export/people.json-seq`)
    const text = await r.body.text()
    expect({ status: r.statusCode, text }).toMatchObject({ status: 200 })
    expect(r.headers['content-type']).toBe('application/json-seq')
    expect(text).toBe(`${RS}{"id":1,"email":"a***@example.com","phone":"+1*******0123"}\n${RS}{"id":2,"note":"write to b***@example.org"}\n`)
    expect(r.trailers['x-dlp'] ?? r.headers['x-dlp']).toMatch(/^preset=m; masked=3;/)
  })

  it('a block after the head: the records before it, then an RS-prefixed error record, a clean end', async () => {
    const r = await request(`${proxy.url}/export/big.json-seq`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain('123-45-6789')
    expect(text.startsWith(RS)).toBe(true)
    // a json-seq reader splits on RS; every text parses
    const texts = text.split(RS).slice(1)
    expect(texts.length).toBe(2001)
    const parsed = texts.map((t) => JSON.parse(t) as Record<string, unknown>)
    expect(parsed[1999]).toEqual({ id: 2000, email: 'u***@example.com' })
    const err = parsed[2000] as { errors: { extensions: Record<string, unknown> }[] }
    expect(err.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', type: 'ssn_us', count: 1, records: 2000 })
    expect(r.trailers['x-dlp']).toMatch(/blocked=ssn_us:1$/)
  })
})
