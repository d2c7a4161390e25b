// Closing a client connection the client may still be sending on (nginx's lingering close,
// Envoy's delayed close): half-close so the client sees the reply end, keep reading and dropping
// what it sends, and cut the socket after LINGER_MS. Closed at once, the arriving bytes make the
// kernel reset the connection and the reply is lost with it; ended only on our side, a socket
// whose client never closes its own stays open forever.
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'

/** How long such a connection keeps reading before it is cut, counted as Envoy's delayed close is (see cutWhenIdle). */
export const LINGER_MS = 3_000

/** A raw reply goes out in pieces this big, each once the last is written: each one written is progress (see cutWhenIdle). */
const PIECE = 16 * 1024

/**
 * As socket.destroySoon for a node:http connection whose reply says `Connection: close` (node
 * calls it once the reply is written); the socket closes itself when the client closes its side.
 */
export function lingeringClose(this: Duplex): void {
  if (this.writable) this.end()
  if (!this.destroyed) cutWhenIdle(this)
}

/**
 * The request's body is still on its way (announced, chunked or by a Content-Length other than 0,
 * and not all read): a reply sent now that ends the connection must linger, or the client's
 * arriving bytes reset it and the client gets EPIPE/ECONNRESET instead of the reply.
 */
export function bodyStillComing(req: IncomingMessage): boolean {
  if (req.complete) return false
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/**
 * The last words on a raw socket node:http handed over (an upgrade, CONNECT, a parse error), where
 * no HTTP timeout applies: the reply, then linger. `read` false when node's failed parser still
 * listens on the socket.
 */
export function endRaw(socket: Duplex, reply: string | Buffer, read = true): void {
  if (read) socket.resume()
  if (socket.destroyed) return
  writePieces(socket, typeof reply === 'string' ? Buffer.from(reply) : reply, 0, cutWhenIdle(socket))
}

function writePieces(socket: Duplex, data: Buffer, at: number, timer: NodeJS.Timeout): void {
  if (at >= data.length) {
    socket.end()
    return
  }
  socket.write(data.subarray(at, at + PIECE), (err) => {
    if (err != null) return
    timer.refresh()
    writePieces(socket, data, at + PIECE, timer)
  })
}

/**
 * Destroy `socket` LINGER_MS after its reply is all written, or once LINGER_MS pass in which none
 * of it could be (Envoy's delayed close: restarted by write progress, which the caller reports by
 * refreshing the timer returned). Timed from end() alone, a reply still queued for a slow reader
 * (the last of a streamed upgrade refusal, a reply larger than the kernel's buffers) was cut short:
 * the client got part of it, with no sign of the rest.
 */
function cutWhenIdle(socket: Duplex): NodeJS.Timeout {
  const timer = setTimeout(destroySocket, LINGER_MS, socket).unref()
  if (!socket.writableFinished) socket.once('finish', () => timer.refresh())
  return timer
}

function destroySocket(socket: Duplex): void {
  socket.destroy()
}
