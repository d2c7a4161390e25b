// WebSocket passthrough. The upstream handshake happens first, so the client is accepted with
// exactly the subprotocol the backend chose (or refused with the backend's own answer). Then
// frames are relayed both ways: messages, pings/pongs (nobody auto-answers here, the real
// endpoints do), close codes and reasons, with backpressure in each direction.
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import WebSocket, { WebSocketServer, type RawData } from 'ws'
import { runRequestChain } from './chain.ts'
import { RequestContext } from './context.ts'
import { rawHttpError, type LocalReply } from './errors.ts'
import { upstreamRequestHeaders } from './headers.ts'
import type { RouteRuntime, Snapshot } from './runtime.ts'
import type { WorkerProxy } from './worker-proxy.ts'

const kProtocol = Symbol('igw.ws.protocol')
type UpgradeRequest = IncomingMessage & { [kProtocol]?: string }

/**
 * The upgrade socket's 'error' listener, attached before anything can write to it. Node hands
 * the socket to 'upgrade' with no listener of its own, so a refusal written after the client
 * reset the connection (EPIPE, ECONNRESET) would otherwise be an uncaught exception that takes
 * the worker thread and every connection on it down.
 */
export function destroyOnSocketError(this: Duplex): void {
  this.destroy()
}

// Handshake headers the ws client writes itself; the client's values must not be relayed.
const WS_HANDSHAKE = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept'])

const servers = new WeakMap<RouteRuntime, WebSocketServer>()

function serverFor(route: RouteRuntime): WebSocketServer {
  let wss = servers.get(route)
  if (wss === undefined) {
    wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      autoPong: false,
      maxPayload: route.websocket.maxMessageBytes,
      clientTracking: false,
      handleProtocols: (_protocols, req: UpgradeRequest) => req[kProtocol] ?? false,
    })
    servers.set(route, wss)
  }
  return wss
}

function writeReply(socket: Duplex, reply: LocalReply): void {
  const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body
  let head = `HTTP/1.1 ${reply.status} ${reply.status === 200 ? 'OK' : 'Error'}\r\nconnection: close\r\ncontent-length: ${body.length}\r\n`
  for (const [k, v] of Object.entries(reply.headers ?? {})) {
    if (k === 'content-length' || k === 'connection') continue
    for (const one of Array.isArray(v) ? v : [v]) head += `${k}: ${one}\r\n`
  }
  socket.end(Buffer.concat([Buffer.from(`${head}\r\n`), body]))
}

/** Sendable close codes (RFC 6455 §7.4): the rest (1005, 1006, 1015, …) are never put on the wire. */
function sendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
}

export class WsBridge {
  readonly client: WebSocket
  readonly upstream: WebSocket
  readonly #proxy: WorkerProxy
  readonly #route: RouteRuntime
  readonly #bound: number

