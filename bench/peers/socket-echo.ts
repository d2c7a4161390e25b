// A measuring stick, not a server: answers every request on a kept-alive connection with the
// bench backend's fixed reply, straight from a net.Socket with no HTTP machinery (it only frames
// requests by Content-Length, which is all the bench's clients send). The floor scenario sets it
// beside a node:http server giving the same reply, to show what node:http itself costs.
import { createServer, type AddressInfo, type Socket } from 'node:net'

const body = Buffer.from(JSON.stringify({ data: { entity: { id: '42', name: 'Ada Lovelace', email: 'ada@example.com', updatedAt: '2026-11-25T00:00:00Z' } } }))
const reply = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`), body])
const CRLF2 = Buffer.from('\r\n\r\n')

function serve(socket: Socket): void {
  socket.setNoDelay(true)
  let pending: Buffer | undefined
  socket.on('data', (data: Buffer) => {
    let buf = pending === undefined ? data : Buffer.concat([pending, data])
    let replies = 0
    for (;;) {
      const end = buf.indexOf(CRLF2)
      if (end === -1) break
      const m = /\r\ncontent-length: *(\d+)/i.exec(buf.toString('latin1', 0, end))
      const total = end + 4 + (m ? Number(m[1]) : 0)
      if (buf.length < total) break
      buf = buf.subarray(total)
      replies++
    }
    pending = buf.length > 0 ? buf : undefined
    if (replies === 1) socket.write(reply)
    else if (replies > 1) socket.write(Buffer.concat(Array.from({ length: replies }, () => reply)))
  })
  socket.on('error', () => socket.destroy())
}

const server = createServer(serve)
server.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
