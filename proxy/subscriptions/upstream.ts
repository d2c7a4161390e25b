// Connections to upstreams, with the graphql-ws client library: one WebSocket per upstream URL
// and credentials (forwarded headers + init payload), multiplexing every shared stream opened
// with those credentials. The library reconnects with our backoff and resubscribes the active
// operations; we only learn when the connection was lost and when it is back, so streams can
// start a new epoch (or resume, when the backend supports it).
import { validateHeaderName, validateHeaderValue } from 'node:http'
import { CloseCode, createClient, type Client, type ExecutionResult, type Sink, type SubscribePayload } from 'graphql-ws'
import type { Logger } from 'pino'
import WebSocket from 'ws'
import type { HubMetrics } from './metrics.ts'
import { isRawJSON, parseKeepingDigits } from '../../config/json-numbers.ts'
import { graphqlErrors } from './protocols.ts'

export interface UpstreamSettings {
  retryInitialMs: number
  retryMaxMs: number
  connectTimeoutMs: number
  keepAliveMs: number
  /** Largest message accepted from the upstream (the route's websocket.maxMessageBytes). */
  maxMessageBytes: number
  /**
   * The configured upstream's name (an inline route URL is named by itself), the `upstream`
   * label of igw_subscription_upstream_connections as of igw_upstream_healthy. Without it (a
   * pool used on its own) the dialled URL's origin.
   */
  upstream?: string
}

/**
 * The timing settings of `subscriptions.upstream`, read by every pooled connection at each use
 * (see UpstreamPool.configure): a reload that changes them reaches connections already open.
 */
export type UpstreamTimings = Pick<UpstreamSettings, 'retryInitialMs' | 'retryMaxMs' | 'connectTimeoutMs' | 'keepAliveMs'>

export interface UpstreamListener {
  /** The connection dropped; the library is reconnecting. */
  upstreamLost(): void
  /** The connection is back after a drop; the library resubscribes right after this. */
  upstreamRestored(): void
}

/** Delay before reconnect attempt `n` (0-based): exponential with full jitter over the upper half. */
export function backoffMs(n: number, initialMs: number, maxMs: number, random: number): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(n, 20))
  return Math.round(ceiling / 2 + (ceiling / 2) * random)
}

/**
 * Whether graphql-ws's retry question is about the connection: a close event (the socket closed,
 * or the library's own TerminatedCloseEvent), or an error event the socket emitted (refused,
 * reset, handshake timeout). Anything else was thrown by code (serializing a message, a bug):
 * retrying cannot help it.
 */
export function isConnectionFailure(errOrClose: unknown): boolean {
  if (errOrClose === null || typeof errOrClose !== 'object' || errOrClose instanceof Error) return false
  const e = errOrClose as { code?: unknown; reason?: unknown; type?: unknown; target?: unknown }
  if (typeof e.code === 'number' && 'reason' in e) return true
  return e.type === 'error' && e.target instanceof WebSocket
}

/** Close codes graphql-ws gives up on by itself, however shouldRetry answers (1xxx aside). */
const LIBRARY_FINAL = new Set<number>([
  CloseCode.InternalServerError,
  CloseCode.InternalClientError,
  CloseCode.BadRequest,
  CloseCode.BadResponse,
  CloseCode.Unauthorized,
  CloseCode.SubprotocolNotAcceptable,
  CloseCode.SubscriberAlreadyExists,
  CloseCode.TooManyInitialisationRequests,
])
/** The 1xxx closes graphql-ws retries (going away, abnormal, restart, try again later…); it gives up on the others. */
const LIBRARY_RETRIED_1XXX = new Set([1000, 1001, 1005, 1006, 1012, 1013, 1014])

/**
 * Whether a close ends the upstream connection for good: graphql-ws's own fatal codes, and every
 * 44xx. graphql-ws retries 4403 Forbidden (and 44xx it does not know), but a 44xx is the backend
 * refusing these credentials or this client: reconnecting with the same ones cannot change its
 * mind, it only hammers the backend while the operations riding the connection hear nothing.
 * Two stay retried: 4408 (our connection_init came too late — a slow moment passes) and 4499
 * (graphql-ws's own Terminated, a socket that froze). Anything else (1001, 1006, 1012, 1013…)
 * is an outage and reconnects as before.
 */
export function isFinalClose(errOrClose: unknown): boolean {
  if (errOrClose === null || typeof errOrClose !== 'object' || !('reason' in errOrClose)) return false
  const code = (errOrClose as { code?: unknown }).code
  if (typeof code !== 'number') return false
  if (code >= 1000 && code <= 1999) return !LIBRARY_RETRIED_1XXX.has(code)
  if (code >= 4400 && code <= 4499) return code !== CloseCode.ConnectionInitialisationTimeout && code !== 4499
  return LIBRARY_FINAL.has(code)
}