  constructor(proxy: WorkerProxy, route: RouteRuntime, client: WebSocket, upstream: WebSocket) {
    this.#proxy = proxy
    this.#route = route
    this.client = client
    this.upstream = upstream
    this.#bound = route.websocket.maxBufferedBytes
    const metrics = proxy.metrics
    metrics.wsConnections.labels(route.name).inc()
    const up = metrics.wsMessages.labels('client_to_upstream')
    const down = metrics.wsMessages.labels('upstream_to_client')
    client.on('message', (data: RawData, isBinary: boolean) => {
      up.inc()
      this.#relay(client, upstream, data, isBinary)
    })
    upstream.on('message', (data: RawData, isBinary: boolean) => {
      down.inc()
      this.#relay(upstream, client, data, isBinary)
    })
    client.on('ping', (d) => upstream.readyState === WebSocket.OPEN && upstream.ping(d))
    client.on('pong', (d) => upstream.readyState === WebSocket.OPEN && upstream.pong(d))
    upstream.on('ping', (d) => client.readyState === WebSocket.OPEN && client.ping(d))
    upstream.on('pong', (d) => client.readyState === WebSocket.OPEN && client.pong(d))
    client.on('close', (code, reason) => this.#closed(upstream, code, reason))
    upstream.on('close', (code, reason) => this.#closed(client, code, reason))
    client.on('error', (err) => this.#failed('client', upstream, err))
    upstream.on('error', (err) => this.#failed('upstream', client, err))
  }

  #relay(from: WebSocket, to: WebSocket, data: RawData, isBinary: boolean): void {
    if (to.readyState !== WebSocket.OPEN) return
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength
    if (to.bufferedAmount + size <= this.#bound) {
      to.send(data, { binary: isBinary })
      return
    }
    // Over the bound: stop reading the sender until this message (and all before it) is flushed.
    from.pause()
    to.send(data, { binary: isBinary }, () => {
      if (from.readyState === WebSocket.OPEN) from.resume()
    })
  }

  #closed(other: WebSocket, code: number, reason: Buffer): void {
    if (other.readyState === WebSocket.CLOSED || other.readyState === WebSocket.CLOSING) {
      this.#done()
      return
    }
    if (sendableCloseCode(code)) other.close(code, reason)
    else if (code === 1005) other.close()
    else other.terminate() // 1006: the peer vanished without a close frame; do the same
    this.#done()
  }

  #failed(side: string, other: WebSocket, err: Error): void {
    this.#proxy.logger.debug({ err: { message: err.message }, side, route: this.#route.name }, 'websocket error')
    if (other.readyState === WebSocket.OPEN || other.readyState === WebSocket.CONNECTING) other.terminate()
  }

  #counted = true
  #done(): void {
    if (!this.#counted) return
    this.#counted = false
    this.#proxy.metrics.wsConnections.labels(this.#route.name).dec()
    this.#proxy.bridges.delete(this)
  }

  /** Shutdown: both sides get 1001 Going Away. */
  goAway(): void {
    for (const ws of [this.client, this.upstream]) {
      if (ws.readyState === WebSocket.OPEN) ws.close(1001, 'gateway shutting down')
    }
  }

  /** Drain deadline passed: cut without waiting for the close handshake. */
  terminate(): void {
    this.client.terminate()
    this.upstream.terminate()
  }
}

export async function handleUpgrade(proxy: WorkerProxy, snapshot: Snapshot, route: RouteRuntime, req: UpgradeRequest, socket: Duplex, head: Buffer): Promise<void> {
  const start = performance.now()
  if (!route.websocket.enabled || (req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
    socket.end(rawHttpError('BAD_REQUEST', 'WebSocket upgrades are not enabled on this route'))
    proxy.finishUpgradeRaw(req)
    return
  }
  // Check the client's handshake before opening anything upstream, so a bad one costs nothing.
  const key = req.headers['sec-websocket-key']
  if (req.method !== 'GET' || key === undefined || !/^[+/0-9A-Za-z]{22}==$/.test(key) || req.headers['sec-websocket-version'] !== '13') {
    socket.end(rawHttpError('BAD_REQUEST', 'invalid WebSocket handshake (needs GET, Sec-WebSocket-Key and Sec-WebSocket-Version: 13)'))
    proxy.finishUpgradeRaw(req)
    return
  }
  const incoming = req.headers['x-request-id']
  const ctx = new RequestContext(req, undefined, route, proxy.logger, start, typeof incoming === 'string' ? incoming : '')
  const reply = await runRequestChain(ctx, route, proxy.metrics)
  if (reply !== undefined) {
    writeReply(socket, reply)
    proxy.finishUpgrade(ctx, reply.status)
    return
  }
  if (socket.destroyed) {
    proxy.finishUpgrade(ctx, 499) // the client left while the chain ran
    return
  }
  const headers: Record<string, string> = {}
  const flat = upstreamRequestHeaders(ctx, { trustIncoming: proxy.trustForwarded, hostRewrite: route.hostRewrite, upstreamHost: route.upstream.authority, contentLength: undefined })
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!.toLowerCase()
    if (!WS_HANDSHAKE.has(name)) headers[name] = headers[name] === undefined ? flat[i + 1]! : `${headers[name]}, ${flat[i + 1]!}`
  }
  const protocols = (req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
  const target = `${route.upstream.origin.replace(/^http/, 'ws')}${ctx.url}`
  const upstream = new WebSocket(target, protocols, {
    headers,
    perMessageDeflate: false,
    autoPong: false,
    followRedirects: false,
    maxPayload: route.websocket.maxMessageBytes,
    handshakeTimeout: route.timeouts.headersMs || undefined,
  })
  let settled = false
  const onClientGone = () => {
    if (!settled) {
      settled = true
      upstream.terminate()
      proxy.finishUpgrade(ctx, 499)
    }
  }
  socket.once('close', onClientGone)
  upstream.once('unexpected-response', (_r, upRes) => {
    if (settled) return
    settled = true
    // Relay the backend's refusal (401, 403, 404 …) as it is, body bounded.
    const chunks: Buffer[] = []
    let size = 0
    upRes.on('data', (c: Buffer) => {
      if ((size += c.length) <= 64 * 1024) chunks.push(c)
    })
    upRes.on('end', () => {
      const hdrs: Record<string, string | string[]> = {}
      for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined && k !== 'transfer-encoding' && k !== 'connection') hdrs[k] = v
      writeReply(socket, { status: upRes.statusCode ?? 502, headers: hdrs, body: Buffer.concat(chunks) })
      proxy.finishUpgrade(ctx, upRes.statusCode ?? 502)
    })
    upRes.on('error', () => socket.destroy())
  })
  upstream.once('error', (err) => {
    if (settled) return
    settled = true
    const timeout = /timed? ?out/i.test(err.message)
    const code = timeout ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE'
    proxy.metrics.proxyErrors.labels(route.name, code).inc()
    ctx.log.warn({ err: { message: err.message } }, 'websocket upstream handshake failed')
    socket.end(rawHttpError(code, `WebSocket upstream ${route.upstream.name} failed: ${err.message}`))
    proxy.finishUpgrade(ctx, timeout ? 504 : 502)
  })
  upstream.once('open', () => {
    if (settled) {
      upstream.terminate()
      return
    }
    settled = true
    socket.removeListener('close', onClientGone)
    if (socket.destroyed) {
      upstream.terminate()
      proxy.finishUpgrade(ctx, 499)
      return
    }
    req[kProtocol] = upstream.protocol || undefined
    serverFor(route).handleUpgrade(req, socket, head, (client) => {
      const bridge = new WsBridge(proxy, route, client, upstream)
      proxy.bridges.add(bridge)
      if (proxy.draining) bridge.goAway()
      proxy.finishUpgrade(ctx, 101)
    })
  })
}
