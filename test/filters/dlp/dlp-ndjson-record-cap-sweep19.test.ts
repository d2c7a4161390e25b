// DLP: an NDJSON record is held whole until its line ends (a block must never leave half a
// record), and there was no bound on it: one endless line from the upstream — a 2 GB JSON array
// served as application/x-ndjson, a stuck producer — was buffered in the worker until it ended or
// the worker ran out of memory. A record longer than `maxJsonBytes` (what a JSON response read
// whole may hold) now stops the export as malformed (fail closed), wherever the transfer splits it;
// the records before it are delivered. Real proxy, node:http backend, undici client.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { JsonRewriter, JsonSyntaxError } from '../../../filters/dlp/json-rewriter.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const rec = (i: number) => `{"id":${i},"note":"fine"}\n`

describe('JsonRewriter maxRecordChars (multi)', () => {
  const run = (chunks: string[], max: number) => {
    const rw = new JsonRewriter({ visit: () => undefined }, { multi: true, hintOf: () => 0, maxTokenChars: 1e6, maxRecordChars: max, checkpoint: () => true })
    let out = ''
    try {
      for (const c of chunks) {
        rw.write(c)
        out += rw.take()
      }
      rw.end()
      out += rw.take()
      return { out, err: undefined }
    } catch (e) {
      return { out: out + rw.take(), err: e as Error }
    }
  }
  const long = `{"a":[${Array.from({ length: 200 }, (_, i) => i).join(',')}]}\n` // 700+ characters
  const text = rec(1) + long + rec(2)

  it('a record over the bound fails however the input is split; the records before it are output', () => {
    for (let at = 1; at < text.length; at += 7) {
      const r = run([text.slice(0, at), text.slice(at)], 300)
      expect(r.err).toBeInstanceOf(JsonSyntaxError)
      expect(r.err!.message).toMatch(/a record longer than 300 characters/)
      expect(r.out).not.toContain('"a":[')
    }
    expect(run([text], 300).out).toBe(rec(1).trimEnd()) // the newline after it belongs to the next record's leading blanks
  })

  it('records within the bound pass, many of them in one chunk or one character at a time', () => {
    const many = Array.from({ length: 50 }, (_, i) => rec(i)).join('')
    expect(run([many], 40).out).toBe(many)
    expect(run([...many], 40).out).toBe(many)
    expect(run([text], 10_000).out).toBe(text)
  })
})

describe('an endless NDJSON line through the proxy', () => {
  let raw: RawBackend
  let proxy: TestProxy
  let upstreamClosed = false
  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      if (req.url === '/export/ok.ndjson') return res.end(rec(1) + rec(2))
      // Three whole records, then one record that never ends: 64 KiB of array items every 5 ms.
      res.write(rec(1) + rec(2) + rec(3) + '{"items":[')
      const piece = Buffer.from('1234567,'.repeat(8192))
      const t = setInterval(() => res.write(piece), 5)
      res.on('close', () => {
        clearInterval(t)
        upstreamClosed = true
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-ndjson-cap-')), 'ring.json') } },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'dlp', preset: 'tokenize_strict', maxJsonBytes: '1mib', lookaheadBytes: '1kib', exports: { paths: [{ prefix: '/export/' }] } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('the records before it are delivered, the export stops as malformed, the upstream is let go', async () => {
    const r = await request(`${proxy.url}/export/endless.ndjson`)
    expect(r.statusCode).toBe(200) // the head went out after the lookahead
    const body = await r.body.text().catch((e: Error) => `(cut: ${e.message})`)
    expect(body.startsWith(rec(1) + rec(2) + rec(3))).toBe(true)
    expect(body).not.toContain('"items"')
    expect(body.length).toBeLessThan(64 * 1024)
    await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_dlp_exports_total', 'outcome="malformed"'), { timeout: 10_000 }).toBe(1)
    await expect.poll(() => upstreamClosed, { timeout: 10_000 }).toBe(true)
    const ok = await request(`${proxy.url}/export/ok.ndjson`)
    expect(await ok.body.text()).toBe(rec(1) + rec(2))
  }, 60_000)
})