/**
 * Whether the HTTP status an upstream answered our WebSocket handshake with (instead of 101) ends
 * the connection for good: every 4xx — 401/403 refused credentials, 404 no such endpoint, 400/426
 * a request it will never take — but 408 Request Timeout and 429 Too Many Requests, which a later
 * attempt can pass (429 simply keeps our backoff; Retry-After is not read). 5xx (a backend
 * restarting behind its load balancer), 3xx (redirects are not followed) and network errors are
 * outages and are retried as before.
 */
export function isFinalHandshakeStatus(status: number | undefined): boolean {
  return status !== undefined && status >= 400 && status <= 499 && status !== 408 && status !== 429
}

/**
 * Reconnect attempts in a row, after a drop, that reached the upstream (the WebSocket opened) and
 * were closed before connection_ack — with a code graphql-ws retries (1000, 1001, 1012, 4408, its
 * own 4504 ack timeout…) — before the connection gives up and ends its operations. Such an
 * upstream is up and answering, yet refuses (or cannot finish) the graphql-transport-ws
 * handshake: unlike an outage (refused, reset, HTTP 5xx: retried for as long as streams need it),
 * waiting longer does not bring it back, and its clients would wait forever without a word.
 */
export const MAX_HANDSHAKE_FAILURES = 5

/**
 * Drops in a row for a message over the route's maxMessageBytes after which the operations that
 * may have sent it end (see UpstreamConnection.#oversized): a backend that sends its current
 * state on subscribe sends the same oversized message after every resubscribe, and the
 * connection reconnected on backoff forever while those clients heard only epoch gaps.
 */
export const MAX_OVERSIZED_DROPS = 3

type OperationSink = Sink<ExecutionResult<Record<string, unknown>, Record<string, unknown>>>

/**
 * One operation on a connection, as the connection sees it: its sink, guarded so that once the
 * connection failed it (fail) nothing graphql-ws delivers later (its own error or complete after
 * the dispose) reaches the sink a second time.
 */
class Operation implements OperationSink {
  readonly #sink: OperationSink
  #ended = false
  release: () => void = () => {}
  /** Something for it came since the connection was last acknowledged. */
  heard = false
  /** Oversized drops in a row it may have caused (it heard nothing before them). */
  oversized = 0

  constructor(sink: OperationSink) {
    this.#sink = sink
  }

