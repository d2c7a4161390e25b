// The DLP bench backend: GET /export.ndjson?mb=N streams N MiB of NDJSON entity records (unique
// e-mails, E.164 phones from a pool of 9000, order-number notes; no SSNs, so tokenize_strict's
// block action does not end the export). Records are pre-rendered in 1 MiB blocks with varying
// ids so the backend costs little next to the proxy being measured.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

function block(start: number): { buf: Buffer; records: number } {
  let s = ''
  let i = start
  while (s.length < 1024 * 1024) {
    const n = (i * 7919 + 104729) % 1_000_000
    s += `{"id":"${i}","name":"Entity ${i}","email":"user${i}@example.com","phone":"+1202555${String(1000 + (n % 9000))}","note":"order ${100000 + i} shipped","updatedAt":"2026-01-01T00:00:00.000Z"}\n`
    i++
  }
  return { buf: Buffer.from(s), records: i - start }
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
