// WebSocket passthrough. The upstream handshake happens first, so the client is accepted with
// exactly the subprotocol the backend chose (or refused with the backend's own answer). Then
// frames are relayed both ways: messages, pings/pongs (nobody auto-answers here, the real
// endpoints do), close codes and reasons, with backpressure in each direction.
import type { EventEmitter } from 'node:events'
import { STATUS_CODES, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { connect as netConnect, isIP, type NetConnectOpts, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import WebSocket, { WebSocketServer, type RawData } from 'ws'
import * as wsExports from 'ws'
import { runRequestChain } from './chain.ts'
import { RequestContext } from './context.ts'
import { errorReply, type LocalReply } from './errors.ts'
import { clientResponseHeaders, routeIncomingRequestId, upstreamRequestHeaders } from './headers.ts'
import { endRaw } from './linger.ts'
import type { RouteRuntime, Snapshot } from './runtime.ts'
import type { WorkerProxy } from './worker-proxy.ts'

const kProtocol = Symbol('igw.ws.protocol')
const kPending = Symbol('igw.ws.pending')
type UpgradeRequest = IncomingMessage & { [kProtocol]?: string; [kPending]?: PendingUpgrade | undefined }
/** What the prebuilt listeners below find the handshake in progress through. */
interface HasPending {
  [kPending]?: PendingUpgrade | undefined
}

/**
 * The upgrade socket's 'error' listener, attached before anything can write to it. Node hands
 * the socket to 'upgrade' with no listener of its own, so a refusal written after the client
 * reset the connection (EPIPE, ECONNRESET) would otherwise be an uncaught exception that takes
 * the worker thread and every connection on it down.
 */
export function destroyOnSocketError(this: Duplex): void {
  this.destroy()
}

// ws's own Sec-WebSocket-Protocol parser (the package exports it; its type declarations do
// not): the header is judged by the very rules ws's handleUpgrade applies afterwards.
const wsSubprotocol = (wsExports as unknown as { subprotocol: { parse(header: string): Set<string> } }).subprotocol

/**
 * The offered subprotocols as ws's server parses them: comma-separated tokens, optional
 * spaces/tabs around them, no empty element, no duplicate. `undefined` when ws would refuse the
 * header (it then answers 400 itself and never calls back); [] when there is none.
 */
export function parseSubprotocols(header: string | undefined): string[] | undefined {
  if (header === undefined) return []
  try {
    return [...wsSubprotocol.parse(header)]
  } catch {
    return undefined // SyntaxError: what ws refuses
  }
}

/**
 * The client's handshake checked the way ws's WebSocketServer.handleUpgrade will check it, and
 * before anything is opened for it: ws refuses a bad one with its own text/html 400 and never
 * calls back. Returns the offered subprotocols, or why the handshake is refused.
 */
export function checkClientHandshake(req: IncomingMessage): string[] | string {
  const key = req.headers['sec-websocket-key']
  if (req.method !== 'GET' || key === undefined || !/^[+/0-9A-Za-z]{22}==$/.test(key) || req.headers['sec-websocket-version'] !== '13') {
    return 'invalid WebSocket handshake (needs GET, Sec-WebSocket-Key and Sec-WebSocket-Version: 13)'
  }
  // A request target has no fragment (RFC 9112 §3.2); the upstream URL could not carry one either.
  if (req.url !== undefined && req.url.includes('#')) return 'the request target must not contain a fragment ("#")'
  const protocols = parseSubprotocols(req.headers['sec-websocket-protocol'])
  return protocols ?? 'invalid Sec-WebSocket-Protocol header (expected a comma-separated list of distinct tokens)'
}

/**
 * Why an upgrade routed here is not one this route takes, or undefined. The listener routes any
 * `Upgrade` list that names websocket first; one that names more (`websocket, foo`) is refused
 * as Envoy refuses it (it matches the whole value against its upgrade types), and as ws-based
 * backends do: RFC 6455 §4.1 clients send `websocket` alone. It was told "WebSocket upgrades are
 * not enabled on this route", on a route that has them.
 */
export function upgradeRefusal(route: RouteRuntime, req: IncomingMessage): string | undefined {
  if (!route.websocket.enabled) return 'WebSocket upgrades are not enabled on this route'
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return 'invalid WebSocket handshake (the Upgrade header must be "websocket" alone, not a list of protocols)'
  return undefined
}

/** The WebSocket version this side speaks, for a refusal of any other (RFC 6455 §4.4). */
const VERSION_HEADER = { 'sec-websocket-version': '13' }
/** The headers of a handshake refusal: RFC 6455 §4.4 names the version spoken when the client's was another (passthrough and terminate mode). */
export function handshakeRefusalHeaders(req: IncomingMessage): Record<string, string> | undefined {
  return req.headers['sec-websocket-version'] === '13' ? undefined : VERSION_HEADER
}

// Handshake headers the ws client writes itself; the client's values must not be relayed.
const WS_HANDSHAKE = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept'])

const servers = new WeakMap<RouteRuntime, WebSocketServer>()

/**
 * permessage-deflate toward clients (websocket.perMessageDeflate): small windows and memLevel keep
 * zlib's memory per connection near 100 KiB; messages under 1 KiB go as they are (compressing
 * them costs more than it saves); at most 10 zlib jobs at once per process (ws's queue).
 */
const DEFLATE = { threshold: 1024, serverMaxWindowBits: 13, clientMaxWindowBits: 13, zlibDeflateOptions: { memLevel: 7 }, concurrencyLimit: 10 } as const

// ws's extension-header parser and permessage-deflate negotiator (exported, untyped, as above).
const wsDeflate = wsExports as unknown as {
  extension: { parse(header: string): Record<string, object[] | undefined> }
  PerMessageDeflate: new (options: object) => { accept(offers: object[]): unknown }
}

/**
 * The client's permessage-deflate offer as ws's server will judge it (websocket.perMessageDeflate
 * on). ws fails the whole handshake, with its own text/html 400, on an offer it cannot accept with
 * DEFLATE's settings: one without client_max_window_bits (Go's gorilla/websocket, many non-browser
 * clients) or asking for a server window under 13 bits, and after the upstream had been opened for
 * it. RFC 7692 §7.1.2 has the server decline such an offer: the header is dropped and the
 * connection goes on uncompressed. A header ws cannot parse is refused here, before anything opens.
 */
export function declineUnacceptableDeflate(route: RouteRuntime, req: IncomingMessage): string | undefined {
  const header = req.headers['sec-websocket-extensions']
  if (!route.websocket.perMessageDeflate || header === undefined) return undefined
  let offers: object[] | undefined
  try {
    offers = wsDeflate.extension.parse(header)['permessage-deflate']
  } catch {
    return 'invalid Sec-WebSocket-Extensions header'
  }
  if (offers === undefined) return undefined
  try {
    new wsDeflate.PerMessageDeflate({ ...DEFLATE, isServer: true }).accept(offers)
  } catch {
    delete req.headers['sec-websocket-extensions']
  }
  return undefined
}

function serverFor(route: RouteRuntime): WebSocketServer {
  let wss = servers.get(route)
  if (wss === undefined) {
    wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: route.websocket.perMessageDeflate ? DEFLATE : false,
      autoPong: false,
      maxPayload: route.websocket.maxMessageBytes,
      clientTracking: false,
      handleProtocols: (_protocols, req: UpgradeRequest) => req[kProtocol] ?? false,
    })
    wss.on('headers', onClientHandshakeHeaders)
    servers.set(route, wss)
  }
  return wss
}