  next(value: ExecutionResult<Record<string, unknown>, Record<string, unknown>>): void {
    this.heard = true
    if (!this.#ended) this.#sink.next(value)
  }

  error(err: unknown): void {
    if (this.#ended) return
    this.#ended = true
    this.#sink.error(err)
  }

  complete(): void {
    if (this.#ended) return
    this.#ended = true
    this.#sink.complete()
  }

  /**
   * Its owner let go of it: nothing more reaches the sink. graphql-ws still calls complete() once
   * the unsubscribe went through, and a stream that moved to another connection (Stream.#rehome)
   * would take that for its own end.
   */
  mute(): void {
    this.#ended = true
  }

  /** The connection gave up: the operation ends with this close, and lets go of the connection. */
  fail(event: unknown): void {
    this.error(event)
    this.release()
  }
}

/**
 * The first header (name) that cannot go on the upstream handshake: a value a client put in its
 * connection_init payload may hold characters HTTP forbids (CR, LF, non-Latin-1), and ws's
 * constructor throws on it synchronously.
 */
export function invalidHeader(headers: Record<string, string>): string | undefined {
  for (const [name, value] of Object.entries(headers)) {
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch {
      return name
    }
  }
  return undefined
}

/**
 * An upstream `error` whose payload is not the GraphQLError[] of PROTOCOL.md, made one: graphql-ws
 * refuses such a message by closing the whole shared connection with 4004 (final), and every
 * stream on it ended with UPSTREAM_UNAVAILABLE for one operation's refusal. Backends send these
 * (Hasura and Ballerina: {"errors": […]}; Spring GraphQL, Ariadne, vert.x: a single error
 * object; an empty list, or entries without a message): the errors they meant reach that
 * operation's clients, the other streams go on.
 */
function conformErrorPayload(msg: { payload?: unknown }): void {
  const p = msg.payload
  if (Array.isArray(p) && p.length > 0 && p.every((e) => e !== null && typeof e === 'object' && typeof (e as { message?: unknown }).message === 'string')) return
  const inner = p !== null && typeof p === 'object' && !Array.isArray(p) && Array.isArray((p as { errors?: unknown }).errors) ? (p as { errors: unknown[] }).errors : undefined
  const list = Array.isArray(p) ? p : inner ?? (p === undefined || p === null ? [] : [p])
  msg.payload = graphqlErrors(list, { message: 'upstream subscription failed', code: 'INTERNAL_SERVER_ERROR' }).errors
}

type MessageHandler = (event: { data: unknown }) => void

/** An upstream `next` for `id` whose payload is no ExecutionResult object (`got`: what it was). */
export type BadEventHandler = (id: string, got: string) => void

/**
 * An upstream `next` whose payload is not an object (5, null, a string, a list): graphql-ws
 * refuses it by closing the whole shared connection with 4004 (final), so every stream on it
 * ended for one operation's bad event (and a list, which graphql-ws lets through, went to
 * clients as broken JSON). It becomes an `error` for that operation alone, as a bad `error`
 * payload does (conformErrorPayload).
 */
function badEventError(msg: { payload?: unknown }): string | undefined {
  const p = msg.payload
  if (p !== null && typeof p === 'object' && !Array.isArray(p) && !isRawJSON(p)) return undefined
  // A number beyond 2^53 is read as a raw JSON value (parseKeepingDigits): a number still.
  const got = p === undefined ? 'none' : p === null ? 'null' : Array.isArray(p) ? 'a list' : typeof p === 'object' ? 'a number' : `a ${typeof p}`
  ;(msg as { type: string }).type = 'error'
  msg.payload = [{ message: `upstream subscription failed: the upstream sent an event without an object payload (got ${got})`, extensions: { code: 'UPSTREAM_UNAVAILABLE' } }]
  return got
}

/**
 * graphql-ws stops listening to an operation's id only a few promise callbacks after its
 * `complete` or `error`; ws emits every message of one read synchronously, so a terminal message
 * followed in the same read by another for that id (an `error` after `complete`, a second
 * `complete`) reached the operation again and released graphql-ws's connection lock twice: with
 * the count at zero it closed the shared socket as idle and completed every other stream on it.
 * After an id's `complete` or `error`, nothing more for that id passes. The message is parsed
 * here, once, and handed on parsed (graphql-ws validates an object as it is); what does not
 * parse goes on as it came, for graphql-ws to refuse.
 */
export function screenEndedOperations(handler: MessageHandler, onBadEvent?: BadEventHandler): MessageHandler {
  // Ids only need remembering until graphql-ws has let go of them: within this turn of the
  // event loop, so the set is emptied on the next.
  const ended = new Set<string>()
  let clearing = false
  const clear = () => {
    ended.clear()
    clearing = false
  }
  return (event) => {
    const data = event.data
    if (typeof data !== 'string') return handler(event)
    let msg: unknown
    try {
      // An integer beyond 2^53 (a 64-bit id) or a non-finite number (1e400) in what the upstream
      // sent: JSON.parse changed it (…993 reads as …992, 1e400 as Infinity, which JSON.stringify
      // writes as null), and the event went to clients — and the log, and Redis — re-serialized
      // with the wrong value. Read with the upstream's digits kept (JSON.rawJSON), as the hub
      // does for what clients send (a cheap text check first: the walk is rare).
      msg = parseKeepingDigits(data)
    } catch {
      return handler(event)
    }
    if (msg !== null && typeof msg === 'object') {
      const { type, id } = msg as { type?: unknown; id?: unknown }
      if (typeof id === 'string' && (type === 'next' || type === 'error' || type === 'complete')) {
        if (ended.has(id)) return
        if (type === 'error') conformErrorPayload(msg as { payload?: unknown })
        else if (type === 'next') {
          const got = badEventError(msg as { payload?: unknown })
          if (got !== undefined) onBadEvent?.(id, got)
        }
        if ((msg as { type: unknown }).type !== 'next') {
          ended.add(id)
          if (!clearing) {
            clearing = true
            setImmediate(clear)
          }
        }
      }
    }
    handler({ data: msg })
  }
}

const BASE_ONMESSAGE = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage')!
const SCREENED_ONMESSAGE: PropertyDescriptor = {
  enumerable: true,
  get(this: WebSocket) {
    return BASE_ONMESSAGE.get!.call(this) as unknown
  },
  set(this: WebSocket, handler: unknown) {
    const socket = this as UpstreamSocket
    BASE_ONMESSAGE.set!.call(this, typeof handler === 'function' ? screenEndedOperations(handler as MessageHandler, (id, got) => socket.badEvent(id, got)) : handler)
  },
}

/**
 * The socket class graphql-ws constructs (through a per-connection subclass that binds the
 * handshake options). It screens what the upstream sends (see screenEndedOperations) and keeps the
 * HTTP status of a handshake the upstream answered with something else than 101: ws emits
 * 'unexpected-response' with the response, and only when nobody listens does it turn it into an
 * 'error' whose sole trace of the status is its message text. Listening means aborting the
 * handshake ourselves (terminate(), ws's own abort: 'error' then 'close' 1006, as before); the
 * status then travels on the socket, which is the `target` of the error and close events
 * graphql-ws hands to shouldRetry, on.closed and every operation's sink.error.
 */
class UpstreamSocket extends WebSocket {
  /** The status of the non-101 answer to the handshake, when there was one. */
  handshakeStatus: number | undefined
  /** Logs an operation ended for a bad event (set by the connection that opens the socket). */
  onBadEvent: BadEventHandler | undefined

  /**
   * An operation ended for a bad event (see badEventError): graphql-ws takes the `error` as the
   * upstream's own end of it and sends no `complete`, so the backend is told to stop it here.
   */
  badEvent(id: string, got: string): void {
    if (this.readyState === WebSocket.OPEN) this.send(JSON.stringify({ id, type: 'complete' }))
    this.onBadEvent?.(id, got)
  }

  constructor(address: string, protocols: string | string[] | undefined, options: WebSocket.ClientOptions) {
    super(address, protocols, options)
    this.on('unexpected-response', (_req, res) => {
      this.handshakeStatus = res.statusCode
      this.terminate()
    })
  }
}
Object.defineProperty(UpstreamSocket.prototype, 'onmessage', SCREENED_ONMESSAGE)

/**
 * The fallback `upstream` label of igw_subscription_upstream_connections (no configured name):
 * the origin (http(s)://host[:port]) of the ws(s):// URL a connection dials. That URL carries the
 * client's upgrade path and query, which must not become label values (unbounded, and a query may
 * hold a token); userinfo never reaches `host`.
 */
export function upstreamLabel(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol.replace(/^ws/, 'http')}//${u.host}`
  } catch {
    return 'invalid'
  }
}

/** The HTTP status the upstream refused a handshake with, from a socket event graphql-ws passes on. */
export function handshakeStatus(errOrClose: unknown): number | undefined {
  if (errOrClose === null || typeof errOrClose !== 'object') return undefined
  const target = (errOrClose as { target?: unknown }).target
  return target instanceof UpstreamSocket ? target.handshakeStatus : undefined
}

export class UpstreamConnection {
  readonly key: string
  readonly url: string
  readonly client: Client
  readonly listeners = new Set<UpstreamListener>()
  #refs = 0
  #everConnected = false
  /**
   * Its streams were told the connection was lost (upstreamLost) and not yet that it is back.
   * graphql-ws's `wasRetry` cannot say it: after a close with 1000 it reconnects without
   * "retrying", and the streams would miss upstreamRestored (no reconnect counted, no resume).
   */
  #lost = false
  #up = false
  #disposed = false
  /** The current socket opened (reached the upstream); cleared when it closes. */
  #opened = false
  /** Consecutive sockets that opened but closed before connection_ack (see MAX_HANDSHAKE_FAILURES). */
  #failedHandshakes = 0
  /** The current socket was dropped for a message over maxMessageBytes (see #oversized). */
  #tooLarge = false
  readonly #maxPayload: number
  /** Operations riding this connection (streams, queries, mutations): what a give-up ends. */
  readonly #ops = new Set<Operation>()
  /**
   * Reconnect attempts since the connection was last healthy: the backoff step. graphql-ws's own
   * count restarts at every connection_ack, so a backend that acknowledges and then drops at once
   * (a crash on the resubscribe, a pod in a crash loop) would be retried every retryInitialMs
   * forever, each time starting a new epoch for every stream. Ours restarts only after a
   * connection stayed up for retryMaxMs (it outlived the longest wait: it was healthy).
   */
  #attempt = 0
  #upSince = 0
  /**
   * A connection closed and no backoff was waited since. graphql-ws reconnects after a close with
   * 1000 (Normal Closure) at once, without asking shouldRetry or calling retryWait: a backend
   * that closes normally right after the ack (draining, or ending every connection it does not
   * like) drew one handshake per round trip, thousands a second, each a new epoch and a gap
   * notice to every client. The next connection attempt then waits the backoff itself (url()).
   */
  #unwaited = false
  /** The acknowledged socket, while up: what the keep-alive watchdog drops. */
  #socket: WebSocket | undefined = undefined
  /*
   * Every instant below (#upSince, #silenceAt, #pingAt, #ackAt, a backoff's start) is read from
   * the monotonic clock: they only measure intervals. With the wall clock a step of the system
   * time (NTP, a VM resumed) re-armed a pending backoff, ping or ack wait at a reload for as long
   * as the step (an hour back: no reconnect for an hour), or fired it at once (forward: a healthy
   * connection dropped as silent).
   */
  /** Armed when a keep-alive ping goes out, cleared by anything received: see #pingSent. */
  #silence: NodeJS.Timeout | undefined = undefined
  #silenceAt = 0
  /**
   * The keep-alive and connection_ack timers are ours, not graphql-ws's (it reads keepAlive and
   * connectionAckWaitTimeout once, when the client is made): each cycle takes the current
   * settings, and a reload re-arms a pending timer from when it was armed (see #retime).
   */
  #ping: NodeJS.Timeout | undefined = undefined
  #pingAt = 0
  #ack: NodeJS.Timeout | undefined = undefined
  #ackAt = 0
  /** The socket that opened and is not closed yet (acknowledged or not): what the ping and ack timers watch. */
  #openSocket: WebSocket | undefined = undefined
  /** The reconnect backoff being waited, so a reload can re-time it. */
  #waiting: { n: number; random: number; start: number; resolve: () => void; timer: NodeJS.Timeout } | undefined = undefined
  readonly #pool: UpstreamPool

