// The DLP bench backend: GET /export.ndjson?mb=N streams N MiB of NDJSON entity records (unique
// e-mails, E.164 phones from a pool of 9000, order-number notes; no SSNs, so tokenize_strict's
// block action does not end the export), in 1 MiB blocks.
//
// It shares two cores with the proxy being measured, so it must cost little: building each
// block from strings took ~2 ms of CPU per MiB, as much as a tenth of what DLP costs. A block
// is rendered from strings once per id width; the following blocks of the same width are a copy
// of it with the digits of each record patched in (the same bytes the string code would make).
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

const BLOCK = 1024 * 1024

function phoneSuffix(i: number): number {
  return 1000 + (((i * 7919 + 104729) % 1_000_000) % 9000)
}

function record(i: number): string {
  return `{"id":"${i}","name":"Entity ${i}","email":"user${i}@example.com","phone":"+1202555${phoneSuffix(i)}","note":"order ${100000 + i} shipped","updatedAt":"2026-01-01T00:00:00.000Z"}\n`
}

/** A rendered block and where each record's digits are, to patch the next blocks of the same widths. */
interface Template {
  buf: Buffer
  records: number
  first: number
  /** Per record: offsets of the id (3 places), the order number and the phone suffix. */
  fields: Int32Array
  idWidth: number
  orderWidth: number
}

function render(start: number): Template {
  let s = ''
  let i = start
  const offsets: number[] = []
  while (s.length < BLOCK) {
    const r = record(i)
    const base = s.length
    offsets.push(base + r.indexOf(`"id":"`) + 6, base + r.indexOf('Entity ') + 7, base + r.indexOf('"user') + 5, base + r.indexOf('order ') + 6, base + r.indexOf('+1202555') + 8)
    s += r
    i++
  }
  return { buf: Buffer.from(s, 'latin1'), records: i - start, first: start, fields: Int32Array.from(offsets), idWidth: String(start).length, orderWidth: String(100000 + start).length }
}

function writeDigits(buf: Buffer, at: number, n: number, width: number): void {
  for (let k = width - 1; k >= 0; k--) {
    buf[at + k] = 48 + (n % 10)
    n = Math.floor(n / 10)
  }
}

let template: Template | undefined

/** The block that starts with record `start`: byte for byte what record() strings would make. */
function block(start: number): { buf: Buffer; records: number } {
  const t = template
  const fits = t !== undefined && String(start).length === t.idWidth && String(start + t.records - 1).length === t.idWidth && String(100000 + start).length === t.orderWidth && String(100000 + start + t.records - 1).length === t.orderWidth
  if (!fits) {
    template = render(start)
    return { buf: Buffer.from(template.buf), records: template.records }
  }
  const buf = Buffer.from(t.buf) // a copy: the previous block may still be queued on the socket
  const f = t.fields
  for (let r = 0; r < t.records; r++) {
    const i = start + r
    const o = r * 5
    writeDigits(buf, f[o]!, i, t.idWidth)
    writeDigits(buf, f[o + 1]!, i, t.idWidth)
    writeDigits(buf, f[o + 2]!, i, t.idWidth)
    writeDigits(buf, f[o + 3]!, 100000 + i, t.orderWidth)
    writeDigits(buf, f[o + 4]!, phoneSuffix(i), 4)
  }
  return { buf, records: t.records }
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x')
  req.resume()
  const total = Number(url.searchParams.get('mb') ?? '200') * 1024 * 1024
  res.writeHead(200, { 'content-type': 'application/x-ndjson' })
  let sent = 0
  let next = 1
  const pump = () => {
    while (sent < total) {
      const b = block(next)
      next += b.records
      sent += b.buf.length
      if (!res.write(b.buf)) return void res.once('drain', pump)
    }
    res.end()
  }
  res.on('close', () => (sent = total))
  pump()
})
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