/**
 * A chain's refusal of the handshake, with the headers the chain added (ctx.responseHeaders:
 * Retry-After and RateLimit from quota, the echoed x-request-id) as an HTTP answer gets them:
 * they were dropped, so a 429 on an upgrade came without its Retry-After.
 */
function writeLocalReply(socket: Duplex, ctx: RequestContext, reply: LocalReply): void {
  // The chain's additions replace same-named reply headers, as on an HTTP local reply.
  writeReply(socket, reply.status, clientResponseHeaders(reply.headers ?? {}, ctx.responseHeaders), typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body)
}

/**
 * An HTTP answer on the raw upgrade socket, then linger. `headers` is a flat name/value list;
 * the head goes out as latin1, as node:http writes one (relayed values are latin1 byte strings).
 */
function writeReply(socket: Duplex, status: number, headers: string[], body: Buffer): void {
  endRaw(socket, Buffer.concat([replyHead(status, headers, String(body.length)), body]))
}

/** The head of such an answer: `length` undefined for a body delimited by the connection's close. */
function replyHead(status: number, headers: string[], length: string | undefined): Buffer {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nconnection: close\r\n`
  if (length !== undefined) head += `content-length: ${length}\r\n`
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase()
    if (name === 'content-length' || name === 'connection') continue
    head += `${name}: ${headers[i + 1]!}\r\n`
  }
  return Buffer.from(`${head}\r\n`, 'latin1')
}

/** How much of a refusal's body is held to answer it with a Content-Length; a longer one is streamed. */
const MAX_REFUSAL_BUFFER = 64 * 1024

/**
 * The 101 the client gets carries the backend's own 101 headers (Set-Cookie, its request id,
 * anything else it answered with) and the chain's additions, as an HTTP answer does: ws wrote
 * only its handshake headers, so a session cookie the backend set on the upgrade was lost.
 * The handshake headers themselves are ws's (its accept key, the chosen subprotocol).
 */
function handshakeHeaders(out: string[], upstream: IncomingHttpHeaders | undefined, added: string[] | undefined): void {
  // Hop-by-hop headers stop here; the chain's additions replace same-named backend headers.
  const list = clientResponseHeaders(upstream ?? {}, added)
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!
    if (name.startsWith('sec-websocket-') || name === 'content-length') continue
    let value = list[i + 1]!
    // ws writes the head as UTF-8; node's parser gave the backend's bytes as latin1 characters.
    if (!/^[\t\x20-\x7e]*$/.test(value)) {
      const bytes = Buffer.from(value, 'latin1')
      value = bytes.toString()
      if (!Buffer.from(value).equals(bytes)) continue // not UTF-8: cannot be written byte for byte
    }
    out.push(`${name}: ${value}`)
  }
}

/** Sendable close codes (RFC 6455 §7.4): the rest (1005, 1006, 1015, …) are never put on the wire. */
function sendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
}

/**
 * A close reason fits in 123 bytes of UTF-8 (RFC 6455 §5.5: control frames carry at most 125):
 * ws throws on a longer one, so any reason built from client input goes through here.
 */
export function closeReason(text: string): string {
  if (text.length <= 41) return text // 41 UTF-16 units are at most 123 bytes of UTF-8
  const bytes = Buffer.from(text)
  if (bytes.length <= 123) return text
  let end = 120
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end-- // not inside a character
  return `${bytes.subarray(0, end).toString()}...`
}

/**
 * Close one side of a bridge. A side the bridge paused (its peer was not reading fast enough) is
 * read again first: its close reply sits behind whatever it sent meanwhile, and unread, the close
 * handshake waited out ws's closeTimeout (30 s) — a drain (or its peer going away) left that
 * client without its close, and holding the connection gauge and the upgrade's concurrency slot,
 * that long instead of reconnecting at once. What it still sends is dropped (its peer is closed
 * or closing).
 */
function closeSide(ws: WebSocket, code?: number, reason?: Buffer | string): void {
  if (ws.isPaused) ws.resume()
  ws.close(code, reason)
}

/**
 * A side's peer half-closed its TCP connection (FIN). ws then only ends its own half and waits
 * for what it had queued toward that peer to flush, with no timer: a peer that had stopped
 * reading (the queue over maxBufferedBytes, its sender paused) and then sent FIN without a close
 * frame left that side CLOSING forever, never emitting 'close'. The other side was never told
 * (its messages silently dropped) and both connections, the gauge and the upgrade's concurrency
 * slot were held until the peer finally reset. A peer that sends FIN will send nothing more; what
 * it did not read by then is dropped, and the side closed now ('close' relays the code: the one
 * the peer's close frame carried, 1006 without one).
 */
function peerEnded(ws: WebSocket, socket: Duplex): void {
  if (ws.readyState !== WebSocket.CLOSED && socket.writableLength > 0) ws.terminate()
}

/**
 * Call `listener` as `ws` reads a close frame. ws has no public event for it: its frame parser
 * (the Receiver, `_receiver` in ws 8) emits 'conclude' with the code and reason, right after
 * ws's own listener has answered the frame. Without that parser, 'close' alone relays the code.
 */
function onCloseFrame(ws: WebSocket, listener: (code: number, reason: Buffer) => void): void {
  ;(ws as WebSocket & { _receiver?: EventEmitter })._receiver?.on('conclude', listener)
}

export class WsBridge {
  readonly client: WebSocket
  readonly upstream: WebSocket
  readonly #proxy: WorkerProxy
  readonly #route: RouteRuntime
  readonly #bound: number
  /** The upgrade's request id, for the log lines of a connection that ends badly. */
  readonly #reqId: string

  /** What the upgrade's chain holds for the socket's life (a concurrency slot), run when it ends. */
  readonly #release: (() => void) | undefined
  /** The raw sockets under client and upstream, when known. */
  readonly #clientSocket: Duplex | undefined
  readonly #upstreamSocket: Duplex | undefined

  constructor(proxy: WorkerProxy, route: RouteRuntime, client: WebSocket, upstream: WebSocket, reqId = '', release?: () => void, sockets?: { client: Duplex; upstream: Duplex | undefined }) {
    this.#proxy = proxy
    this.#route = route
    this.#reqId = reqId
    this.#release = release
    this.#clientSocket = sockets?.client
    this.#upstreamSocket = sockets?.upstream
    this.client = client
    this.upstream = upstream
    this.#bound = route.websocket.maxBufferedBytes
    if (client.extensions.includes('permessage-deflate')) this.#clientWritten = () => this.#written()
    const metrics = proxy.metrics
    metrics.wsConnections.labels(route.name).inc()
    const up = metrics.wsMessages.labels('client_to_upstream')
    const down = metrics.wsMessages.labels('upstream_to_client')
    client.on('message', (data: RawData, isBinary: boolean) => {
      up.inc()
      this.#active = performance.now()
      this.#relay(client, upstream, data, isBinary)
    })
    upstream.on('message', (data: RawData, isBinary: boolean) => {
      down.inc()
      this.#active = performance.now()
      this.#relay(upstream, client, data, isBinary)
    })
    client.on('ping', (d: Buffer) => this.#relayControl(client, upstream, d, false))
    client.on('pong', (d: Buffer) => this.#relayControl(client, upstream, d, true))
    upstream.on('ping', (d: Buffer) => this.#relayControl(upstream, client, d, false))
    upstream.on('pong', (d: Buffer) => this.#relayControl(upstream, client, d, true))
    // A peer that vanished without FIN or RST (a NAT entry dropped, a laptop asleep) held both
    // connections, the gauge and the upgrade's concurrency slot forever: the kernel's keepalive
    // probes find it (~70 s after the last packet with libuv's probe interval and count).
    for (const s of [sockets?.client, sockets?.upstream]) (s as Socket | undefined)?.setKeepAlive?.(true, KEEPALIVE_IDLE_MS)
    this.#idleMs = route.websocket.idleTimeoutMs
    if (this.#idleMs > 0) {
      this.#sockets = [sockets?.client, sockets?.upstream].filter((s) => s !== undefined) as Socket[]
      this.#moved = this.#bytesMoved()
      this.#idleTimer = setTimeout(onIdleCheck, this.#idleMs, this)
    }
    onCloseFrame(client, (code, reason) => this.#closeFrame(upstream, code, reason))
    onCloseFrame(upstream, (code, reason) => this.#closeFrame(client, code, reason))
    client.on('close', (code, reason) => this.#closed(upstream, code, reason))
    upstream.on('close', (code, reason) => this.#closed(client, code, reason))
    client.on('error', (err) => this.#failed('client', upstream, err))
    upstream.on('error', (err) => this.#failed('upstream', client, err))
    if (sockets !== undefined) {
      sockets.client.on('end', () => peerEnded(client, sockets.client))
      sockets.upstream?.on('end', () => peerEnded(upstream, sockets.upstream!))
      // ws swallows its socket's errors (no 'error' event once open): kept for the log line of a lost upstream.
      sockets.upstream?.on('error', (err: NodeJS.ErrnoException) => (this.#upstreamErr ??= err))
    }
  }

  /** The upstream socket's error (ECONNRESET, ETIMEDOUT from keepalive probes), if it had one. */
  #upstreamErr: NodeJS.ErrnoException | undefined = undefined

  /** When a frame last went either way (performance.now()), for websocket.idleTimeoutMs. */
  #active = performance.now()
  readonly #idleMs: number
  #idleTimer: NodeJS.Timeout | undefined = undefined
  /** The bridged sockets, and the bytes that had moved on them at the last idle check. */
  #sockets: Socket[] = []
  #moved = 0

  /**
   * Bytes read, and written out of the proxy's buffers, on both sockets so far. A write counts
   * as it is taken by the kernel, not only once all of it has been: one large frame to a slow
   * reader is a single write, and it looked idle until its last byte. libuv's write queue (of
   * the TCP handle, under TLS too) shrinks as the kernel takes bytes; node's own
   * socket.setTimeout watches it the same way.
   */
  #bytesMoved(): number {
    let n = 0
    for (const s of this.#sockets) {
      const handle = (s as Socket & { _handle?: TcpHandle | null })._handle
      n += s.bytesRead + s.bytesWritten - s.writableLength - ((handle?._parent ?? handle)?.writeQueueSize ?? 0)
    }
    return n
  }

  /**
   * The idle timer fired: close both sides if nothing moved since, else wait for the rest.
   * Bytes moving without a whole frame count, as Envoy counts any byte: a long message still
   * arriving (or a backlog still being written to a slow reader) was closed as idle mid-transfer.
   * Bytes are only seen here, so the close comes one to two timeouts after the last of them.
   */
  idleCheck(): void {
    this.#idleTimer = undefined
    const moved = this.#bytesMoved()
    if (moved !== this.#moved) {
      this.#moved = moved
      this.#active = performance.now()
    }
    const quiet = performance.now() - this.#active
    if (quiet < this.#idleMs) {
      this.#idleTimer = setTimeout(onIdleCheck, this.#idleMs - quiet, this)
      return
    }
    this.#proxy.logger.info({ reqId: this.#reqId, route: this.#route.name, idleTimeoutMs: this.#idleMs }, 'websocket idle; closed')
    for (const ws of [this.client, this.upstream]) {
      if (this.#open(ws)) closeSide(ws, 1001, 'idle timeout')
    }
  }

  /**
   * With permessage-deflate, what the client's sender holds off its socket (messages being
   * compressed, and all queued behind them) is seen only through their write callbacks: the
   * count of those not called yet, and the callback, set only then.
   */
  #unwritten = 0
  readonly #clientWritten: (() => void) | undefined = undefined

  /** The write callback a frame toward `to` needs, counted (see #unwritten). */
  #track(to: WebSocket): (() => void) | undefined {
    if (to !== this.client || this.#clientWritten === undefined) return undefined
    this.#unwritten++
    return this.#clientWritten
  }

  #written(): void {
    if (--this.#unwritten > 0 || this.#ending !== this.client) return
    const socket = this.#clientSocket!
    if (socket.writable) socket.end() // the last of its backlog is out: #cut's FIN now
  }

  #relay(from: WebSocket, to: WebSocket, data: RawData, isBinary: boolean): void {
    if (to.readyState !== WebSocket.OPEN) return
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength
    const written = this.#track(to)
    if (to.bufferedAmount + size <= this.#bound) {
      to.send(data, { binary: isBinary }, written)
      return
    }
    // Over the bound: stop reading the sender until this message (and all before it) is flushed.
    from.pause()
    to.send(data, { binary: isBinary }, () => {
      written?.()
      if (from.readyState === WebSocket.OPEN) from.resume()
    })
  }

  /**
   * Pings and pongs under the same bound as messages: a ping flood toward a side that does not
   * read (or a pong flood a non-reading client provokes from the backend) was relayed without
   * looking at bufferedAmount, so the proxy read and buffered it all, without limit.
   */
  #relayControl(from: WebSocket, to: WebSocket, data: Buffer, pong: boolean): void {
    this.#active = performance.now() // a ping is how a client keeps a quiet connection open
    if (to.readyState !== WebSocket.OPEN) return
    // ws queues a control frame behind a message being compressed, too.
    const written = this.#track(to)
    if (to.bufferedAmount + data.length <= this.#bound) {
      if (pong) to.pong(data, undefined, written)
      else to.ping(data, undefined, written)
      return
    }
    from.pause()
    const resume = () => {
      written?.()
      if (from.readyState === WebSocket.OPEN) from.resume()
    }
    if (pong) to.pong(data, undefined, resume)
    else to.ping(data, undefined, resume)
  }

  /**
   * One side closed. The bridge ends when both have: a side still CLOSING is in the middle of its
   * close handshake (its peer has not answered our close frame yet), and the drain waits for it.
   * It ended with the first side, so a drain whose backend answered the 1001 at once cut the
   * client's connection before the client had answered (ws bounds a close handshake by its
   * closeTimeout, the drain by its deadline).
   */
  #closed(other: WebSocket, code: number, reason: Buffer): void {
    if (other.readyState === WebSocket.CLOSED) {
      this.#done()
      return
    }
    if (other.readyState === WebSocket.CLOSING) {
      // The client's connection is over and the backend has the close frame relayed to it:
      // nothing is left to wait for. A backend that does not answer it (gorilla/websocket
      // answers only while the application reads) held the upstream, the gauge and the
      // client's concurrency slot (a reconnect's 429) for ws's closeTimeout, 30 s; nginx and
      // Envoy close the upstream as the client's connection ends. Its backlog still goes first.
      if (other === this.upstream) this.#cut(other)
      return // else its own 'close' ends the bridge
    }
    if (sendableCloseCode(code)) closeSide(other, code, reason)
    else if (code === 1005) closeSide(other)
    else {
      if (other === this.client) this.#upstreamLost()
      this.#cut(other) // 1006: the peer vanished without a close frame; do the same
    }
  }

  /**
   * The upstream's connection ended without a close frame (a backend that crashed or was killed,
   * a reset, keepalive probes unanswered) while the client was open. ws reports no 'error' for a
   * socket that fails once open, so this reached neither #failed nor any log or metric: every
   * subscriber of a crashed backend was cut (1006) with no trace of why. Counted and logged as an
   * HTTP upstream failing mid-response is.
   */
  #upstreamLost(): void {
    const e = this.#upstreamErr
    this.#proxy.metrics.proxyErrors.labels(this.#route.name, 'UPSTREAM_UNAVAILABLE').inc()
    this.#proxy.logger.warn(
      { err: { message: e?.message ?? 'the upstream closed its connection without a close frame', code: e?.code }, side: 'upstream', reqId: this.#reqId, route: this.#route.name },
      'websocket upstream connection lost; client cut',
    )
  }

  /**
   * A side's close frame arrived (ws has answered it): the other side gets it now. ws emits
   * 'close' only once the TCP connection is gone, and a peer that sent its close frame and then
   * kept the connection (waiting for the server to close first, RFC 6455 §7.1.1, or behind a
   * network gone dead) kept the other side open until ws's closeTimeout, 30 s later.
   */
  #closeFrame(other: WebSocket, code: number, reason: Buffer): void {
    if (!this.#open(other)) return
    // The receiver accepts only sendable codes, or none (1005).
    if (code === 1005) closeSide(other)
    else closeSide(other, code, reason)
  }

  /** A side being ended after its backlog (see #cut): nothing, not even a close frame, follows. */
  #ending: WebSocket | undefined = undefined

  #open(ws: WebSocket): boolean {
    return ws.readyState === WebSocket.OPEN && ws !== this.#ending
  }

  /**
   * Close a side without a close frame, as its peer went. What it is still owed (messages relayed
   * to a slow reader, up to maxBufferedBytes) is written first, then FIN: terminate() threw it
   * away, where Envoy flushes before it closes. The socket closes when the reader closes its own
   * half; one that does not, or takes nothing more, is cut after ws's closeTimeout (30 s), as a
   * close handshake would be. Messages still being compressed for it are owed too: the FIN
   * follows the last of them (#written).
   */
  #cut(ws: WebSocket): void {
    const socket = ws === this.client ? this.#clientSocket : this.#upstreamSocket
    const compressing = ws === this.client && this.#unwritten > 0
    if (socket === undefined || (socket.writableLength === 0 && !compressing) || !socket.writable) {
      ws.terminate()
      return
    }
    this.#ending = ws
    if (ws.isPaused) ws.resume() // its FIN must be read for the socket to close
    if (!compressing) socket.end()
    const timer = setTimeout(destroySocket, CLOSE_TIMEOUT_MS, socket)
    socket.once('close', () => clearTimeout(timer))
  }

  #failed(side: 'client' | 'upstream', other: WebSocket, err: Error): void {
    const log = { err: { message: err.message }, side, reqId: this.#reqId, route: this.#route.name }
    this.#proxy.logger.debug(log, 'websocket error')
    if (side === 'upstream' && other.readyState === WebSocket.OPEN) {
      // The upstream broke the protocol (a frame over maxMessageBytes, bad UTF-8, a reserved
      // close code; a connection that fails once open is #upstreamLost): the client is told so with a close frame, 1014
      // "bad gateway" (RFC 6455 §7.4.1 registry) and the reason, not a bare reset (1006).
      // Logged as an HTTP upstream failure is (it was a debug line only).
      this.#proxy.metrics.proxyErrors.labels(this.#route.name, 'UPSTREAM_UNAVAILABLE').inc()
      this.#proxy.logger.warn(log, 'websocket upstream broke the protocol; closed')
      closeSide(other, 1014, closeReason(`upstream: ${err.message}`))
      return
    }
    if (side === 'client') {
      // The client broke the protocol (a message over maxMessageBytes, bad UTF-8, an unmasked
      // frame): ws has closed it with the matching code (1009, 1007, 1002). The backend was cut
      // without a close frame (an abnormal 1006 in its logs) and nothing but a debug line told
      // the operator why: it now gets 1001 (its peer is going away) with the reason, and the
      // refusal is logged and counted as an HTTP body would be (413 / 400).
      const tooBig = (err as Error & { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'
      this.#proxy.metrics.proxyErrors.labels(this.#route.name, tooBig ? 'PAYLOAD_TOO_LARGE' : 'BAD_REQUEST').inc()
      this.#proxy.logger.info(log, 'websocket client broke the protocol; closed')
      if (other.readyState === WebSocket.OPEN) {
        closeSide(other, 1001, closeReason(`client: ${err.message}`))
        return
      }
    }
    if (other.readyState === WebSocket.OPEN || other.readyState === WebSocket.CONNECTING) other.terminate()
  }

  #counted = true
  #done(): void {
    if (!this.#counted) return
    this.#counted = false
    clearTimeout(this.#idleTimer)
    this.#proxy.metrics.wsConnections.labels(this.#route.name).dec()
    this.#proxy.bridges.delete(this)
    this.#release?.()
  }

  /** Shutdown: both sides get 1001 Going Away. */
  goAway(): void {
    for (const ws of [this.client, this.upstream]) {
      if (this.#open(ws)) closeSide(ws, 1001, 'gateway shutting down')
    }
  }

  /** Drain deadline passed: cut without waiting for the close handshake. */
  terminate(): void {
    this.client.terminate()
    this.upstream.terminate()
  }
}

/** What #bytesMoved reads of a socket's handle (a TLS socket's handle has the TCP one as _parent). */
interface TcpHandle {
  writeQueueSize?: number
  _parent?: TcpHandle
}

/** ws's closeTimeout: how long a close handshake may take before ws cuts the socket. */
const CLOSE_TIMEOUT_MS = 30_000

function destroySocket(socket: Duplex): void {
  socket.destroy()
}

/** TCP keepalive's first probe after this much silence on a bridged socket. */
const KEEPALIVE_IDLE_MS = 60_000

function onIdleCheck(bridge: WsBridge): void {
  bridge.idleCheck()
}

export async function handleUpgrade(proxy: WorkerProxy, snapshot: Snapshot, route: RouteRuntime, req: UpgradeRequest, socket: Duplex, head: Buffer): Promise<void> {
  const ctx = new RequestContext(req, undefined, route, proxy.logger, performance.now(), routeIncomingRequestId(route, req.headers))
  ctx.upgrade = true
  const refusal = upgradeRefusal(route, req)
  if (refusal !== undefined) {
    refuseHandshake(proxy, ctx, socket, refusal)
    return
  }
  // Check the client's handshake before opening anything upstream, so a bad one costs nothing.
  const protocols = checkClientHandshake(req)
  if (typeof protocols === 'string') {
    // A version this side does not speak is answered with the one it does (RFC 6455 §4.4 MUST),
    // as ws itself answers: without it a client cannot tell which version to retry with.
    refuseHandshake(proxy, ctx, socket, protocols, handshakeRefusalHeaders(req))
    return
  }
  const badExtensions = declineUnacceptableDeflate(route, req)
  if (badExtensions !== undefined) {
    refuseHandshake(proxy, ctx, socket, badExtensions)
    return
  }
  const reply = await runRequestChain(ctx, route, proxy.metrics)
  if (reply !== undefined) {
    writeLocalReply(socket, ctx, reply)
    proxy.finishUpgrade(ctx, reply.status)
    return
  }
  if (clientLeft(socket)) {
    socket.destroy()
    proxy.finishUpgrade(ctx, 499) // the client left (or half-closed) while the chain ran
    return
  }
  // A header the client sent twice goes up twice, as on HTTP: joined with ", " two Cookie lines
  // became one cookie whose value swallowed the next ("a=1, b=2"); node joins Cookie with "; ".
  const headers: Record<string, string | string[]> = {}
  const flat = upstreamRequestHeaders(ctx, { trustIncoming: proxy.trustForwarded, hostRewrite: route.hostRewrite, upstreamHost: route.upstream.authority, contentLength: undefined })
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!.toLowerCase()
    if (WS_HANDSHAKE.has(name)) continue
    const had = headers[name]
    headers[name] = had === undefined ? flat[i + 1]! : typeof had === 'string' ? [had, flat[i + 1]!] : [...had, flat[i + 1]!]
  }
  const target = `${route.upstream.origin.replace(/^http/, 'ws')}${ctx.url}`
  // The request target goes up as routed, byte for byte (as on HTTP): ws sends its URL's WHATWG
  // serialization, which turns "\" into "/", resolves the dot segments that creates and escapes
  // other characters. `/public/..\admin` matched the /public route (its filters) and reached /admin.
  const path = ctx.url
  let upstream: WebSocket
  try {
    upstream = new WebSocket(target, protocols, {
      headers,
      perMessageDeflate: false,
      autoPong: false,
      followRedirects: false,
      maxPayload: route.websocket.maxMessageBytes,
      handshakeTimeout: handshakeMs(route),
      createConnection: connectWithin(snapshot.config.upstreams[route.config.upstream]?.connectTimeoutMs, target.startsWith('wss:')),
      finishRequest: (request: ClientRequest) => {
        request.path = path // node writes the request line with the head, at end()
        request.end()
      },
    })
  } catch (err) {
    // ws validates what it is given (URL, subprotocols, headers) synchronously; all of it comes
    // from the client's request. The message may name the upstream: it is logged, not sent.
    ctx.log.debug({ err: { message: (err as Error).message } }, 'websocket upgrade refused: ws rejected the request')
    writeLocalReply(socket, ctx, errorReply('BAD_REQUEST', 'invalid WebSocket upgrade request'))
    proxy.finishUpgrade(ctx, 400)
    return
  }
  new PendingUpgrade(proxy, route, ctx, req, socket, head, upstream, protocols)
}

/**
 * A handshake refused before the chain (upgrades off on the route, a bad handshake or version, a
 * deflate offer ws cannot parse; in terminate mode, no subprotocol the hub speaks): named, counted
 * and logged as any refusal on the route. They
 * were answered raw, with no access line, no count and no x-request-id, where the same request
 * without Upgrade had all three.
 */
export function refuseHandshake(proxy: Pick<WorkerProxy, 'metrics' | 'finishUpgrade'>, ctx: RequestContext, socket: Duplex, message: string, headers?: Record<string, string>): void {
  ctx.errorCode = 'BAD_REQUEST'
  proxy.metrics.proxyErrors.labels(ctx.route.name, 'BAD_REQUEST').inc()
  ctx.assignRequestId() // no filter ran, the request-id filter included
  writeLocalReply(socket, ctx, errorReply('BAD_REQUEST', message, undefined, headers))
  proxy.finishUpgrade(ctx, 400)
}

/**
 * The upstream's connectTimeoutMs for the WebSocket's TCP (and TLS) connect, as the HTTP pools
 * apply it: ws only has its handshake timeout (headersMs, 30 s by default), so an upstream whose
 * address no longer answers (a pod gone, SYNs dropped) held each upgrade that long, not 2 s.
 * The connectors are ws's own (net / tls, SNI from the host name) with a timer around them.
 */
function connectWithin(ms: number | undefined, secure: boolean): ((options: object) => Socket) | undefined {
  if (ms === undefined || ms <= 0) return undefined
  return (options: object) => {
    let socket: Socket
    if (secure) {
      const o = options as ConnectionOptions & { path?: string }
      o.path = undefined
      if (!o.servername && o.servername !== '') o.servername = isIP(o.host ?? '') ? '' : o.host
      socket = tlsConnect(o)
    } else {
      const o = options as NetConnectOpts & { socketPath?: string; path?: string }
      o.path = o.socketPath
      socket = netConnect(o)
    }
    const timer = setTimeout(connectTimedOut, ms, socket, ms)
    const clear = (): void => clearTimeout(timer)
    socket.once(secure ? 'secureConnect' : 'connect', clear)
    socket.once('close', clear)
    return socket
  }
}

function connectTimedOut(socket: Socket, ms: number): void {
  socket.destroy(Object.assign(new Error(`connecting to the upstream timed out after ${ms} ms`), { code: 'ETIMEDOUT' }))
}

/** The client's socket is gone or half-closed: nothing can be bridged to it any more. */
function clientLeft(socket: Duplex): boolean {
  return socket.destroyed || !socket.readable || !socket.writable
}

/**
 * How long the upstream has to answer the upgrade: the route's headersMs, or its totalMs when
 * headersMs is 0 (a handshake is a request whose head is the 101), undefined when both are 0.
 */
function handshakeMs(route: RouteRuntime): number | undefined {
  return route.timeouts.headersMs || route.timeouts.totalMs || undefined
}

/** What a client may send before its 101 (nothing, by RFC 6455 §4.1); more is dropped with the connection. */
const MAX_EARLY_BYTES = 64 * 1024

/**
 * One passthrough handshake between opening the upstream WebSocket and handing both sockets to a
 * WsBridge. Whatever ends it (the upstream accepts, refuses or fails; the client goes away; ws
 * refuses the client after all) ends it once: the upstream is closed unless bridged, and
 * finishUpgrade runs exactly once, so the in-flight count and the config snapshot are released.
 * Listeners are the prebuilt functions below; they find this object on the emitter. It sits in
 * proxy.bridges meanwhile, so a drain's deadline ends it (see terminate).
 */
class PendingUpgrade {
  readonly #proxy: WorkerProxy
  readonly #route: RouteRuntime
  readonly #ctx: RequestContext
  readonly #req: UpgradeRequest
  readonly #socket: Duplex & HasPending
  readonly #head: Buffer
  readonly #upstream: WebSocket & HasPending
  #done = false
  /** Bytes the client sent before its handshake completed (handed to ws with the head). */
  #early: Buffer[] | undefined = undefined
  #earlySize = 0
  /** The whole upstream handshake's deadline (see onHandshakeDeadline). */
  #deadline: NodeJS.Timeout | undefined = undefined
  /** The status of a refusal whose body is being read, for the deadline's message. */
  #refusalStatus: number | undefined = undefined
  /** A long refusal's head has been written to the client (its body is being streamed). */
  #refusalStreaming = false
  /** The backend's 101 headers, relayed to the client with its own 101. */
  #upgradeHeaders: IncomingHttpHeaders | undefined = undefined
  /** The upstream's socket, as its 101 came on it. */
  #upstreamSocket: Duplex | undefined = undefined
  /** The subprotocols the client offered (and the upstream was offered). */
  readonly #offered: string[]
  /** The subprotocol the backend's 101 selected, undefined when it selected none. */
  #selected: string | undefined = undefined

  constructor(proxy: WorkerProxy, route: RouteRuntime, ctx: RequestContext, req: UpgradeRequest, socket: Duplex, head: Buffer, upstream: WebSocket, offered: string[]) {
    this.#proxy = proxy
    this.#route = route
    this.#ctx = ctx
    this.#req = req
    this.#socket = socket
    this.#head = head
    this.#upstream = upstream
    this.#offered = offered
    // ws's handshake timeout is an idle timer on the socket: a backend that trickles its 101 (or
    // its refusal) a byte at a time restarts it with each byte and held the upgrade for as long
    // as it liked. The whole handshake has the route's time, once.
    const ms = handshakeMs(route)
    if (ms !== undefined) this.#deadline = setTimeout(onHandshakeDeadline, ms, this, ms)
    this.#socket[kPending] = this
    this.#upstream[kPending] = this
    proxy.bridges.add(this)
    socket.once('close', onClientClose)
    // Node hands over the upgrade socket unread, so a client that leaves (FIN or RST) while the
    // upstream handshake runs went unnoticed: an upstream that never answers held the upgrade,
    // its in-flight count and a drain until the deadline. Reading it sees the end.
    socket.on('data', onClientEarlyData)
    socket.once('end', onClientClose)
    upstream.once('upgrade', onUpstreamUpgrade)
    upstream.once('open', onUpstreamOpen)
    upstream.once('unexpected-response', onUpstreamRefused)
    // 'on', not 'once': a terminated upstream may still report an error after this one ended.
    upstream.on('error', onUpstreamError)
  }

  #finish(status: number): void {
    this.#done = true
    this.#stopReading()
    if (this.#deadline !== undefined) clearTimeout(this.#deadline)
    this.#socket.removeListener('close', onClientClose)
    this.#socket[kPending] = undefined
    this.#proxy.bridges.delete(this)
    this.#proxy.finishUpgrade(this.#ctx, status)
  }

  /** A drain began: the handshake goes on; its bridge, if it gets one, is sent 1001 at once (clientAccepted). */
  goAway(): void {}

  /**
   * The drain's deadline passed with the upstream still to answer. Nothing else ends the
   * handshake in time: node's closeAllConnections does not see an upgrade's socket, and its own
   * deadline (headersMs) may be far off. The drain finished with it open, the client cut
   * without a reply as the thread went, or the exit held until that deadline.
   */
  terminate(): void {
    if (this.#done) return
    // A streamed refusal's head is out: the client can only be cut.
    if (this.#refusalStreaming) this.#socket.destroy()
    else writeLocalReply(this.#socket, this.#ctx, errorReply('OVERLOADED', 'gateway is shutting down'))
    this.#upstream.terminate()
    this.#finish(503)
  }

  #stopReading(): void {
    this.#socket.removeListener('data', onClientEarlyData)
    this.#socket.removeListener('end', onClientClose)
  }

  /** The client's socket closed (or half-closed) before its handshake completed. */
  clientGone(): void {
    if (this.#done) return
    this.#socket.destroy()
    this.#upstream.terminate()
    this.#finish(499)
  }

  clientData(chunk: Buffer): void {
    if ((this.#earlySize += chunk.length) > MAX_EARLY_BYTES) {
      this.clientGone()
      return
    }
    ;(this.#early ??= []).push(chunk)
  }

  upstreamUpgraded(res: IncomingMessage): void {
    this.#upgradeHeaders = res.headers
    this.#upstreamSocket = res.socket ?? undefined
    const selected = res.headers['sec-websocket-protocol']
    this.#selected = selected
    // A 101 that selects none of the offered subprotocols is valid (RFC 6455 §4.2.2: the
    // server "MAY" pick one; §4.1 fails the connection only for one that was not offered), and
    // the client is the one to judge it. ws as a client refuses it ("Server sent no
    // subprotocol"), which made the gateway answer 502: ws checks this header right after
    // emitting 'upgrade', so it is shown one it accepts, and the client is answered with what
    // the backend really chose (#selected: none).
    if (selected === undefined && this.#offered.length > 0) res.headers['sec-websocket-protocol'] = this.#offered[0]
  }

  /** ws is about to write the client's 101 (called back during handleUpgrade). */
  clientHandshakeHeaders(out: string[]): void {
    handshakeHeaders(out, this.#upgradeHeaders, this.#ctx.responseHeaders)
  }

  upstreamOpen(): void {
    const upstream = this.#upstream
    if (this.#done) {
      upstream.terminate()
      return
    }
    const socket = this.#socket
    if (clientLeft(socket)) {
      socket.destroy()
      upstream.terminate()
      this.#finish(499)
      return
    }
    const req = this.#req
    req[kProtocol] = this.#selected || undefined
    req[kPending] = this
    // ws attaches its own reader in handleUpgrade, synchronously: no chunk can fall in between.
    this.#stopReading()
    const early = this.#early
    const head = early === undefined ? this.#head : Buffer.concat([this.#head, ...early])
    try {
      // Synchronous: ws calls back before returning, or refuses (the client half-closed, or its
      // handshake is one checkClientHandshake let through) and destroys the socket without calling back.
      serverFor(this.#route).handleUpgrade(req, socket, head, onClientAccepted)
    } catch (err) {
      this.#ctx.log.error({ err }, 'websocket upgrade failed')
      socket.destroy()
    }
    req[kPending] = undefined
    if (!this.#done) {
      upstream.terminate()
      this.#finish(socket.destroyed ? 499 : 400)
    }
  }

  clientAccepted(client: WebSocket): void {
    if (this.#done) {
      client.terminate()
      return
    }
    const proxy = this.#proxy
    const ctx = this.#ctx
    const bridge = new WsBridge(proxy, this.#route, client, this.#upstream, ctx.id, () => ctx.runCleanups(), { client: this.#socket, upstream: this.#upstreamSocket })
    this.#upstream[kPending] = undefined
    proxy.bridges.add(bridge)
    if (proxy.draining) bridge.goAway()
    this.#finish(101)
  }

  upstreamFailed(err: Error): void {
    if (this.#done) return
    const route = this.#route
    const timeout = /timed? ?out/i.test(err.message)
    const code = timeout ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE'
    this.#proxy.metrics.proxyErrors.labels(route.name, code).inc()
    this.#ctx.log.warn({ err: { message: err.message }, status: this.#refusalStatus }, 'websocket upstream handshake failed')
    // A streamed refusal's head is out (its upstream reset mid-body, or ws's handshake timer
    // fired): a reply written now lands inside that body. The client can only be cut.
    if (this.#refusalStreaming) this.#socket.destroy()
    else writeLocalReply(this.#socket, this.#ctx, errorReply(code, `WebSocket upstream ${route.upstream.name} failed: ${clientDetail(err)}`))
    this.#finish(timeout ? 504 : 502)
  }

  deadlinePassed(ms: number): void {
    this.#deadline = undefined
    if (this.#done) return
    const route = this.#route
    const status = this.#refusalStatus
    const message =
      status === undefined
        ? `WebSocket upstream ${route.upstream.name} did not complete the upgrade handshake within ${ms} ms`
        : `WebSocket upstream ${route.upstream.name} answered the upgrade with ${status} and did not finish that response within ${ms} ms`
    this.#proxy.metrics.proxyErrors.labels(route.name, 'UPSTREAM_TIMEOUT').inc()
    this.#ctx.log.warn({ status }, message)
    // A streamed refusal's head is out: the client can only be cut.
    if (this.#refusalStreaming) this.#socket.destroy()
    else writeLocalReply(this.#socket, this.#ctx, errorReply('UPSTREAM_TIMEOUT', message))
    this.#upstream.terminate()
    this.#finish(504)
  }

  /** Relay the backend's refusal (401, 403, 404 …) as it is, body bounded. Rare: closures are fine. */
  upstreamRefused(upRes: IncomingMessage): void {
    if (this.#done) return
    // An answer whose body trickles on (a 200 from a streaming endpoint) would hold the client
    // forever: the whole answer gets the handshake's time again, once (ws's own timeout is an
    // idle timer, and stops at the head anyway).
    this.#refusalStatus = upRes.statusCode ?? 0
    const ms = handshakeMs(this.#route)
    if (this.#deadline !== undefined) clearTimeout(this.#deadline)
    if (ms !== undefined) this.#deadline = setTimeout(onHandshakeDeadline, ms, this, ms)
    const socket = this.#socket
    const status = upRes.statusCode ?? 502
    // Hop-by-hop headers stop here; the chain's additions (x-request-id) join, as on HTTP.
    const headers = (): string[] => clientResponseHeaders(upRes.headers, this.#ctx.responseHeaders)
    let chunks: Buffer[] | undefined = []
    let size = 0
    // A body up to MAX_REFUSAL_BUFFER is answered whole, with its length. A longer one was cut
    // there and relayed with a Content-Length saying that was all of it (a truncated error page,
    // a JSON error that no longer parses); it is streamed on instead, with backpressure.
    upRes.on('data', (c: Buffer) => {
      if (this.#done) return
      let out = c
      if (chunks !== undefined) {
        chunks.push(c)
        if ((size += c.length) <= MAX_REFUSAL_BUFFER) return
        const length = upRes.headers['content-length']
        socket.write(replyHead(status, headers(), typeof length === 'string' && /^\d+$/.test(length) ? length : undefined))
        out = Buffer.concat(chunks)
        chunks = undefined
        this.#refusalStreaming = true
      }
      if (!socket.write(out)) {
        upRes.pause()
        socket.once('drain', () => upRes.resume())
      }
    })
    upRes.on('end', () => {
      if (this.#done) return
      if (chunks === undefined) endRaw(socket, Buffer.alloc(0))
      else writeReply(socket, status, headers(), Buffer.concat(chunks))
      this.#upstream.terminate()
      this.#finish(status)
    })
    upRes.on('error', ignore)
    // The refusal broke off before its end: nothing sensible to relay.
    upRes.on('close', () => {
      if (this.#done) return
      this.#socket.destroy()
      this.#upstream.terminate()
      this.#finish(502)
    })
  }
}

function ignore(): void {}

/**
 * What the client is told of an upstream handshake failure. A system error's message names the
 * upstream's address ("connect ECONNREFUSED 10.0.4.7:8080", "getaddrinfo ENOTFOUND
 * users.internal"), which the client got in the 502: its code says as much without it, as an
 * HTTP request's 502 says it. ws's own messages (a bad 101) and the connect timer's name none.
 */
function clientDetail(err: Error): string {
  const e = err as NodeJS.ErrnoException
  return e.syscall !== undefined && e.code !== undefined ? e.code : err.message
}

function onHandshakeDeadline(pending: PendingUpgrade, ms: number): void {
  pending.deadlinePassed(ms)
}

function onClientEarlyData(this: Duplex, chunk: Buffer): void {
  ;(this as Duplex & HasPending)[kPending]?.clientData(chunk)
}

/** 'end' and 'close' of the client socket alike. */
function onClientClose(this: Duplex): void {
  ;(this as Duplex & HasPending)[kPending]?.clientGone()
}

function onUpstreamUpgrade(this: WebSocket, res: IncomingMessage): void {
  ;(this as WebSocket & HasPending)[kPending]?.upstreamUpgraded(res)
}

function onClientHandshakeHeaders(headers: string[], req: IncomingMessage): void {
  ;(req as UpgradeRequest)[kPending]?.clientHandshakeHeaders(headers)
}

function onUpstreamOpen(this: WebSocket): void {
  ;(this as WebSocket & HasPending)[kPending]?.upstreamOpen()
}

function onUpstreamError(this: WebSocket, err: Error): void {
  ;(this as WebSocket & HasPending)[kPending]?.upstreamFailed(err)
}

function onUpstreamRefused(this: WebSocket, _req: ClientRequest, res: IncomingMessage): void {
  ;(this as WebSocket & HasPending)[kPending]?.upstreamRefused(res)
}

function onClientAccepted(client: WebSocket, req: IncomingMessage): void {
  const pending = (req as UpgradeRequest)[kPending]
  if (pending === undefined) client.terminate()
  else pending.clientAccepted(client)
}