  constructor(pool: UpstreamPool, key: string, url: string, headers: Record<string, string>, params: Record<string, unknown> | undefined, s: UpstreamSettings) {
    this.#pool = pool
    this.key = key
    this.url = url
    const maxPayload = s.maxMessageBytes
    this.#maxPayload = maxPayload
    // graphql-ws constructs the socket itself: bind our handshake headers into the class (its
    // base screens what the upstream sends and keeps a refused handshake's status: UpstreamSocket).
    const conn = this
    const openSockets = pool.metrics.upstreamConnections.labels(s.upstream ?? upstreamLabel(url))
    class HeaderedWebSocket extends UpstreamSocket {
      constructor(address: string, protocols?: string | string[]) {
        super(address, protocols, { headers, perMessageDeflate: false, handshakeTimeout: pool.timings.connectTimeoutMs, followRedirects: false, maxPayload })
        // Counted per socket, from its open to its close (ws emits each once): a reconnect wait
        // or a handshake that never opened counts nothing, and no close or dispose path, in any
        // order, can take away more than the socket added.
        this.once('open', () => {
          openSockets.inc()
          this.once('close', () => openSockets.dec())
        })
        this.onBadEvent = (id, got) =>
          pool.logger.warn({ upstream: url, operation: id, payload: got }, 'upstream sent an event without an object payload; ending that operation with UPSTREAM_UNAVAILABLE')
        // Disposed while a reconnect waited its backoff in url(): graphql-ws opens the socket
        // anyway; abort the handshake (error + close 1006 on the next tick, as for a refusal).
        if (conn.#disposed) this.terminate()
      }
    }
    const wait = (resolve: () => void) => this.#wait(resolve)
    this.client = createClient({
      // Never rejects: graphql-ws awaits it where a rejection would go unhandled.
      url: () => {
        if (!this.#unwaited) return url
        this.#unwaited = false
        return new Promise<string>((resolve) => wait(() => resolve(url)))
      },
      webSocketImpl: HeaderedWebSocket,
      connectionParams: params,
      lazy: true,
      lazyCloseTimeout: 0,
      // Both ours (#armPing, #armAck): graphql-ws would keep the values of the config it was made with.
      keepAlive: 0,
      connectionAckWaitTimeout: 0,
      retryAttempts: Number.POSITIVE_INFINITY,
      // A backend that was never reachable fails the subscribe at once (the client gets an
      // error); one that dropped after working is retried for as long as streams need it.
      // Only the connection failing is retried: the library also asks about errors thrown while
      // sending on a live socket (a payload JSON.stringify cannot serialize), and retrying one of
      // those re-sends on the same socket at once, throws again, and spins the worker forever.
      // A final close (isFinalClose) is not retried either, nor a handshake the upstream refused
      // with a final HTTP status (isFinalHandshakeStatus: 401, 403, 404…): graphql-ws then fails
      // every operation with the close or error event, as it does for its own fatal codes.
      shouldRetry: (errOrClose) =>
        this.#everConnected && !this.#disposed && isConnectionFailure(errOrClose) && !isFinalClose(errOrClose) && !isFinalHandshakeStatus(handshakeStatus(errOrClose)),
      retryWait: () => {
        this.#unwaited = false
        return new Promise<void>(wait)
      },
      on: {
        opened: (socket) => {
          this.#opened = true
          this.#openSocket = socket as WebSocket
          this.#armAck()
          this.#armPing()
        },
        connected: (socket) => {
          this.#socket = socket as WebSocket
          this.#clearAck()
          this.#connected()
        },
        closed: (event) => this.#closed(event),
        pong: (received) => {
          // graphql-ws's own cycle: the next ping keepAliveMs after a pong.
          if (received) this.#armPing()
        },
        message: () => {
          if (this.#silence !== undefined) this.#heard()
        },
        error: (err) => {
          // A message over the route's maxMessageBytes: ws drops the connection mid-frame (which
          // operation it was for cannot be read). Its streams reconnect with an epoch gap, as
          // after any drop; without this line the operator saw only "connection lost", no cause.
          if ((err as { error?: { code?: unknown } } | null)?.error?.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
            this.#tooLarge = true
            pool.logger.warn({ upstream: url, maxMessageBytes: maxPayload, streams: this.listeners.size }, 'upstream sent a message over the route\'s websocket.maxMessageBytes; dropping the connection')
            return
          }
          pool.logger.debug({ err: { message: (err as Error)?.message ?? String(err) }, status: handshakeStatus(err), upstream: url }, 'upstream websocket error')
        },
      },
    })
  }

  get up(): boolean {
    return this.#up
  }

  /**
   * A stream moves here because the connection it rode dropped (see Stream: it follows the
   * credentials of a subscriber still attached). The upstream worked a moment ago: a connection
   * not yet up is retried like one that was (a backend still restarting is an outage, not a
   * refusal), and its streams hear when it is up (upstreamRestored).
   */
  adoptAfterDrop(): void {
    if (this.#disposed || this.#up || this.#everConnected) return
    this.#everConnected = true
    this.#lost = true
  }

  subscribe(payload: SubscribePayload, sink: OperationSink): () => void {
    this.#refs++
    const op = new Operation(sink)
    this.#ops.add(op)
    const unsubscribe = this.client.subscribe(payload, op)
    let released = false
    op.release = () => {
      if (released) return
      released = true
      op.mute()
      this.#ops.delete(op)
      unsubscribe()
      this.#release()
    }
    return op.release
  }

  #release(): void {
    if (--this.#refs > 0) return
    this.dispose()
  }

  /**
   * A keep-alive ping went out. graphql-ws only sends them: an upstream that stops answering
   * without closing (a frozen process whose kernel keeps the TCP connection, a middlebox holding
   * a dead peer's connection) would hold every stream on it "live" forever while their clients
   * hear nothing. When nothing at all (pong, event…) comes back within max(keepAliveMs,
   * connectTimeoutMs), the socket is dropped: an outage like any other (reconnect with backoff —
   * behind a load balancer, to a healthy replica —, resubscribe, a new epoch).
   */
  #pingSent(): void {
    const socket = this.#socket
    // Before the ack, connectionAckWaitTimeout watches the upstream.
    if (this.#silence !== undefined || socket === undefined) return
    this.#silenceAt = performance.now()
    this.#armSilence(socket, this.#silenceMs())
  }

  #silenceMs(): number {
    const t = this.#pool.timings
    return Math.max(t.keepAliveMs, t.connectTimeoutMs)
  }

  #armSilence(socket: WebSocket, ms: number): void {
    clearTimeout(this.#silence)
    this.#silence = setTimeout(() => {
      this.#silence = undefined
      if (this.#disposed || socket !== this.#socket || socket.readyState !== WebSocket.OPEN) return
      this.#pool.logger.warn({ upstream: this.url, silentMs: Math.round(performance.now() - this.#silenceAt), streams: this.listeners.size }, 'upstream did not answer a keep-alive ping: dropping the connection')
      socket.terminate()
    }, ms)
    this.#silence.unref()
  }

  /** The next keep-alive ping, keepAliveMs from now (as graphql-ws: after the open, then after each pong). */
  #armPing(): void {
    clearTimeout(this.#ping)
    this.#ping = undefined
    const socket = this.#openSocket
    const ms = this.#pool.timings.keepAliveMs
    if (socket === undefined || this.#disposed || !(ms > 0) || !Number.isFinite(ms)) return
    this.#pingAt = performance.now()
    this.#schedulePing(socket, ms)
  }

  #schedulePing(socket: WebSocket, ms: number): void {
    this.#ping = setTimeout(() => {
      this.#ping = undefined
      if (this.#disposed || socket !== this.#openSocket || socket.readyState !== WebSocket.OPEN) return
      socket.send('{"type":"ping"}')
      this.#pingSent()
    }, ms)
    this.#ping.unref()
  }

  /** connection_ack must come within connectTimeoutMs of the open (graphql-ws's 4504 close, retried). */
  #armAck(): void {
    this.#clearAck()
    const socket = this.#openSocket
    const ms = this.#pool.timings.connectTimeoutMs
    if (socket === undefined || !(ms > 0) || !Number.isFinite(ms)) return
    this.#ackAt = performance.now()
    this.#scheduleAck(socket, ms)
  }

