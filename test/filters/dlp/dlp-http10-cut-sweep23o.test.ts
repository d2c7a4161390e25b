// An HTTP/1.0 client (nginx's default `proxy_http_version 1.0` in front of igw, old tools) gets a
// streamed export without chunked framing: its end is the connection's close. Every export
// streamed past the lookahead was a 500 to it ("the gateway could not send this response head":
// node:http refuses the announced `Trailer: x-dlp` without chunked encoding). And a CSV export
// blocked mid-stream, cut by closing the connection the normal way, would read to such a client
// as a complete file. Now no trailer is announced to it, and a cut resets the connection (a TCP
// RST: a read error, as curl and nginx report it), so a partial file cannot pass for the whole.
import { mkdtempSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

/** One HTTP/1.0 exchange on a raw socket: what arrived, and how the connection ended. */
function http10(port: number, path: string, reqId: string): Promise<{ text: string; ending: 'fin' | 'reset' }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const sock = connect(port, '127.0.0.1', () => sock.write(`GET ${path} HTTP/1.0\r\nHost: x\r\nx-request-id: ${reqId}\r\n\r\n`))
    sock.on('data', (c: Buffer) => chunks.push(c))
    sock.on('end', () => resolve({ text: Buffer.concat(chunks).toString(), ending: 'fin' }))
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') resolve({ text: Buffer.concat(chunks).toString(), ending: 'reset' })
      else reject(err)
    })
    sock.setTimeout(10_000, () => sock.destroy(new Error('timeout')))
  })
}

describe('a streamed export cut mid-stream, to an HTTP/1.0 client', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'text/csv' })
      res.write('id,email\n')
      // Well past the lookahead, so the head is out before the end.
      for (let i = 1; i <= 3999; i++) res.write(`${i},user${i}@example.com\n`)
      res.end(req.url === '/export/clean.csv' ? '4000,user4000@example.com\n' : '4000,ssn 123-45-6789\n')
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-h10-')), 'keyring.json')
    proxy = await startTestProxy({
      dlp: { keyring: { file: keyring }, policy: { allowedPresets: ['tokenize_strict'] } },
      routes: [{ name: 'exp', upstream: raw.url, type: 'http', filters: [{ name: 'request-id' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('a clean export streams in full, ended by the close', async () => {
    const r = await http10(proxy.port, '/export/clean.csv', 'h10-clean')
    expect(r.text).toMatch(/^HTTP\/1\.1 200/)
    expect(r.text).not.toMatch(/^trailer:/im)
    expect(r.ending).toBe('fin')
    expect(r.text).toMatch(/\n4000,tok_email_[\w-]+\n$/)
    expect(r.text).not.toContain('@example.com')
  })

  it('a block resets the connection (no clean end); still logged as a DLP cut', async () => {
    const r = await http10(proxy.port, '/export/users.csv', 'h10-block')
    expect(r.text).toMatch(/^HTTP\/1\.1 200/)
    expect(r.text).not.toMatch(/content-length/i)
    expect(r.text).not.toContain('123-45-6789')
    expect(r.ending).toBe('reset')
    await waitUntil(() => proxy.logs.lines.some((l) => l.msg === 'access' && l.reqId === 'h10-block'))
    expect(proxy.logs.lines.find((l) => l.msg === 'access' && l.reqId === 'h10-block')!.code).toBe('DLP_BLOCKED')
  })

})
