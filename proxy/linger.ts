// Closing a client connection the client may still be sending on (nginx's lingering close,
// Envoy's delayed close): half-close so the client sees the reply end, keep reading and dropping
// what it sends, and cut the socket after LINGER_MS. Closed at once, the arriving bytes make the
// kernel reset the connection and the reply is lost with it; ended only on our side, a socket
// whose client never closes its own stays open forever.
import type { Duplex } from 'node:stream'

/** How long such a connection keeps reading before it is cut. */
export const LINGER_MS = 3_000

/**
 * As socket.destroySoon for a node:http connection whose reply says `Connection: close` (node
 * calls it once the reply is written); the socket closes itself when the client closes its side.
 */
export function lingeringClose(this: Duplex): void {
  if (this.writable) this.end()
  if (!this.destroyed) setTimeout(destroySocket, LINGER_MS, this).unref()
}

/**
 * The last words on a raw socket node:http handed over (an upgrade, CONNECT, a parse error), where
 * no HTTP timeout applies: the reply, then linger. `read` false when node's failed parser still
 * listens on the socket.
 */
export function endRaw(socket: Duplex, reply: string | Buffer, read = true): void {
  socket.end(reply)
  if (read) socket.resume()
  lingeringClose.call(socket)
}

function destroySocket(socket: Duplex): void {
  socket.destroy()
}
