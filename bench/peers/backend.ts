// The bench backend: as fast as node:http gets, so the proxies are what is measured.
// GET/POST anything → a fixed GraphQL response; /stream?mb=N → N MiB streamed;
// /delay?ms=N → fixed response after N ms.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

const body = Buffer.from(JSON.stringify({ data: { entity: { id: '42', name: 'Ada Lovelace', email: 'ada@example.com', updatedAt: '2026-11-25T00:00:00Z' } } }))
const chunk = Buffer.alloc(64 * 1024, 'x')

const server = createServer((req, res) => {
  const url = req.url ?? '/'
  req.resume()
  if (url.startsWith('/stream')) {
    const total = Number(new URL(url, 'http://x').searchParams.get('mb') ?? '200') * 1024 * 1024
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
    let sent = 0
    const pump = () => {
      while (sent < total) {
        sent += chunk.length
        if (!res.write(chunk)) return void res.once('drain', pump)
      }
      res.end()
    }
    pump()
    return
  }
  const send = () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
    res.end(body)
  }
  if (url.startsWith('/delay')) setTimeout(send, Number(new URL(url, 'http://x').searchParams.get('ms') ?? '20'))
  else req.on('end', send)
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
