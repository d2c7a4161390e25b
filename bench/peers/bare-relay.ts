// The floor for a proxy built on node:http + undici: read the body, relay it through an undici
// Pool with dispatch(), stream the answer back. No header hygiene, no timeouts, no metrics, no
// error handling: it shows what igw's own work costs on top of the runtime it is built on.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Pool } from 'undici'

const pool = new Pool(process.argv[2]!, { connections: 128 })
const server = createServer((req, res) => {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
    pool.dispatch(
      { path: req.url!, method: req.method as 'POST', headers: { 'content-type': req.headers['content-type'] ?? 'application/octet-stream', 'content-length': String(body.length) }, body },
      {
        onRequestStart() {},
        onResponseStart(_c, status, headers) {
          res.writeHead(status, headers as Record<string, string>)
        },
        onResponseData(_c, chunk) {
          res.write(chunk)
        },
        onResponseEnd() {
          res.end()
        },
        onResponseError(_c, err) {
          res.destroy(err)
        },
      },
    )
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