  #scheduleAck(socket: WebSocket, ms: number): void {
    this.#ack = setTimeout(() => {
      this.#ack = undefined
      if (socket !== this.#openSocket || this.#socket === socket || socket.readyState !== WebSocket.OPEN) return
      socket.close(CloseCode.ConnectionAcknowledgementTimeout, 'Connection acknowledgement timeout')
    }, ms)
    this.#ack.unref()
  }

  #clearAck(): void {
    clearTimeout(this.#ack)
    this.#ack = undefined
  }

  /** Reconnect attempt backoff, with the current retry settings. Unref'd: it must not hold a worker thread that is shutting down. */
  #wait(resolve: () => void): void {
    const t = this.#pool.timings
    const n = this.#attempt++
    const random = Math.random()
    const w = { n, random, start: performance.now(), resolve, timer: undefined as unknown as NodeJS.Timeout }
    const done = (): void => {
      if (this.#waiting === w) this.#waiting = undefined
      resolve()
    }
    w.resolve = done
    w.timer = setTimeout(done, backoffMs(n, t.retryInitialMs, t.retryMaxMs, random))
    w.timer.unref()
    this.#waiting = w
  }

  /**
   * The pool's timings changed (a reload): timers already running are re-armed as if they had
   * been armed with the new values — a ping or ack wait, the silence after a ping, a backoff wait
   * (same jitter) — so a shorter value applies now and a longer one extends the current wait;
   * every later cycle reads the new values anyway.
   */
  retime(): void {
    if (this.#disposed) return
    const t = this.#pool.timings
    const now = performance.now()
    const socket = this.#openSocket
    if (socket !== undefined) {
      if (this.#ping !== undefined) {
        clearTimeout(this.#ping)
        this.#ping = undefined
        if (t.keepAliveMs > 0 && Number.isFinite(t.keepAliveMs)) this.#schedulePing(socket, Math.max(0, this.#pingAt + t.keepAliveMs - now))
      } else if (this.#silence === undefined) this.#armPing() // keep-alive was off (or just answered): start a cycle
      if (this.#ack !== undefined) {
        this.#clearAck()
        if (t.connectTimeoutMs > 0 && Number.isFinite(t.connectTimeoutMs)) this.#scheduleAck(socket, Math.max(0, this.#ackAt + t.connectTimeoutMs - now))
      }
    }
    if (this.#silence !== undefined && this.#socket !== undefined) {
      if (t.keepAliveMs > 0) this.#armSilence(this.#socket, Math.max(0, this.#silenceAt + this.#silenceMs() - now))
      else this.#heard()
    }
    const w = this.#waiting
    if (w !== undefined) {
      clearTimeout(w.timer)
      w.timer = setTimeout(w.resolve, Math.max(0, w.start + backoffMs(w.n, t.retryInitialMs, t.retryMaxMs, w.random) - now))
      w.timer.unref()
    }
  }

  #heard(): void {
    clearTimeout(this.#silence)
    this.#silence = undefined
  }

  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.#heard()
    clearTimeout(this.#ping)
    this.#ping = undefined
    this.#clearAck()
    this.#pool.forget(this)
    // graphql-ws's dispose awaits a connection still being opened and rejects when that opening
    // fails (refused, handshake timeout): unhandled, that rejection would end the worker thread
    // and every connection on it. Nobody needs this connection any more; the failure is news to
    // no one.
    Promise.resolve(this.client.dispose()).catch((err: unknown) => {
      this.#pool.logger.debug({ upstream: this.url, err: { message: (err as Error)?.message ?? String(err) } }, 'upstream connection failed to open after its last operation ended')
    })
  }

  #connected(): void {
    this.#failedHandshakes = 0
    this.#up = true
    this.#upSince = performance.now()
    const restored = this.#lost
    this.#lost = false
    this.#everConnected = true
    for (const op of this.#ops) op.heard = false
    if (!restored) return
    this.#pool.metrics.upstreamReconnects.inc()
    this.#pool.logger.info({ upstream: this.url, streams: this.listeners.size }, 'upstream subscription connection restored')
    for (const l of this.listeners) l.upstreamRestored()
  }

  #closed(event: unknown): void {
    const was = this.#up
    const opened = this.#opened
    const tooLarge = this.#tooLarge
    this.#tooLarge = false
    this.#opened = false
    this.#up = false
    this.#unwaited = true
    this.#socket = undefined
    this.#openSocket = undefined
    this.#heard()
    clearTimeout(this.#ping)
    this.#ping = undefined
    this.#clearAck()
    if (was && performance.now() - this.#upSince >= this.#pool.timings.retryMaxMs) this.#attempt = 0
    if (this.#disposed) return
    const status = handshakeStatus(event)
    if (isFinalHandshakeStatus(status)) {
      // The close (1006) after a handshake refused with a final status: as below, graphql-ws fails
      // every operation next (with the error event, which names the status) and nothing reconnects.
      // On a first connect too — nothing would have retried it, but it is just as final.
      this.#pool.forget(this)
      this.#pool.metrics.upstreamFinalCloses.labels(`http_${status}`).inc()
      this.#pool.logger.warn(
        { upstream: this.url, status, streams: this.listeners.size, afterDrop: this.#everConnected },
        'upstream refused the subscription connection handshake with a final HTTP status; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE',
      )
      return
    }
    if (isFinalClose(event)) {
      // graphql-ws fails every operation on it next (sink.error with this event); their streams
      // close and this connection goes with its last one. Subscribes from now on open a new one.
      const { code, reason } = event as { code: number; reason: unknown }
      this.#pool.forget(this)
      this.#pool.metrics.upstreamFinalCloses.labels(String(code)).inc()
      this.#pool.logger.warn({ upstream: this.url, code, reason: String(reason), streams: this.listeners.size, wasUp: was }, 'upstream subscription connection closed with a final code; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE')
      return
    }
    if (!was) {
      if (opened) this.#handshakeFailed(event)
      return
    }
    this.#oversized(tooLarge)
    if (this.#disposed) return
    this.#pool.logger.warn({ upstream: this.url, streams: this.listeners.size }, 'upstream subscription connection lost; reconnecting')
    this.#lost = true
    for (const l of this.listeners) l.upstreamLost()
  }

  /**
   * An acknowledged connection dropped; `tooLarge`: for a message over maxMessageBytes, whose
   * operation cannot be read (ws drops the connection on the frame's header). The suspects are the
   * operations that heard nothing since the connection was acknowledged (all of them when every
   * one did); an operation suspected MAX_OVERSIZED_DROPS drops in a row ends with an error naming
   * the limit, counted, instead of reconnecting with it forever. Any other drop clears the count.
   */
  #oversized(tooLarge: boolean): void {
    if (!tooLarge) {
      for (const op of this.#ops) op.oversized = 0
      return
    }
    let anySilent = false
    for (const op of this.#ops) anySilent ||= !op.heard
    const ended: Operation[] = []
    for (const op of this.#ops) {
      if (anySilent && op.heard) op.oversized = 0
      else if (++op.oversized >= MAX_OVERSIZED_DROPS) ended.push(op)
    }
    if (ended.length === 0) return
    this.#pool.metrics.upstreamOversized.inc(ended.length)
    this.#pool.logger.warn(
      { upstream: this.url, maxMessageBytes: this.#maxPayload, drops: MAX_OVERSIZED_DROPS, operations: ended.length },
      'upstream sent a message over the route\'s websocket.maxMessageBytes on every reconnect; ending the operations that may have sent it',
    )
    const errors = [
      {
        message: `upstream subscription failed: the upstream sent a message over the route's websocket.maxMessageBytes (${this.#maxPayload} bytes) ${MAX_OVERSIZED_DROPS} times in a row`,
        extensions: { code: 'UPSTREAM_UNAVAILABLE' },
      },
    ]
    for (const op of ended) op.fail(errors)
  }

  /**
   * A socket reached the upstream and closed before connection_ack, with a code graphql-ws
   * retries (final ones returned above). On a first connection that ends it at once: graphql-ws
   * would fail the operations itself (shouldRetry: never reachable) — but not after a close with
   * 1000, which it reconnects at once without asking, forever, while the subscribe never hears
   * back. After a drop it retries them all; MAX_HANDSHAKE_FAILURES in a row end it. The
   * operations end here with UPSTREAM_UNAVAILABLE naming the close (sink.error, as graphql-ws
   * would), it is logged and counted like a final close, the connection is forgotten (the next
   * subscribe opens a new one) and it goes with its last operation.
   */
  #handshakeFailed(event: unknown): void {
    const n = ++this.#failedHandshakes
    if (this.#everConnected && n < MAX_HANDSHAKE_FAILURES) return
    const code = (event as { code?: unknown } | null)?.code
    const reason = (event as { reason?: unknown }).reason
    this.#pool.forget(this)
    this.#pool.metrics.upstreamFinalCloses.labels(String(code)).inc()
    this.#pool.logger.warn(
      { upstream: this.url, code, reason: String(reason ?? ''), attempts: n, streams: this.listeners.size, operations: this.#ops.size, afterDrop: this.#everConnected },
      'upstream closed the subscription connection before acknowledging it; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE',
    )
    for (const op of [...this.#ops]) op.fail(event)
  }
}

export class UpstreamPool {
  readonly #conns = new Map<string, UpstreamConnection>()
  readonly metrics: HubMetrics
  readonly logger: Logger
  /** The current `subscriptions.upstream` timings: every connection of the pool reads them at each use. */
  #timings: UpstreamTimings = { retryInitialMs: 1_000, retryMaxMs: 30_000, connectTimeoutMs: 10_000, keepAliveMs: 0 }

  constructor(metrics: HubMetrics, logger: Logger) {
    this.metrics = metrics
    this.logger = logger
  }

  get size(): number {
    return this.#conns.size
  }

  get timings(): UpstreamTimings {
    return this.#timings
  }

  /**
   * The `subscriptions.upstream` timings of the current config. Connections already pooled take
   * them too (a reload that shortens the ack timeout or the ping interval is not only for new
   * connections): see UpstreamConnection.retime. get() passes them on every call.
   */
  configure(s: UpstreamTimings): void {
    const t = this.#timings
    if (t.retryInitialMs === s.retryInitialMs && t.retryMaxMs === s.retryMaxMs && t.connectTimeoutMs === s.connectTimeoutMs && t.keepAliveMs === s.keepAliveMs) return
    this.#timings = { retryInitialMs: s.retryInitialMs, retryMaxMs: s.retryMaxMs, connectTimeoutMs: s.connectTimeoutMs, keepAliveMs: s.keepAliveMs }
    for (const c of this.#conns.values()) c.retime()
  }

  get(key: string, url: string, headers: Record<string, string>, params: Record<string, unknown> | undefined, s: UpstreamSettings): UpstreamConnection {
    this.configure(s)
    let c = this.#conns.get(key)
    if (c === undefined) {
      c = new UpstreamConnection(this, key, url, headers, params, s)
      this.#conns.set(key, c)
    }
    return c
  }

  forget(c: UpstreamConnection): void {
    if (this.#conns.get(c.key) === c) this.#conns.delete(c.key)
  }

  closeAll(): void {
    for (const c of [...this.#conns.values()]) c.dispose()
  }
}
