// One HTTP request through the proxy: route → (bounded body read) → request phase → undici
// dispatch → response phase → client. The Exchange is also the undici dispatch handler, so a
// request allocates one object of ours, and event listeners are prebuilt functions that find
// it through a symbol (no closures per request).
import { maxHeaderSize, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream'
import type { Dispatcher } from 'undici'
import { filterDue, filterMissedDeadline, noteMalformedReply } from './chain.ts'
import { RequestContext } from './context.ts'
import { acceptsOnlyEventStream, errorReply, eventStreamErrorBody, isOwnJsonType, negotiateErrorType, replyProblem, ResponseCut, type ErrorCode, type LocalReply } from './errors.ts'
import type { ResponseInfo } from './filter.ts'
import { GraphQLBatch, GraphQLRequestError, parseGetParams, parsePostBody, postSearchConflict } from './graphql-request.ts'
import { acceptsTrailers, applyAddedHeaders, charsetOf, chunkedOnly, clientResponseHeaders, dropContentLength, flattenHeaders, relayableTrailers, responseHeaderObject, routeIncomingRequestId, upstreamRequestHeaders } from './headers.ts'
import type { RouteRuntime, Snapshot, UpstreamRuntime } from './runtime.ts'
import { bodyStillComing, lingeringClose } from './linger.ts'
import { LogWindow } from './log.ts'
import { relayed } from './stream-gc.ts'
import type { WorkerProxy } from './worker-proxy.ts'

const kExchange = Symbol('igw.exchange')
type WithExchange = { [kExchange]?: Exchange }
/** On a client socket the response watch cut (#responseStalled): what the responses queued behind that one died of. */
const kReadStalled = Symbol('igw.readStalled')
type StallMarked = Socket & { [kReadStalled]?: true }

// Where an exchange is; plain numbers (not an enum) so Node can strip the types.
const Phase = {
  Request: 0, // reading the body / running request filters
  Dispatched: 1, // waiting for upstream headers
  ResponsePhase: 2, // response filters running (async), upstream chunks are held
  Direct: 3, // streaming upstream chunks straight to the client
  Stream: 4, // streaming through a body a filter read or replaced
  Done: 5,
  Relay: 6, // as Direct, for a subscription stream (SSE, multipart): its framing tracked for a drain (#relaySubscription)
} as const
type Phase = (typeof Phase)[keyof typeof Phase]

/** The error the proxy raises itself to cut an exchange short. */
class ProxyAbort extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string) {
    super(message)
    this.code = code
  }
}

class ClientGone extends Error {
  constructor() {
    super('client closed the connection')
  }
}

// --- prebuilt listeners -------------------------------------------------------------------

function onResClose(this: ServerResponse & WithExchange): void {
  this[kExchange]?.clientClosed()
}
function onResDrain(this: ServerResponse & WithExchange): void {
  this[kExchange]?.controller?.resume()
}
function onBodyData(this: IncomingMessage & WithExchange, chunk: Buffer): void {
  this[kExchange]?.bodyChunk(chunk)
}
function onBodyEnd(this: IncomingMessage & WithExchange): void {
  this[kExchange]?.bodyEnd()
}
function onBodyError(this: IncomingMessage & WithExchange): void {
  // The client went away mid-upload; res 'close' does the bookkeeping.
}
function onUploadData(chunk: Buffer): void {
  relayed(chunk.length)
}
function onUploadEnd(this: IncomingMessage & WithExchange): void {
  this[kExchange]?.uploadSent()
}
function onTimer(ex: Exchange): void {
  ex.timerFired()
}
function retryDispatch(ex: Exchange, sent: Dispatcher.DispatchOptions): void {
  // (answered meanwhile: the client left, or a timeout fired)
  if (ex.phase === Phase.Dispatched) ex.route.upstream.pool.dispatch(sent, ex)
}

/** Counts streamed request bytes when the client did not declare a length (chunked). */
class BodyLimit extends Transform {
  #left: number
  constructor(limit: number) {
    super()
    this.#left = limit
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#left -= chunk.length
    relayed(chunk.length)
    if (this.#left < 0) cb(new ProxyAbort('PAYLOAD_TOO_LARGE', 'request body exceeds the route limit'))
    else cb(null, chunk)
  }
}

/** The upstream body as a stream, made only when a response filter reads or replaces it. */
class UpstreamBody extends Readable {
  readonly #ex: Exchange
  constructor(ex: Exchange) {
    super({ highWaterMark: 64 * 1024 })
    this.#ex = ex
  }
  /** How often the filter reading this asked for more: its progress, for the stall watch (#responseStalled). */
  reads = 0
  override _read(): void {
    this.reads++
    this.#ex.controller?.resume()
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.readableEnded) {
      // destroy() without an error: a filter stopped reading on purpose (a DLP block, a
      // cache bypass); the upstream transfer stops quietly. With an error it is a failure.
      if (err === null) this.#ex.discardUpstreamBody()
      else this.#ex.controller?.abort(err)
    }
    cb(err)
  }
}

/**
 * "upstream request failed" (no head came) and "upstream failed mid-response" (the head went out,
 * the body was cut), each at most once per UPSTREAM_FAILED_LOG_MS per upstream and failure (its
 * message), with how many were held back since (`alsoFailed`). An outage fails every request the
 * same way — an upstream that dies under 500 open streams cuts 500 at once — and each already has
 * its access line with the code and is counted (igw_proxy_errors_total): a warn line each doubled
 * the log volume (1,460 lines in 3.5 s in a chaos test). A new failure is logged at once. Per
 * worker thread, by upstream (its pool); at most UPSTREAM_FAILED_KINDS failures tracked per
 * upstream (the oldest forgotten).
 */
const UPSTREAM_FAILED_LOG_MS = 5_000
const UPSTREAM_FAILED_KINDS = 16
const upstreamFailedLogs = new WeakMap<UpstreamRuntime['pool'], Map<string, LogWindow>>()
type UpstreamFailure = 'upstream request failed' | 'upstream failed mid-response'
function logUpstreamFailed(ctx: RequestContext, upstream: UpstreamRuntime, err: { message: string; code: string | undefined }, msg: UpstreamFailure = 'upstream request failed'): void {
  let windows = upstreamFailedLogs.get(upstream.pool)
  if (windows === undefined) upstreamFailedLogs.set(upstream.pool, (windows = new Map()))
  const kind = `${msg}\n${err.code ?? ''} ${err.message}`
  let window = windows.get(kind)
  if (window === undefined) {
    if (windows.size >= UPSTREAM_FAILED_KINDS) windows.delete(windows.keys().next().value!)
    windows.set(kind, (window = new LogWindow(UPSTREAM_FAILED_LOG_MS)))
  }
  const held = window.take()
  if (held === undefined) return
  ctx.log.warn({ err, upstream: upstream.name, ...(held > 0 ? { alsoFailed: held } : {}) }, msg)
}

/** What a graphql route's 405 lists (RFC 9110 §10.2.1): HEAD is relayed as a GET, PUT and DELETE for graphql-sse's single connection mode. */
const GRAPHQL_ALLOW = 'GET, HEAD, POST, PUT, DELETE, OPTIONS'

const SSE_EVENT_ENDS = [Buffer.from('\n\n'), Buffer.from('\r\n\r\n'), Buffer.from('\r\r')]

/**
 * Where a relayed subscription stream is between two events, so that a drain ends it after the
 * last whole one the client got (Exchange.goAway): an SSE event ends with a blank line; a
 * multipart part is whole once the delimiter after it is out (graphql-yoga and Apollo Router
 * write one after each part), and `--` CRLF then makes that the closing delimiter. Only the
 * last bytes relayed are kept, as many as a boundary spans.
 */
class StreamFraming {
  /** multipart/mixed: CRLF `--` boundary; undefined: SSE. */
  readonly #delimiter: Buffer | undefined
  /** Neither (multipart naming no boundary): no event is known to be under way, it ends at once. */
  readonly #opaque: boolean
  /**
   * The last bytes relayed, in #tail[0, #kept): one buffer per stream, as long as a boundary,
   * reused (a copy per chunk was an allocation per event). A copy: it outlives the chunk's own use.
   */
  readonly #tail: Buffer
  #kept = 0
  #started = false
  /** A drain asked for the end: at the next boundary. */
  ending = false
  constructor(delimiter: Buffer | undefined, opaque = false) {
    this.#delimiter = delimiter
    this.#opaque = opaque
    this.#tail = Buffer.alloc(delimiter?.length ?? 4)
  }
  seen(chunk: Buffer): void {
    const n = chunk.length
    if (n === 0) return
    this.#started = true
    const tail = this.#tail
    const keep = tail.length
    if (n >= keep) {
      chunk.copy(tail, 0, n - keep)
      this.#kept = keep
      return
    }
    // The kept bytes that stay move to the front, the chunk goes after them.
    const stay = Math.min(this.#kept, keep - n)
    tail.copyWithin(0, this.#kept - stay, this.#kept)
    chunk.copy(tail, stay)
    this.#kept = stay + n
  }
  /** What was relayed ends between two events (or nothing was). */
  atBoundary(): boolean {
    if (!this.#started || this.#opaque) return true
    const t = this.#tail.subarray(0, this.#kept)
    if (this.#delimiter !== undefined) return t.equals(this.#delimiter)
    for (const end of SSE_EVENT_ENDS) if (t.length >= end.length && t.subarray(t.length - end.length).equals(end)) return true
    return false
  }
  /** How many bytes of `chunk` complete the event under way (up to its boundary); -1: none do. */
  boundaryIn(chunk: Buffer): number {
    const from = this.#kept
    const joined = Buffer.concat([this.#tail.subarray(0, from), chunk])
    let best = -1
    for (const end of this.#delimiter !== undefined ? [this.#delimiter] : SSE_EVENT_ENDS) {
      const at = joined.indexOf(end, Math.max(0, from - end.length + 1))
      if (at !== -1 && (best === -1 || at + end.length - from < best)) best = at + end.length - from
    }
    return best
  }
  /** What ends the stream cleanly after a boundary: multipart's closing delimiter. */
  closing(): Buffer | undefined {
    const d = this.#delimiter
    if (d === undefined) return undefined
    return this.#started ? Buffer.from('--\r\n') : Buffer.concat([d, Buffer.from('--\r\n')])
  }
}

/**
 * The framing of a response that relays a GraphQL subscription over HTTP — an event stream or a
 * multipart answer to a subscription, or to an operation igw cannot type (a persisted id the
 * backend resolves), or to a request with none (graphql-sse's single connection stream: a GET
 * carrying the reservation token, every operation's results on it) — else undefined. Decided on
 * the head (a regex on graphql routes' heads), so an ordinary response pays nothing more. A query's stream (graphql-sse sends every operation
 * with Accept: text/event-stream; `@defer` answers multipart) is an answer with an end: not one.
 */
function subscriptionFraming(contentType: string | string[] | undefined, ctx: RequestContext): StreamFraming | undefined {
  if (typeof contentType !== 'string') return undefined
  const m = /^\s*(?:(text\/event-stream)|multipart\/mixed)\s*(?:;|$)/i.exec(contentType)
  if (m === null || ctx.batch !== undefined) return undefined
  const op = ctx.graphql?.operationType
  if (op === 'query' || op === 'mutation') return undefined
  if (m[1] !== undefined) return new StreamFraming(undefined)
  const b = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType)
  return b === null ? new StreamFraming(undefined, true) : new StreamFraming(Buffer.from(`\r\n--${b[1] ?? b[2]}`))
}

class ResponseInfoImpl implements ResponseInfo {
  status: number
  headers: Record<string, string | string[]>
  readonly local: boolean
  #body: Readable | Buffer | undefined
  readonly #ex: Exchange

  constructor(status: number, headers: Record<string, string | string[]>, local: boolean, body: Buffer | undefined, ex: Exchange) {
    this.status = status
    this.headers = headers
    this.local = local
    this.#body = body
    this.#ex = ex
  }
  get body(): Readable | Buffer {
    return (this.#body ??= this.#ex.materializeBody())
  }
  set body(v: Readable | Buffer) {
    // (a local reply's body is always set: only an upstream body is there to discard)
    if (this.#body === undefined) this.#ex.discardUpstreamBody()
    this.#body = v
    this.errorReply = false // (a stale copy in place of a 502 is content, not our error)
    this.lengthChanged = true
    this.bodyFilter = this.runningFilter
  }
  /** True once a filter assigned a body whose length may differ from the upstream's. */
  lengthChanged = false
  /** The filter whose onResponse runs now, and the one that last replaced the body (-1: none). */
  runningFilter = -1
  bodyFilter = -1
  /** The response phase's deadline passed while a filter ran: the rest of it is skipped. */
  abandoned = false
  observeBody(stream: Readable): void {
    this.#body = stream
    this.bodyFilter = this.runningFilter
  }
  /** A method, not a closure per response: see Exchange.refuseResponse. */
  refuse(reply: LocalReply): void {
    this.#ex.refuseResponse(this, reply)
  }
  /** refuse() replaced this response: igw's own reply (a batch gets it per operation, see #commit). */
  refused = false
  /** Status, headers and body are an error reply (a LocalReply with a code) no filter has replaced the body of since (see #outgoingBytes). */
  errorReply = false
  /** The body if a filter touched it; undefined means "stream upstream bytes directly". */
  get touchedBody(): Readable | Buffer | undefined {
    return this.#body
  }
}

export class Exchange implements Dispatcher.DispatchHandler {
  readonly ctx: RequestContext
  readonly proxy: WorkerProxy
  readonly snapshot: Snapshot
  readonly route: RouteRuntime
  readonly res: ServerResponse & WithExchange
  controller: Dispatcher.DispatchController | undefined = undefined
  phase: Phase = Phase.Request
  #chunks: Buffer[] | undefined = undefined
  #size = 0
  #timer: NodeJS.Timeout | undefined = undefined
  #body: UpstreamBody | undefined = undefined
  #held: Buffer[] | undefined = undefined
  #heldEnd = false
  #dispatchedAt = 0
  #headersDeadline = Number.POSITIVE_INFINITY
  #finished = false
  /**
   * The gateway itself cut a response whose head was already out (the upstream failed or timed
   * out mid-body, a filter's body stream failed, a head node:http refused after a partial write):
   * the client did not leave, so it is no client abort (igw_client_aborts_total).
   */
  #cut = false
  /**
   * The client sent `Expect: 100-continue` and waits for an invitation before its body. igw
   * handles 'checkContinue' itself (Node would answer 100 at once), so the body is invited only
   * when it is about to be read: a request refused first (413, 415, a filter's 401/429) never
   * makes the client upload it.
   */
  #awaitingContinue: boolean

  constructor(proxy: WorkerProxy, snapshot: Snapshot, route: RouteRuntime, req: IncomingMessage, res: ServerResponse, start: number, awaitingContinue: boolean) {
    this.proxy = proxy
    this.snapshot = snapshot
    this.route = route
    this.res = res
    this.ctx = new RequestContext(req, res, route, proxy.logger, start, routeIncomingRequestId(route, req.headers))
    ;(res as WithExchange)[kExchange] = this
    ;(req as IncomingMessage & WithExchange)[kExchange] = this
    res.on('close', onResClose)
    this.#awaitingContinue = awaitingContinue
  }

  // --- request body -----------------------------------------------------------------------

  start(): void {
    const req = this.ctx.req
    const route = this.route
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) > route.maxBodyBytes) {
      this.#closeAfterReply() // the unread body stays on the socket: do not reuse it
      this.replyError('PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds the route limit of ${route.maxBodyBytes}`, -1)
      return
    }
    if (route.type === 'graphql') {
      const method = this.ctx.method
      if (method === 'POST') {
        // Only JSON is read as GraphQL here. Other media types a backend may accept
        // (application/graphql, forms, multipart uploads) would reach it unseen by every filter
        // — quota cost, persisted-only, cache invalidation — so they are refused (as Apollo
        // Router does); send them through an http route instead.
        const type = req.headers['content-type']
        if (!isJson(type)) {
          this.#closeAfterReply() // the body stays unread
          this.replyError('UNSUPPORTED_MEDIA_TYPE', `a GraphQL route takes application/json request bodies, not "${type}"`, -1)
          return
        }
        // The body is read as UTF-8 (RFC 8259 §8.1): a UTF-16 one was refused as "Malformed
        // JSON", and a Latin-1 "é" became U+FFFD in what filters saw and sent on.
        const charset = charsetOf(type)
        if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
          this.#closeAfterReply()
          this.replyError('UNSUPPORTED_MEDIA_TYPE', `a GraphQL route reads request bodies as UTF-8, not charset "${charset.slice(0, 40)}"`, -1)
          return
        }
        // A compressed body (Content-Encoding: gzip…) is not read here: it was parsed as JSON as
        // it came and refused as "Malformed JSON", a 400 that blamed the client's JSON. A 415
        // that names the coding, as RFC 9110 §15.5.16 has it for an unsupported content coding.
        const coding = req.headers['content-encoding']
        if (coding !== undefined && coding.trim().toLowerCase() !== 'identity' && coding.trim() !== '') {
          this.#closeAfterReply()
          this.replyError('UNSUPPORTED_MEDIA_TYPE', `a GraphQL route reads request bodies uncompressed: Content-Encoding "${coding.slice(0, 40)}" is not supported; send the JSON as it is`, -1, { 'accept-encoding': 'identity' })
          return
        }
        this.#chunks = []
        this.#inviteBody()
        req.on('data', onBodyData)
        req.on('end', onBodyEnd)
        req.on('error', onBodyError)
        this.#armBodyTimer()
        return
      }
      // PUT and DELETE: graphql-sse's single connection mode (its PROTOCOL.md). A PUT reserves an
      // event stream (201, a token the client's GET stream and operations then carry), a DELETE
      // `?operationId=` stops one of its operations. Neither carries an operation: relayed
      // bodiless through the chain like a GET without a query (the tenant filter authenticates
      // the reservation), and the backend decides (one without the mode answers 405 itself).
      const singleConnection = method === 'PUT' || method === 'DELETE'
      if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS' && !singleConnection) {
        // GraphQL over HTTP is GET and POST (OPTIONS: CORS preflights, which run nothing).
        this.#closeAfterReply()
        // Allow names every method the route serves (RFC 9110 §10.2.1): HEAD too, which it relays.
        this.replyError('METHOD_NOT_ALLOWED', `a GraphQL route takes GET and POST (PUT and DELETE for graphql-sse's single connection mode), not ${method}`, -1, { allow: GRAPHQL_ALLOW })
        return
      }
      if (method === 'OPTIONS') {
        if (isCorsPreflight(req, declared)) {
          // A CORS preflight (Fetch §4.8) carries no credentials — no Authorization, no cookies,
          // no custom header such as the tenant's — and runs nothing: the backend answers it
          // with its CORS grant. Run through the filters it got the tenant filter's 401/403, so a
          // browser app on another origin never sent the request it asked about. As Envoy's
          // CORS filter and Apollo Router answer preflights before authentication, no filter
          // sees it (an OPTIONS that is no preflight, or has a body, takes the chain as before).
          this.#preflight = true
          this.ctx.assignRequestId() // no filter runs, the request-id filter's naming included
          this.forward()
          return
        }
      } else {
        // A GET says what it runs in its query string only. A body beside it (some backends read
        // one) would run something no filter checked, priced or keyed the cache by.
        // So does a PUT or DELETE: one the backend reads as an operation would be one no filter saw.
        if (req.headers['transfer-encoding'] !== undefined || (declared !== undefined && declared !== '0')) {
          this.#closeAfterReply() // the body stays unread
          this.replyError('BAD_REQUEST', `a ${method} request to a GraphQL route cannot carry a body${singleConnection ? ' (PUT and DELETE are relayed bodiless, for graphql-sse\'s single connection mode; send operations by POST)' : ''}`, -1)
          return
        }
        const q = this.ctx.url.indexOf('?')
        if (q !== -1) {
          let gql: ReturnType<typeof parseGetParams>
          try {
            gql = parseGetParams(this.ctx.url.slice(q + 1))
          } catch (err) {
            this.replyError('BAD_REQUEST', (err as Error).message, -1)
            return
          }
          if (singleConnection) {
            if (gql !== undefined) {
              this.replyError('BAD_REQUEST', `a ${method} request to a GraphQL route carries no GraphQL operation (query, extensions, documentId): send operations by GET or POST`, -1)
              return
            }
          } else this.ctx.graphql = gql
          // GraphQL over HTTP: a mutation never runs from a GET (a link or an <img> on another
          // site runs it with the user's cookies). Refused only where a persisted or cache filter
          // sat on the route, it reached every other backend that executes GET mutations.
          if (gql?.operationType === 'mutation') {
            this.replyError('METHOD_NOT_ALLOWED', 'mutations cannot be sent with GET; use POST', -1, { allow: 'POST' })
            return
          }
        }
      }
    }
    this.runRequestPhase(0)
  }
  /** A CORS preflight on a GraphQL route: no filter's request or response phase runs. */
  #preflight = false

  bodyChunk(chunk: Buffer): void {
    if (this.#chunks === undefined) return
    this.#size += chunk.length
    if (this.#size > this.route.maxBodyBytes) {
      this.#abandonBody('PAYLOAD_TOO_LARGE', `request body exceeds the route limit of ${this.route.maxBodyBytes} bytes`)
      return
    }
    this.#chunks.push(chunk)
  }

  /**
   * A GraphQL body is read whole before anything else happens, so a client that stops sending
   * must not hold the exchange (and its socket) forever: it has the route's total timeout — or,
   * with that disabled, bodyIdleMs — to deliver it, then gets 408.
   */
  #armBodyTimer(): void {
    const t = this.route.timeouts
    const ms = t.totalMs > 0 ? t.totalMs : t.bodyIdleMs
    if (ms <= 0) return
    const start = this.ctx.startTime
    this.#bodyDue = start + ms
    // Due by the upstream's headers timeout too when that is sooner: a body that arrives in time
    // leaves this timer armed for forward(), whose deadlines are no earlier, so a request costs
    // one timer, not two. Fired early, it re-arms for what is due then (timerFired).
    this.#armBy(t.headersMs > 0 ? Math.min(this.#bodyDue, start + t.headersMs) : this.#bodyDue, performance.now())
  }
  /** When the GraphQL body being read is due (see #armBodyTimer). */
  #bodyDue = Number.POSITIVE_INFINITY

  /** Stop reading a GraphQL body and answer with an error; the rest of the body may still come, so the socket is not reused. */
  #abandonBody(code: ErrorCode, message: string): void {
    this.#chunks = undefined
    this.#clearTimer()
    const req = this.ctx.req
    req.removeListener('data', onBodyData)
    req.removeListener('end', onBodyEnd)
    this.#closeAfterReply()
    this.replyError(code, message, -1)
  }

  bodyEnd(): void {
    const chunks = this.#chunks
    if (chunks === undefined) return
    this.#chunks = undefined
    let raw = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#size)
    // A UTF-8 byte order mark (Windows tooling writes one) is no JSON, but RFC 8259 §8.1 lets a
    // parser ignore it and graphql-yoga and body-parser do: it was a 400 "Malformed JSON" for a
    // body the backend takes. Dropped here, every reader of the body (filters, the backend) gets
    // the JSON text alone. (One byte compared on the common path.)
    if (raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf) raw = raw.subarray(3)
    let parsed
    try {
      parsed = parsePostBody(raw)
    } catch (err) {
      this.#refuseBody(err instanceof GraphQLRequestError ? err.message : 'Malformed request body')
      return
    }
    const q = this.ctx.url.indexOf('?')
    if (q !== -1) {
      const conflict = postSearchConflict(this.ctx.url.slice(q + 1), parsed)
      if (conflict !== undefined) {
        this.#refuseBody(conflict)
        return
      }
    }
    if (parsed instanceof GraphQLBatch) {
      const batching = this.route.batching
      if (!batching.enabled) {
        this.#refuseBody('batched requests (a JSON array) are not enabled on this route (routes[].batching.enabled)')
        return
      }
      if (parsed.operations === 0 || parsed.operations > batching.maxOperations) {
        this.#refuseBody(`a batch holds 1 to ${batching.maxOperations} operations on this route, not ${parsed.operations}`)
        return
      }
      // Each operation costs at least what a lone request does: a starting value, which the
      // persisted filter replaces with the sum of its operations' costs (hints or estimates).
      this.ctx.cost = parsed.operations
      this.ctx.batch = parsed
    } else this.ctx.graphql = parsed
    this.#rawBody = raw
    this.runRequestPhase(0)
  }
  #rawBody: Buffer | undefined = undefined

  /** A body read whole but refused (400): the timer armed for it (kept on success, see #armBodyTimer) goes. */
  #refuseBody(message: string): void {
    this.#clearTimer()
    this.replyError('BAD_REQUEST', message, -1)
  }

  // --- request phase ----------------------------------------------------------------------

  runRequestPhase(from: number): void {
    const route = this.route
    const phase = route.requestPhase
    const t0 = performance.now()
    for (let i = from; i < phase.length; i++) {
      const idx = phase[i]!
      const filter = route.filters[idx]!
      let decision
      try {
        decision = filter.onRequest!(this.ctx)
      } catch (err) {
        this.ctx.filterMs += performance.now() - t0
        if (this.filterFailed(idx, err)) continue
        return
      }
      if (decision === undefined) continue
      this.ctx.filterMs += performance.now() - t0
      // null is no decision the contract knows: `null.then` threw here, out of every catch — the
      // request hung and the worker died. It is that filter's malformed answer (#answer).
      if (decision !== null && typeof (decision as Promise<unknown>).then === 'function') {
        this.#awaitDecision(decision as Promise<LocalReply | undefined>, i, idx)
        return
      }
      this.#answer(decision, idx)
      return
    }
    if (phase.length) this.ctx.filterMs += performance.now() - t0
    this.forward()
  }

  #awaitDecision(p: Promise<LocalReply | undefined>, i: number, idx: number): void {
    const t0 = performance.now()
    // A filter that never decides (a hung Redis call, a webhook) must not hold the request past
    // its deadline: it held the client until the client gave up (logged 499), while the route
    // promises totalMs → 504 (without totalMs: headersMs, see filterDue). Only while a filter is awaited.
    const due = filterDue(this.ctx, this.route, t0)
    if (due !== Number.POSITIVE_INFINITY) {
      this.#awaitedFilter = idx
      this.#filterFrom = t0
      this.#filterDue = due
      this.#armBy(due, t0)
    }
    p.then(
      (decision) => {
        this.ctx.filterMs += performance.now() - t0
        if (this.phase === Phase.Done) return
        this.#settleAwaited()
        if (decision !== undefined) this.#answer(decision, idx)
        else this.runRequestPhase(i + 1)
      },
      (err) => {
        this.ctx.filterMs += performance.now() - t0
        if (this.phase === Phase.Done) return
        this.#settleAwaited()
        if (this.filterFailed(idx, err)) this.runRequestPhase(i + 1)
      },
    )
  }
  /** The request-phase filter awaited under the timer (-1: none), since #filterFrom, due by #filterDue. */
  #awaitedFilter = -1
  #filterFrom = 0
  #filterDue = Number.POSITIVE_INFINITY

  #settleAwaited(): void {
    if (this.#awaitedFilter === -1) return
    this.#awaitedFilter = -1
    this.#clearTimer()
  }

  /** The deadline passed while a request-phase filter was still deciding: 504, the filter named and counted. */
  #filterTimedOut(): void {
    const idx = this.#awaitedFilter
    this.#awaitedFilter = -1
    this.replyError('UPSTREAM_TIMEOUT', filterMissedDeadline(this.ctx, this.route, idx, this.proxy.metrics, this.#filterFrom, this.#filterDue), idx)
  }

  /**
   * A request-phase filter answered. A reply HTTP cannot carry (replyProblem: a CR/LF or a number
   * in a header value, a status outside 200–599, null) is that filter's failure, counted and
   * logged, and answered 500 whatever its failMode (failing open would turn its answer — often a
   * refusal — into a pass), as the WebSocket chain does (chain.ts). It was a plain 500 from the
   * head writer, counted under no filter, or (null) an uncaught TypeError.
   */
  #answer(decision: unknown, idx: number): void {
    const filter = this.route.filters[idx]!
    this.ctx.answeredBy = filter.name
    const problem = replyProblem(decision)
    if (problem === undefined) {
      this.sendLocal(decision as LocalReply, idx)
      return
    }
    this.replyError('INTERNAL_SERVER_ERROR', noteMalformedReply(this.ctx, this.route, this.proxy.metrics, idx, problem), idx)
  }

  /** A filter threw: count it, then continue (fail-open, returns true) or answer 500. */
  filterFailed(idx: number, err: unknown): boolean {
    const filter = this.route.filters[idx]!
    this.proxy.metrics.filterErrors.labels(filter.name).inc()
    const open = this.route.failOpen[idx]!
    this.ctx.log.error({ err, filter: filter.name, failMode: open ? 'open' : 'closed' }, 'filter error')
    if (open) return true
    this.ctx.answeredBy = filter.name
    this.replyError('INTERNAL_SERVER_ERROR', `filter "${filter.name}" failed`, idx)
    return false
  }

  // --- local replies ----------------------------------------------------------------------

  /** Answer with a proxy error; it passes the response phase of the filters before `below`. */
  replyError(code: ErrorCode, message: string, below: number, headers?: Record<string, string>): void {
    this.ctx.errorCode = code
    this.proxy.metrics.proxyErrors.labels(this.route.name, code).inc()
    this.sendLocal(errorReply(code, message, undefined, headers), below)
  }

  /**
   * The reply goes out while the client may still be sending a body nobody will read (a refusal
   * before reading it, or an upload that failed on its way upstream): the connection carries no
   * further request (`Connection: close`) and closes by lingering. A socket closed with the
   * client's bytes still arriving is reset (RST), which took the reply with it: uploaders got
   * EPIPE/ECONNRESET instead of the 413. And a 413 for an over-limit upload on an http route said
   * keep-alive while the rest of the body sat unread on a paused socket: the client's next
   * request on that connection was never read (a hang until its timeout).
   */
  #closeAfterReply(): void {
    this.#noReuse()
    const req = this.ctx.req
    // Read and drop the rest while lingering (once undici destroyed the request stream it was
    // sending, Node destroyed the socket with it: there is nothing left to read).
    if (!req.destroyed) req.resume()
  }

  /** This response ends the connection (`Connection: close`), by lingering: see #closeAfterReply. */
  #noReuse(): void {
    this.res.shouldKeepAlive = false
    this.ctx.socket.destroySoon = lingeringClose
  }

  /** Send the 100 Continue the client waits for, once, right before its body is read. */
  #inviteBody(): void {
    if (this.#awaitingContinue) {
      this.#awaitingContinue = false
      this.res.writeContinue()
    }
  }

  /** A reply made here or by the filter at `below` (-1: none ran; filters.length: all ran). */
  sendLocal(reply: LocalReply, below: number): void {
    if (this.phase === Phase.Done) return
    this.phase = Phase.Done
    // Answered without inviting the body: the client may still send it (RFC 9110 lets it after
    // a wait), so the connection cannot carry another request.
    if (this.#awaitingContinue) this.res.shouldKeepAlive = false
    // A body still arriving (a filter refusing an upload on an http route): a connection this reply
    // ends (the above, the client's Connection: close, HTTP/1.0, a drain) lingers. Closed at once
    // with the upload still coming, it was reset and the client got EPIPE instead of the 401/403.
    if (bodyStillComing(this.ctx.req)) this.ctx.socket.destroySoon = lingeringClose
    // The request-id filter did not run (a refusal before the chain, or by a filter ahead of it):
    // the answer still carries, and the access line logs, the id it would have assigned.
    const rid = this.route.requestId
    if (rid !== undefined && below <= rid.index && !this.#preflight) this.ctx.assignRequestId()
    if (reply.code !== undefined) this.ctx.errorCode ??= reply.code
    const info = new ResponseInfoImpl(reply.status, this.#replyHeaders(reply), true, replyBytes(reply.body), this)
    info.errorReply = reply.code !== undefined
    this.ctx.response = info // ctx.addResponseHeader in onResponse edits this head
    // (a preflight's 502/504: no filter ran for it, none sees its answer)
    this.#pendingInfo = undefined
    const pending = this.#preflight ? undefined : this.runResponsePhase(info, below)
    if (pending === undefined) this.#writeLocal(info)
    else {
      this.#awaitResponsePhase(info, performance.now())
      pending.then(() => {
        if (this.#pendingInfo !== info) return // timed out (answered 504) or superseded
        this.#pendingInfo = undefined
        this.#writeLocal(info)
      })
    }
  }

  /**
   * A local reply's head as every one is written, in the request phase (sendLocal) or the response
   * phase (refuseResponse): an error reply in the media type the client asked for (GraphQL over
   * HTTP §7.1), and the chain's own headers (x-request-id, a quota's RateLimit, every Set-Cookie a
   * filter added) on it.
   */
  #replyHeaders(reply: LocalReply): Record<string, string | string[]> {
    const headers: Record<string, string | string[]> = { ...reply.headers }
    if (reply.code !== undefined) negotiateErrorType(headers, this.ctx.req.headers.accept)
    const added = this.ctx.responseHeaders
    if (added !== undefined) applyAddedHeaders(headers, added)
    return headers
  }

  /**
   * ResponseInfo.refuse: the response-phase filter running now (info.runningFilter) answers with a
   * reply of its own instead of the response it was given (the upstream's, or a local one), made
   * as a request-phase answer is (#answer, sendLocal): the filter named as the one that answered, a
   * reply HTTP cannot carry counted as its failure and answered 500, the error code logged, the
   * head as #replyHeaders makes it, and a batch refused per operation (#commit, #writeLocal). By
   * hand in three places (DLP's, a failed filter's 500, a missed deadline's 504) one or another
   * step was missed: DLP's 403 once went out in application/json to a graphql-response+json
   * client, neither DLP's 403 nor the 500 named the filter in the access line, and the 500 was
   * not counted in igw_proxy_errors_total. After the response phase gave up on the filter (a
   * deadline's 504, the upstream's 502) it is ignored; once the head is out it throws (end the
   * body with a ResponseCut).
   */
  refuseResponse(info: ResponseInfoImpl, reply: LocalReply): void {
    if (info.abandoned) return
    if (this.res.headersSent || this.ctx.response !== info) throw new Error('ResponseInfo.refuse: this response is no longer open to a refusal (its head is out); destroy the body with a ResponseCut instead')
    const idx = info.runningFilter
    const filter = this.route.filters[idx]
    if (filter !== undefined) this.ctx.answeredBy = filter.name
    const problem = replyProblem(reply)
    if (problem !== undefined) {
      // As in the request phase (#answer): failing open would turn the refusal into a pass.
      const message = filter === undefined ? `a response-phase reply HTTP cannot carry: ${problem}` : noteMalformedReply(this.ctx, this.route, this.proxy.metrics, idx, problem)
      this.#refuseOwn(info, 'INTERNAL_SERVER_ERROR', message)
      return
    }
    this.#replaceResponse(info, reply)
  }

  /** The proxy's own error in place of the response under way (a response-phase filter failed or missed its deadline), counted as replyError counts. */
  #refuseOwn(info: ResponseInfoImpl, code: ErrorCode, message: string): void {
    this.proxy.metrics.proxyErrors.labels(this.route.name, code).inc()
    this.#replaceResponse(info, errorReply(code, message))
  }

  #replaceResponse(info: ResponseInfoImpl, reply: LocalReply): void {
    // The refusal replaces what was answered (a local 429 a filter then failed on is a 500 now).
    if (reply.code !== undefined) this.ctx.errorCode = reply.code
    info.status = reply.status
    info.headers = this.#replyHeaders(reply)
    info.body = replyBytes(reply.body) // (an upstream body not read yet is discarded)
    info.refused = true
    info.errorReply = reply.code !== undefined
  }

  #writeLocal(info: ResponseInfoImpl): void {
    const res = this.res
    if (res.destroyed || res.headersSent) return
    const body = info.body
    if (Buffer.isBuffer(body)) {
      const out = this.#outgoingBytes(info, body)
      if (info.status !== 304) info.headers['content-length'] = String(out.length)
      // The reason phrase is set explicitly: a proxied head that writeHead refused (an upstream
      // header Node cannot send) left its "OK" behind, which the 502 would otherwise carry.
      if (!this.#writeHead(info.status, flattenHeaders(info.headers), STATUS_CODES[info.status] ?? '')) return
      res.end(out)
      this.#watchFlush()
    } else {
      const reason = STATUS_CODES[info.status] ?? ''
      delete info.headers['content-length']
      if (!this.#writeHead(info.status, flattenHeaders(info.headers), reason)) {
        body.destroy() // (nothing reads it now: its source, a file or a cursor, is let go)
        return
      }
      this.#heardBodyErrors(body, info)
      pipeline(body, res, noop)
      // A client that stops reading, or a stream that produces nothing more and never ends, held
      // this reply, its stream and a drain for ever: watched from the start until it is flushed
      // (#responseStalled), as a relay through a filter's body stream is. And a stream that keeps
      // trickling ran past totalMs, which cuts a relayed body: it has the request's deadline too.
      const deadline = this.ctx.deadline
      if (this.route.timeouts.bodyIdleMs > 0 || deadline !== Number.POSITIVE_INFINITY) {
        this.#localBody = body
        this.#watchClientReads()
        if (deadline !== Number.POSITIVE_INFINITY) this.#armBy(deadline, performance.now())
      }
    }
  }
  /**
   * The bytes of a reply made here (sendLocal, ResponseInfo.refuse) as they go out, for the
   * request and the response phase alike: a batch refused whole, one error result per operation
   * (perOperationErrors); an error reply of ours under 500 to an SSE-only client on a GraphQL
   * route, a 200 event stream (eventStreamErrorBody says what and why) — the access line, the
   * request metrics and the tenant's usage count the status it stands for (#countedStatus), as
   * for any other client. A 5xx stays as it is: graphql-sse retries it as it does a server that
   * is down, and finds the JSON on its error's response.
   */
  #outgoingBytes(info: ResponseInfoImpl, body: Buffer): Buffer {
    const out = perOperationErrors(this.ctx.batch, info.status, info.headers, body)
    if (!info.errorReply || info.status >= 500 || this.route.type !== 'graphql' || !isOwnJsonType(info.headers) || !acceptsOnlyEventStream(this.ctx.req.headers.accept)) return out
    if (info.status !== 200) {
      this.#countedStatus = info.status
      info.status = 200
    }
    return eventStreamErrorBody(info.headers, out)
  }
  /** The status the response stands for when it went out as another (see #outgoingBytes); 0: the one sent. */
  #countedStatus = 0

  /** A local reply's body stream, while the timer watches it (see #writeLocal). */
  #localBody: Readable | undefined = undefined

  /** A streamed local reply not ended by the request's deadline: cut as a relayed body is at totalMs (onResponseError). */
  #localTimedOut(): void {
    const ctx = this.ctx
    const name = this.route.filters[(ctx.response as ResponseInfoImpl).bodyFilter]?.name
    ctx.errorCode = 'UPSTREAM_TIMEOUT'
    this.proxy.metrics.proxyErrors.labels(this.route.name, 'UPSTREAM_TIMEOUT').inc()
    ctx.log.warn({ filter: name, err: { message: `local reply stream did not finish within ${this.#budget()}`, code: 'UPSTREAM_TIMEOUT' } }, 'local reply stream ran past the deadline; response cut')
    this.#readIdleDue = Number.POSITIVE_INFINITY
    this.#cutMidResponse(this.#localBody)
  }

  /**
   * End a response whose head went out without its body (its source stream `body` destroyed
   * first, the upstream transfer with it): the only honest signal left is to cut
   * the connection. Without chunked framing (an HTTP/1.0 client: the body ends with the
   * connection) a FIN is how a complete body ends, and the cut export read as a whole file; a
   * reset reads as the error it is.
   */
  #cutMidResponse(body: Readable | undefined, err?: Error): void {
    this.#cut = true
    body?.destroy(err)
    if (!this.res.chunkedEncoding && this.res.socket?.destroyed === false) this.res.socket.resetAndDestroy()
    this.res.destroy(err)
  }

  /**
   * writeHead, for heads that carry values a filter set (ctx.addResponseHeader, a rewritten
   * header): node:http throws on a value it cannot send (CR/LF, non-Latin-1), and thrown here it
   * would end the worker thread and every connection on it. Refused, the client gets a plain 500
   * (no filter headers), the upstream transfer stops, and it is logged and counted.
   */
  #writeHead(status: number, headers: string[], reason?: string): boolean {
    const res = this.res
    // A head written once the drain began says `Connection: close` (as Envoy and nginx do): the
    // drain closes the connection after this response, so a client told keep-alive would send
    // its next request onto a socket about to be closed, and lose it.
    if (this.proxy.draining) res.shouldKeepAlive = false
    // RFC 9110 §8.6: no Content-Length on a 204 (a backend's `content-length: 0` was relayed;
    // strict clients and HTTP/2 front proxies refuse such a response). A 304 keeps one only as
    // its sender gave it (the length a 200 would have): #writeLocal and #commit do not set one
    // from a 304's empty body (a cache's 304 said `content-length: 0` for a stored 2 KB answer).
    if (status === 204) dropContentLength(headers)
    try {
      if (reason === undefined) res.writeHead(status, headers)
      else res.writeHead(status, reason, headers)
      return true
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      this.ctx.log.error({ err: { message: e.message, code: e.code } }, 'response head refused by node:http (a header value it cannot send)')
      this.proxy.metrics.proxyErrors.labels(this.route.name, 'INTERNAL_SERVER_ERROR').inc()
      this.ctx.errorCode = 'INTERNAL_SERVER_ERROR'
      this.#countedStatus = 0 // (the 500 below is what the client gets and what counts)
      this.phase = Phase.Done
      if (this.controller !== undefined && !this.#upstreamEnded) this.discardUpstreamBody()
      if (!res.headersSent && !res.destroyed) {
        res.removeHeader('content-length')
        writeErrorReply(res, 'INTERNAL_SERVER_ERROR', 'the gateway could not send this response head')
      } else {
        this.#cut = true
        res.destroy()
      }
      return false
    }
  }

  // --- response phase ---------------------------------------------------------------------

  /** Runs onResponse of filters with index < below, in reverse order. Undefined when all were sync. */
  runResponsePhase(info: ResponseInfoImpl, below: number, from = 0): Promise<void> | undefined {
    const route = this.route
    const phase = route.responsePhase
    for (let i = from; i < phase.length; i++) {
      const idx = phase[i]!
      if (idx >= below) continue
      let r
      info.runningFilter = idx
      try {
        r = route.filters[idx]!.onResponse!(this.ctx, info)
      } catch (err) {
        this.#responseFilterFailed(idx, err, info)
        continue
      }
      if (r !== undefined && typeof (r as Promise<void>).then === 'function') {
        return (r as Promise<void>).then(
          () => (info.abandoned ? undefined : this.runResponsePhase(info, below, i + 1)),
          (err) => {
            if (info.abandoned) return // the deadline answered already: no second count or log
            this.#responseFilterFailed(idx, err, info)
            return this.runResponsePhase(info, below, i + 1)
          },
        )
      }
    }
    return undefined
  }

  #responseFilterFailed(idx: number, err: unknown, info: ResponseInfoImpl): void {
    const filter = this.route.filters[idx]!
    this.proxy.metrics.filterErrors.labels(filter.name).inc()
    const open = this.route.failOpen[idx]!
    this.ctx.log.error({ err, filter: filter.name, failMode: open ? 'open' : 'closed', phase: 'response' }, 'filter error')
    // Fail closed: the client gets a 500 instead of a response the filter could not vet, named,
    // counted and typed as a request-phase filter's failure is (filterFailed).
    if (open) return
    this.ctx.answeredBy = filter.name
    this.#refuseOwn(info, 'INTERNAL_SERVER_ERROR', `filter "${filter.name}" failed`)
  }

  // --- upstream ---------------------------------------------------------------------------

  forward(): void {
    if (this.phase === Phase.Done) return
    const ctx = this.ctx
    const route = this.route
    const req = ctx.req
    let body: Buffer | Readable | null = null
    let contentLength: number | undefined
    let path = ctx.url
    let method = ctx.method
    const gql = ctx.graphql
    if (this.#rawBody !== undefined) {
      body = gql !== undefined && gql.dirty ? gql.toBody() : ctx.batch !== undefined ? ctx.batch.toBody() : this.#rawBody
      contentLength = body.length
    } else if (gql !== undefined && gql.dirty && gql.method === 'GET') {
      if (method !== 'GET') path = gql.toGetPath(path)
      else {
        const sent = gql.rewrittenGet(path)
        path = sent.path
        if (sent.body !== undefined) {
          body = sent.body
          contentLength = body.length
          method = 'POST'
          ctx.setUpstreamHeader('content-type', 'application/json')
        }
      }
    } else if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
      if (req.readableEnded) body = null
      else {
        this.#inviteBody()
        body = req.headers['content-length'] === undefined ? pipeline(req, new BodyLimit(route.maxBodyBytes), noop) : req
        this.#countUpload = body === req
        this.#uploading = true // (the end listener is added only if headersMs runs out mid-upload)
      }
    }
    const headers = upstreamRequestHeaders(ctx, {
      trustIncoming: this.proxy.trustForwarded,
      hostRewrite: route.hostRewrite,
      upstreamHost: route.upstream.authority,
      contentLength,
    })
    const now = performance.now()
    if (ctx.deadline <= now) {
      this.replyError('UPSTREAM_TIMEOUT', 'request deadline passed before the upstream was called', route.filters.length)
      return
    }
    // One native timer covers the headers, the total and the upload's idle timeout (undici's own
    // timers have ~1 s resolution, too coarse for sub-second route timeouts).
    const headersMs = route.timeouts.headersMs
    this.#headersDeadline = headersMs > 0 ? now + headersMs : Number.POSITIVE_INFINITY
    if (this.#uploading && route.timeouts.bodyIdleMs > 0) {
      this.#uploadIdleDue = now + route.timeouts.bodyIdleMs
      this.#uploadSeen = ctx.socket.bytesRead
    }
    const first = Math.min(this.#headersDeadline, ctx.deadline, this.#uploadIdleDue)
    if (first !== Number.POSITIVE_INFINITY) this.#armBy(first, now) // (the body's timer, if due by then, is kept)
    this.phase = Phase.Dispatched
    this.#dispatchedAt = now
    route.upstream.pool.dispatch(
      (this.#sent = {
        path,
        method,
        headers,
        body,
        headersTimeout: 0,
        bodyTimeout: route.timeouts.bodyIdleMs,
        upgrade: null,
      }),
      this,
    )
  }
  /** What was dispatched, kept for the one retry #mayRetry allows (undefined once retried). */
  #sent: Dispatcher.DispatchOptions | undefined = undefined

  /**
   * The upstream closed the connection before answering: is sending the request again safe? This
   * is the keep-alive race — the upstream closes an idle connection (its keep-alive timeout, a
   * restart) just as a request goes out on it — which nginx (proxy_next_upstream error) and Envoy
   * (reset) retry; the client got a 502 for a request the upstream never saw. Retried once, and
   * only when repeating it cannot do harm whether or not the upstream ran it: no response head
   * arrived (phase Dispatched), the connection was closed or reset (not a timeout, not a broken
   * answer), the body is held in memory (none, or a GraphQL body; a streamed upload was consumed),
   * and the request is safe — a GraphQL query (every operation of a batch), never a mutation nor
   * an operation whose type is unknown (a persisted id the backend resolves); otherwise GET, HEAD
   * or OPTIONS. Its deadlines stay those of the first attempt. An upstream that crashes on the
   * request sees it twice, as behind nginx.
   */
  #mayRetry(err: Error): boolean {
    const sent = this.#sent
    if (sent === undefined) return false // retried already
    const code = (err as { code?: string }).code
    if (code !== 'ECONNRESET' && code !== 'EPIPE' && !(code === 'UND_ERR_SOCKET' && err.message === 'other side closed')) return false
    if (sent.body != null && !Buffer.isBuffer(sent.body)) return false
    if (this.res.destroyed || this.ctx.deadline <= performance.now()) return false
    const gql = this.ctx.graphql
    if (gql !== undefined) return gql.operationType === 'query'
    const batch = this.ctx.batch
    if (batch !== undefined) return batch.requests.every((r) => r !== undefined && r.operationType === 'query')
    return sent.method === 'GET' || sent.method === 'HEAD' || sent.method === 'OPTIONS'
  }

  #retry(err: Error): void {
    const sent = this.#sent!
    this.#sent = undefined
    // The old attempt's controller is spent: a timeout while the retry waits for a connection is
    // #timedOutWaiting's to answer.
    this.controller = undefined
    this.proxy.metrics.upstreamRetries.labels(this.route.name).inc()
    this.ctx.log.info({ err: { message: err.message, code: (err as { code?: string }).code }, upstream: this.route.upstream.name }, 'upstream closed the connection before answering; retrying once')
    // Next tick: not from inside undici's handling of the closed socket.
    process.nextTick(retryDispatch, this, sent)
  }

  /** A streamed upload is complete (undici read the last of it): the upstream's headers are due headersMs from now. */
  uploadSent(): void {
    this.#uploading = false
    const headersMs = this.route.timeouts.headersMs
    if (this.phase !== Phase.Dispatched || headersMs <= 0) return
    const now = performance.now()
    const paused = this.#headersDeadline === Number.POSITIVE_INFINITY // the headers timer already fired mid-upload
    this.#headersDeadline = now + headersMs
    // Otherwise the armed timer is due no later than this new deadline: it fires early and re-arms
    // for it (timerFired), so a quick upload costs no timer operation here.
    if (paused) {
      this.#clearTimer()
      this.#armBy(Math.min(this.#headersDeadline, this.ctx.deadline), now)
    }
  }
  /** A streamed request body is still on its way upstream (see uploadSent). */
  #uploading = false
  /**
   * A streamed upload must move every bodyIdleMs (Envoy's stream idle timeout covers both
   * directions): with totalMs 0 only the upstream's side was bounded, and a client stalled
   * mid-body held the exchange and its upstream connection for ever. Progress is the client
   * socket's bytesRead, compared when the timer fires (no listener per request), so a stall is
   * found one to two bodyIdleMs after the last byte. Infinity: no upload being watched.
   */
  #uploadIdleDue = Number.POSITIVE_INFINITY
  #uploadSeen = 0

  /** The upload watch at `now`: true once it ended the exchange (a stall); else #uploadIdleDue is current. */
  #uploadStalled(now: number): boolean {
    const req = this.ctx.req
    if (req.complete || req.destroyed || this.phase === Phase.Done) {
      this.#uploadIdleDue = Number.POSITIVE_INFINITY
      return false
    }
    if (now < this.#uploadIdleDue - 1) return false
    const seen = this.ctx.socket.bytesRead
    // Still queued for a connection (controller unset): nobody reads the body yet.
    if (seen !== this.#uploadSeen || this.controller === undefined) {
      this.#uploadSeen = seen
      this.#uploadIdleDue = now + this.route.timeouts.bodyIdleMs
      return false
    }
    this.#uploadIdleDue = Number.POSITIVE_INFINITY
    const ms = this.route.timeouts.bodyIdleMs
    // Paused by undici: the upstream stopped taking the body, the client is not the one stalled.
    const err = req.isPaused()
      ? new ProxyAbort('UPSTREAM_TIMEOUT', `upstream ${this.route.upstream.name} read none of the request body for ${ms} ms`)
      : new ProxyAbort('REQUEST_TIMEOUT', `the client sent none of its request body for ${ms} ms`)
    this.controller.abort(err)
    return true
  }

  /**
   * The upstream is paused for the client (its socket's buffer is full): undici's bodyTimeout does
   * not run while paused, so with totalMs 0 a client that stopped reading (a zero window) held the
   * exchange and its upstream connection for ever. As Envoy's stream idle timeout, the response
   * must move every bodyIdleMs: progress is the bytes the client socket got off its hands
   * (bytesWritten counts those still buffered), compared when the timer fires. Infinity: no watch.
   * Also armed once the response is all handed over but not flushed (#watchFlush), and for a
   * filter's body stream (#responseStalled).
   */
  #watchClientReads(): void {
    const ms = this.route.timeouts.bodyIdleMs
    if (this.#readIdleDue !== Number.POSITIVE_INFINITY || ms <= 0) return
    const now = performance.now()
    this.#readSeen = this.#progress()
    this.#readIdleDue = now + ms
    this.#armBy(this.#readIdleDue, now)
  }
  #readIdleDue = Number.POSITIVE_INFINITY
  #readSeen = 0

  /**
   * The response is ended, or its upstream is: a client that stops reading now held the bytes
   * still queued on its socket (a filter's or a cache's whole body, the last of a relay) and the
   * socket for ever — no HTTP timeout runs while a response is being written, and the keep-alive
   * one starts only once it is flushed. Through a filter's body stream the rest still has the
   * filter to pass. Watched on (#responseStalled) unless already flushed: a small response
   * written in one go costs a comparison.
   */
  #watchFlush(): void {
    const res = this.res
    // (the ordinary response, flushed as it was written, leaves here on the first check)
    if ((this.phase !== Phase.Stream && res.writableLength === 0) || res.destroyed) return
    this.#readIdleDue = Number.POSITIVE_INFINITY // (a watch from before: its timer was cleared at the upstream's end)
    this.#watchClientReads()
  }

  /**
   * A number that changes whenever the response moves: what the client socket got off its hands
   * (bytesWritten counts what is still queued), less what libuv still holds of the write under way
   * (node reports a write done only once all of it is, so a slow reader of a body written in one
   * go showed no progress until the end), plus how often a filter's body stream read the upstream's,
   * or what a local reply's body stream handed over (bytesWritten counts it as soon as it is queued).
   */
  #progress(): number {
    const socket = this.ctx.socket as Socket & { _handle?: { writeQueueSize?: number } | null }
    const sent = socket.bytesWritten
    return sent - socket.writableLength - (socket._handle?.writeQueueSize ?? 0) + (this.phase === Phase.Stream ? this.#body!.reads : this.#localBody !== undefined ? sent : 0)
  }

  /**
   * The response watch at `now`: true once it cut the response; else #readIdleDue is current. The
   * response waits on the client (its socket's buffer full, or the end not flushed), or in the
   * Stream phase on the filter whose body stream holds unread upstream bytes or has the upstream's
   * end and has not ended the response: one that took nothing for bodyIdleMs while the client kept
   * up held the upstream paused (or the client waiting for the rest) for ever. That is the filter
   * failing: cut, counted under its name. So is a local reply's body stream that neither produced
   * nor ended for bodyIdleMs (the client waiting for the rest for ever): with bytes of it still
   * queued for the client, the client is the one stalled.
   */
  #responseStalled(now: number): boolean {
    const res = this.res
    const local = this.#localBody !== undefined && !res.writableEnded
    const onClient = res.writableNeedDrain || (res.writableEnded && !res.writableFinished) || (local && res.writableLength > 0)
    const body = this.phase === Phase.Stream ? this.#body! : undefined
    const onFilter = !onClient && ((body !== undefined && !res.writableEnded && (body.readableLength > 0 || this.#upstreamEnded)) || local)
    // Caught up (the upstream resumed on 'drain'; a later pause watches again), flushed, or over.
    if (res.destroyed || (!onClient && !onFilter)) {
      this.#readIdleDue = Number.POSITIVE_INFINITY
      return false
    }
    if (now < this.#readIdleDue - 1) return false
    const took = this.#progress()
    // Queued behind an earlier response on the connection (HTTP/1.1 pipelining): the socket's
    // progress is that one's, and so is a stall, cut and counted once by its own watch (this one
    // then closes with the connection, see clientClosed). Judged once it is on the wire.
    if (took !== this.#readSeen || res.socket === null) {
      this.#readSeen = took
      this.#readIdleDue = now + this.route.timeouts.bodyIdleMs
      return false
    }
    this.#readIdleDue = Number.POSITIVE_INFINITY
    const ms = this.route.timeouts.bodyIdleMs
    const ctx = this.ctx
    if (onClient) {
      // The client's timeout (REQUEST_TIMEOUT, as a stalled upload's), not a client abort: the gateway cut it.
      ctx.errorCode = 'REQUEST_TIMEOUT'
      ctx.log.warn({ timeoutMs: ms }, 'client read none of the response; response cut')
    } else {
      const name = this.route.filters[(ctx.response as ResponseInfoImpl).bodyFilter]?.name
      if (name !== undefined) {
        this.proxy.metrics.filterErrors.labels(name).inc()
        ctx.answeredBy = name
      }
      ctx.errorCode = 'UPSTREAM_TIMEOUT'
      ctx.log.error({ filter: name, phase: 'response-body', timeoutMs: ms }, 'filter body stream took nothing; response cut')
    }
    this.proxy.metrics.proxyErrors.labels(this.route.name, ctx.errorCode).inc()
    const over = this.phase === Phase.Done
    this.phase = Phase.Done
    this.#cut = true
    if (this.#body !== undefined) this.#body.destroy() // (stops the upstream transfer, see UpstreamBody)
    else if (!over) this.discardUpstreamBody()
    this.#localBody?.destroy()
    if (onClient) (ctx.socket as StallMarked)[kReadStalled] = true
    // A reset: a FIN would wait behind the bytes the client never takes (and may read as a whole body).
    ctx.socket.resetAndDestroy()
    res.destroy()
    return true
  }

  timerFired(): void {
    this.#timer = undefined
    const now = performance.now()
    if (this.#uploadIdleDue !== Number.POSITIVE_INFINITY && this.#uploadStalled(now)) return
    if (this.#readIdleDue !== Number.POSITIVE_INFINITY) {
      if (this.#responseStalled(now)) return
      // The upstream is over: only the response's way to the client is left to time (no total
      // deadline: it ends with the upstream, as it did when onResponseEnd cleared the timer).
      if ((this.phase === Phase.Done || this.#upstreamEnded || this.#discarded) && !this.#localStreaming()) {
        if (this.#readIdleDue !== Number.POSITIVE_INFINITY) this.#armBy(this.#readIdleDue, now)
        return
      }
    }
    if (this.#localStreaming()) {
      // A streamed local reply still going: the deadline, else the response watch (when due first).
      if (now >= this.ctx.deadline - 1) this.#localTimedOut()
      else this.#armBy(Math.min(this.ctx.deadline, this.#readIdleDue), now)
      return
    }
    if (this.#pendingInfo !== undefined && this.#responseDue !== Number.POSITIVE_INFINITY) {
      // A response phase is awaited: its deadline is the only other one due (it is no later than
      // the request's, and the upstream's headers are in).
      if (now < this.#responseDue - 1) this.#armBy(Math.min(this.#responseDue, this.#uploadIdleDue), now) // early (see below)
      else this.#responseFilterTimedOut(now)
      return
    }
    if (this.phase === Phase.Request) {
      if (this.#chunks !== undefined) {
        if (now < this.#bodyDue - 1) this.#armBy(this.#bodyDue, now) // early (armed for the headers timeout as well)
        else this.#abandonBody('REQUEST_TIMEOUT', `the request body did not arrive within ${Math.round(now - this.ctx.startTime)} ms`)
      } else if (this.#awaitedFilter !== -1) {
        if (now < this.#filterDue - 1) this.#armBy(this.#filterDue, now) // early (see below)
        else this.#filterTimedOut()
      }
      return
    }
    const headersDue = this.phase === Phase.Dispatched ? this.#headersDeadline : Number.POSITIVE_INFINITY
    const due = Math.min(headersDue, this.ctx.deadline, this.#uploadIdleDue, this.#readIdleDue)
    if (due === Number.POSITIVE_INFINITY) return
    if (now < due - 1) {
      // Early: Node starts a timer from the event loop's cached clock, which lags
      // performance.now() by however long the current tick has run (ms on a busy machine).
      // Wait out the rest for the deadline that is due, not the next one (headers → total).
      this.#armBy(due, now)
      return
    }
    if (this.phase === Phase.Dispatched && this.controller === undefined) {
      this.#timedOutWaiting(now)
      return
    }
    if (now >= headersDue - 1) {
      const req = this.ctx.req
      if (this.#uploading && !req.complete) {
        // The client is still sending its body, which the upstream is reading: no server answers
        // before the request is in, so its headers are due headersMs after the upload ends (as
        // Envoy's route timeout starts when the downstream request is complete). Counted from
        // dispatch, a slow but healthy upload (a large file on a slow link) was cut with a 504
        // blaming the upstream. Re-armed by uploadSent; the total timeout still holds meanwhile.
        this.#headersDeadline = Number.POSITIVE_INFINITY
        req.once('end', onUploadEnd) // here, not per request: a quick upload never needs it
        const next = Math.min(this.ctx.deadline, this.#uploadIdleDue)
        if (next !== Number.POSITIVE_INFINITY) this.#armBy(next, now)
        return
      }
      this.controller?.abort(new ProxyAbort('UPSTREAM_TIMEOUT', `upstream sent no response headers within ${this.route.timeouts.headersMs} ms`))
    } else this.controller?.abort(new ProxyAbort('UPSTREAM_TIMEOUT', `upstream did not finish within ${this.#budget()}`))
  }

  /** The limit the request's deadline stands for, named: a filter may have lowered it (a persisted query's timeoutMs). */
  #budget(): string {
    const budget = Math.round(this.ctx.deadline - this.ctx.startTime)
    const routeTotal = this.route.timeouts.totalMs
    return routeTotal > 0 && Math.abs(budget - routeTotal) <= 1 ? `the route's total timeout of ${routeTotal} ms` : `this request's time budget of ${budget} ms`
  }

  /** A streamed local reply is still being written, under the request's deadline (see #writeLocal). */
  #localStreaming(): boolean {
    return this.#localBody !== undefined && !this.res.writableEnded && this.ctx.deadline !== Number.POSITIVE_INFINITY
  }

  /**
   * A timeout fired while undici still holds the request in its queue (every connection to the
   * upstream busy, or the connection still being opened): there is no controller to abort yet,
   * and the request may wait there long after its deadline. The client is answered now; when
   * undici starts the request later, onRequestStart aborts it and its error is expected.
   */
  #timedOutWaiting(now: number): void {
    const route = this.route
    this.ctx.upstreamMs = now - this.#dispatchedAt // waited on, for the access line (as onResponseError)
    const ms = Math.round(this.ctx.upstreamMs)
    const err = new ProxyAbort('UPSTREAM_TIMEOUT', `no connection to upstream ${route.upstream.name} became available within ${ms} ms`)
    this.#discarded = true
    // A streamed request body undici never started reading is still on the client socket.
    if (!this.ctx.req.complete) this.#closeAfterReply()
    logUpstreamFailed(this.ctx, route.upstream, { message: err.message, code: err.code })
    this.phase = Phase.Request
    this.replyError(err.code, err.message, route.filters.length)
  }

  // undici DispatchHandler ------------------------------------------------------------------

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.phase === Phase.Done) controller.abort(new ClientGone())
    // A streamed upload's bytes count toward the byte-paced GC (stream-gc.ts) like a response's.
    // Attached here, in the same synchronous step in which undici attaches its own 'data'
    // listener and starts reading the body: earlier, this listener would start the flow before
    // undici listens (while the request waits for a connection) and undici would miss chunks.
    else if (this.#countUpload) this.ctx.req.on('data', onUploadData)
  }
  #countUpload = false

  /** Written in full: an upstream failure from now on may come after it ran the request (RequestContext.upstreamRequestSent). */
  onRequestSent(): void {
    this.ctx.upstreamRequestSent = true
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200 || statusCode > 599) {
      if (statusCode >= 100 && statusCode < 200) return // 100-continue and early hints stay between us and the upstream
      // llhttp takes any three digits and node:http writes any status up to 999: `HTTP/1.1 600`
      // reached the client as a 600 no HTTP client reads, and `099` failed an undici assertion
      // (a 502 "failed: ERR_ASSERTION"). No such status exists (RFC 9110 §15): the upstream's
      // answer is broken, a 502 as Envoy answers it.
      controller.abort(new ProxyAbort('UPSTREAM_UNAVAILABLE', `upstream ${this.route.upstream.name} sent an invalid HTTP status ${statusCode}`))
      return
    }
    const ctx = this.ctx
    const now = performance.now()
    ctx.upstreamMs = now - this.#dispatchedAt
    this.route.metrics.upstream.observe(ctx.upstreamMs / 1000)
    if (this.res.destroyed) {
      controller.abort(new ClientGone())
      return
    }
    const te = headers['transfer-encoding']
    if (te !== undefined && te !== 'chunked' && !chunkedOnly(te)) {
      // A transfer coding is hop-by-hop: undici undoes only chunked, and Transfer-Encoding is
      // not relayed, so `gzip, chunked` reached the client as gzip bytes nothing announced.
      controller.abort(new ProxyAbort('UPSTREAM_UNAVAILABLE', `upstream ${this.route.upstream.name} sent a transfer coding this gateway does not decode (Transfer-Encoding: ${String(te).slice(0, 64)})`))
      return
    }
    // The upstream answered before the upload was over (a backend's early 401/413): undici stops
    // sending it and destroys the request stream, the rest of the body stays unread on the client
    // connection, and a keep-alive client's next request on it was never read (a hang).
    if (!ctx.req.complete) this.#noReuse()
    // Trailers reach a client that asked for them (TE: trailers) on a chunked response, the
    // upstream's Trailer announcing them; node:http refuses a Trailer header on a response that
    // will not be chunked (a length, no body, HTTP/1.0), so none is announced there.
    const clientTe = ctx.req.headers.te
    if (typeof clientTe === 'string' && acceptsTrailers(clientTe) && ctx.method !== 'HEAD' && ctx.req.httpVersion !== '1.0') {
      this.#relayTrailers = true
      if (headers['content-length'] === undefined && statusCode !== 204 && statusCode !== 304) this.#upstreamTrailer = headers.trailer
    }
    if (this.route.type === 'graphql') this.#framing = subscriptionFraming(headers['content-type'], ctx)
    if (this.route.responsePhase.length === 0 || this.#preflight) {
      if (!this.#writeHead(statusCode, clientResponseHeaders(headers, ctx.responseHeaders, this.#upstreamTrailer !== undefined))) return
      this.phase = Phase.Direct
      if (this.#framing !== undefined) {
        this.#relaySubscription(Phase.Relay)
        return
      }
      const length = headers['content-length']
      if (typeof length === 'string' && ctx.method !== 'HEAD') this.#directLeft = Number(length)
      return
    }
    const info = new ResponseInfoImpl(statusCode, responseHeaderObject(headers, ctx.responseHeaders), false, undefined, this)
    ctx.response = info // ctx.addResponseHeader in onResponse edits this head
    this.phase = Phase.ResponsePhase
    const t0 = performance.now()
    const pending = this.runResponsePhase(info, this.route.filters.length)
    if (pending === undefined) {
      ctx.filterMs += performance.now() - t0
      this.#commit(info)
      return
    }
    // A filter that already reads the body (to decide before the head) gets backpressure
    // from the body stream itself; otherwise hold the upstream until the phase is over.
    if (this.#body === undefined) controller.pause()
    this.#awaitResponsePhase(info, t0)
    pending.then(() => {
      ctx.filterMs += performance.now() - t0
      if (this.phase !== Phase.Done) {
        this.#pendingInfo = undefined
        this.#commit(info)
      }
    })
  }

  /**
   * An async response phase is under way (for the upstream's answer or a local one): a filter
   * that never settles (a hung Redis call, a webhook) held the client — and the exchange, its
   * upstream connection and held chunks — for ever once the upstream had answered. It gets what
   * is left of the request's deadline (the route's totalMs); one that starts with none left (the
   * 504 for a missed deadline, answered itself) or on a route without totalMs gets headersMs (or
   * totalMs), the bound on a client waiting for its response head. Only async phases pay for it.
   */
  #awaitResponsePhase(info: ResponseInfoImpl, now: number): void {
    const t = this.route.timeouts
    let due = this.ctx.deadline
    if (due === Number.POSITIVE_INFINITY || !(due > now)) due = t.headersMs > 0 ? now + t.headersMs : t.totalMs > 0 ? now + t.totalMs : Number.POSITIVE_INFINITY
    this.#pendingInfo = info
    this.#responseFrom = now
    this.#responseDue = due
    // An armed timer is due no later than this (the upstream's headers or total deadline): it fires
    // early and re-arms for this one (timerFired).
    if (due !== Number.POSITIVE_INFINITY) this.#armBy(due, now)
  }
  /** The response whose (async) response phase is awaited under #responseDue (undefined: none). */
  #pendingInfo: ResponseInfoImpl | undefined = undefined
  #responseFrom = 0
  #responseDue = Number.POSITIVE_INFINITY

  /** The response phase's deadline passed with a filter's onResponse still pending: 504, the filter named, counted and logged. */
  #responseFilterTimedOut(now: number): void {
    const info = this.#pendingInfo!
    this.#pendingInfo = undefined
    info.abandoned = true
    const idx = info.runningFilter
    const filter = this.route.filters[idx]!
    const ctx = this.ctx
    const due = this.#responseDue
    const budget = due === ctx.deadline ? `this request's time budget of ${Math.round(ctx.deadline - ctx.startTime)} ms` : `${Math.round(due - this.#responseFrom)} ms`
    this.proxy.metrics.filterErrors.labels(filter.name).inc()
    ctx.log.error({ filter: filter.name, failMode: this.route.failOpen[idx]! ? 'open' : 'closed', phase: 'response', timeoutMs: Math.round(now - this.#responseFrom) }, 'filter did not finish its response phase before the deadline')
    const message = `filter "${filter.name}" did not finish its response phase within ${budget}`
    if (this.phase === Phase.ResponsePhase) {
      // The upstream's answer waits on the filter: drop it, and answer 504 through the filters
      // that have not run yet (a cache forgetting a mutation that may have run).
      this.#held = undefined
      if (this.#body !== undefined) this.#body.destroy()
      else if (!this.#heldEnd) this.discardUpstreamBody()
      this.phase = Phase.Request
      ctx.answeredBy = filter.name
      this.replyError('UPSTREAM_TIMEOUT', message, idx)
      return
    }
    // A local answer's response phase: the 504 replaces it, the filters left are skipped.
    ctx.answeredBy = filter.name
    this.#refuseOwn(info, 'UPSTREAM_TIMEOUT', message)
    this.#writeLocal(info)
  }

  materializeBody(): UpstreamBody {
    if (this.#body !== undefined) return this.#body
    const body = (this.#body = new UpstreamBody(this))
    if (this.phase === Phase.ResponsePhase) {
      // Read during an (async) response phase: the filter sees the bytes before the head is
      // committed, so it can still answer with a status of its own (DLP decides before the head).
      const held = this.#held
      this.#held = undefined
      if (held !== undefined) for (const c of held) body.push(c)
      if (this.#heldEnd) {
        this.#heldEnd = false
        this.#upstreamEnded = true
        body.push(null)
      }
    }
    return body
  }
  #upstreamEnded = false

  discardUpstreamBody(): void {
    // A filter replaced the body without reading it: stop the upstream transfer (its error
    // callback is then expected, not a failure to report).
    this.#discarded = true
    this.controller?.abort(new Error('response body replaced by a filter'))
  }
  #discarded = false

  #commit(info: ResponseInfoImpl): void {
    const res = this.res
    if (res.destroyed) return
    const body = info.touchedBody
    if (body === undefined) {
      // The upstream's bytes go as they came, and its trailers after them (see onResponseStart).
      const trailer = this.#upstreamTrailer
      if (trailer !== undefined && info.headers['content-length'] === undefined && info.status !== 204 && info.status !== 304) info.headers.trailer ??= trailer
      if (!this.#writeHead(info.status, flattenHeaders(info.headers))) return
      this.phase = Phase.Direct
      const held = this.#held
      this.#held = undefined
      if (held !== undefined) for (const c of held) res.write(c)
      if (this.#framing !== undefined && !this.#heldEnd && this.#relaySubscription(Phase.Relay)) return
      if (this.#heldEnd) this.#endClient()
      else this.controller?.resume()
      return
    }
    if (Buffer.isBuffer(body)) {
      // The filter answered with bytes of its own (a 500 from a failed filter, a rewrite).
      // An upstream body it read only in part is not needed any more.
      if (this.#body !== undefined && !this.#upstreamEnded) this.discardUpstreamBody()
      // Only a refusal (ResponseInfo.refuse: DLP's, a failed filter's): the upstream's error,
      // rewritten by a filter, goes in the shape the upstream gave it.
      const out = info.refused ? this.#outgoingBytes(info, body) : body
      this.#framing = undefined // (not the upstream's stream any more)
      if (info.status !== 304) info.headers['content-length'] = String(out.length)
      if (!this.#writeHead(info.status, flattenHeaders(info.headers))) return
      this.phase = Phase.Done
      res.end(out)
      this.#watchFlush()
      return
    }
    if (info.lengthChanged) delete info.headers['content-length'] // a filter re-wrote the bytes
    if (!this.#writeHead(info.status, flattenHeaders(info.headers))) {
      body.destroy()
      return
    }
    this.phase = Phase.Stream
    const upstreamBody = this.#body!
    const held = this.#held
    this.#held = undefined
    if (held !== undefined) for (const c of held) upstreamBody.push(c)
    if (this.#heldEnd) upstreamBody.push(null)
    else if (!this.#upstreamEnded) {
      // Through a filter's body stream, a drain ends the upstream's at a boundary; the filter then ends the response.
      if (this.#framing !== undefined && this.#relaySubscription(Phase.Stream)) return
      this.controller?.resume()
    }
    this.#heardBodyErrors(body, info)
    pipeline(body, res, (err) => {
      if (err && !res.destroyed) res.destroy(err)
    })
  }

  /**
   * A filter's body stream that fails (a transform throwing on a chunk): the head is out, so the
   * response is cut. It was invisible — no log, no count, the access line a clean 200, and
   * counted as a client abort. Heard on the stream itself, before pipeline destroys res (whose
   * 'close' would read as the client leaving); an upstream failing mid-body set #cut already, and
   * a client that left shows as a premature close. For relayed bodies (#commit) and local replies
   * a response filter turned into a stream (#writeLocal).
   */
  #heardBodyErrors(body: Readable, info: ResponseInfoImpl): void {
    const res = this.res
    body.once('error', (err: NodeJS.ErrnoException) => {
      if (this.#cut || err.code === 'ERR_STREAM_PREMATURE_CLOSE' || res.destroyed) return
      this.#cut = true
      const owner = info.bodyFilter
      const name = owner === -1 ? undefined : this.route.filters[owner]?.name
      if (err instanceof ResponseCut) {
        // Ended on purpose (the filter counts and audits its own reason): no filter failure.
        if (name !== undefined) this.ctx.answeredBy = name
        this.ctx.errorCode = err.code
        this.ctx.log.info({ filter: name, code: err.code, reason: err.message }, 'response cut by filter')
        return
      }
      if (name !== undefined) {
        this.proxy.metrics.filterErrors.labels(name).inc()
        this.ctx.answeredBy = name
      }
      this.ctx.errorCode = 'INTERNAL_SERVER_ERROR'
      this.ctx.log.error({ err, filter: name, phase: 'response-body' }, 'filter body stream failed; response cut')
    })
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    relayed(chunk.length)
    switch (this.phase) {
      case Phase.Direct:
        // The last bytes of a declared length (llhttp holds the upstream to it, and its end follows
        // in the same parse) end the response in one call: no second pass through the writable.
        if ((this.#directLeft -= chunk.length) === 0) {
          this.phase = Phase.Done
          this.res.end(chunk)
          return
        }
        if (!this.res.write(chunk)) {
          controller.pause()
          this.res.once('drain', onResDrain)
          this.#watchClientReads()
        }
        return
      case Phase.Relay: {
        const framing = this.#framing!
        if (framing.ending) {
          const end = framing.boundaryIn(chunk)
          if (end !== -1) {
            this.#endSubscription(chunk.subarray(0, end))
            return
          }
        }
        framing.seen(chunk)
        if (!this.res.write(chunk)) {
          controller.pause()
          this.res.once('drain', onResDrain)
          this.#watchClientReads()
        }
        return
      }
      case Phase.Stream:
        if (this.#framing !== undefined) {
          if (this.#framing.ending) {
            const end = this.#framing.boundaryIn(chunk)
            if (end !== -1) {
              this.#endSubscription(chunk.subarray(0, end))
              return
            }
          }
          this.#framing.seen(chunk)
        }
        if (!this.#body!.push(chunk)) {
          controller.pause()
          this.#watchClientReads()
        }
        return
      case Phase.ResponsePhase:
        this.#framing?.seen(chunk)
        if (this.#body !== undefined) {
          if (!this.#body.push(chunk)) controller.pause()
        } else (this.#held ??= []).push(chunk)
        return
      default:
        if (this.#body !== undefined && !this.#body.push(chunk)) controller.pause()
    }
  }

  /**
   * A GraphQL subscription relayed over HTTP (its framing decided on the head, see
   * subscriptionFraming), its head out: from now on it lives as a terminated WebSocket
   * subscription does. The request's deadline (the route's totalMs, 60 s by default) cut it
   * mid-stream and graphql-sse resubscribed from scratch, losing what was published meanwhile;
   * it is lifted for the body, whose silence bodyIdleMs still bounds (undici's bodyTimeout; a
   * keep-alive comment is a chunk). A drain ends it (goAway) as it sends a WebSocket 1001, where
   * it held the drain for all of drainTimeoutMs and was then cut. True when a drain under way
   * ended it already.
   */
  #relaySubscription(phase: Phase): boolean {
    this.phase = phase
    this.ctx.deadline = Number.POSITIVE_INFINITY // (a timer armed for it fires and finds nothing due)
    this.proxy.streams.add(this) // (and so relayed as a subscription stream: see clientClosed)
    if (this.proxy.draining) this.goAway()
    return this.phase === Phase.Done
  }
  /** What the client got of a relayed subscription stream, for a drain to end it between two events. */
  #framing: StreamFraming | undefined = undefined

  /**
   * The drain began: end this subscription stream after the last whole event the client got —
   * now, or at the upstream's next event boundary when one is under way (the drain's deadline
   * cuts it if none comes). graphql-sse and EventSource see the stream end and reconnect, to
   * another instance.
   */
  goAway(): void {
    const framing = this.#framing
    if (framing === undefined || framing.ending || this.phase === Phase.Done || this.res.destroyed) return
    framing.ending = true
    if (framing.atBoundary()) this.#endSubscription(undefined)
  }

  /**
   * End a relayed subscription stream cleanly for the drain, `last` (the rest of the event under
   * way) relayed first: the upstream transfer stopped (its backend's subscription ends; the error
   * undici reports for it expected), the response ended (the drain closes the connection, idle
   * now). The gateway's doing, logged as such: no upstream failure, no client abort, a 200 on the access line.
   */
  #endSubscription(last: Buffer | undefined): void {
    const framing = this.#framing!
    if (last !== undefined && last.length > 0) framing.seen(last)
    this.#discarded = true
    this.controller?.abort(new Error('subscription stream ended by the drain'))
    this.ctx.log.info({ upstream: this.route.upstream.name, durMs: Math.round(performance.now() - this.ctx.startTime) }, 'subscription stream ended: gateway draining')
    const closing = framing.closing()
    if (this.phase === Phase.Stream) {
      const body = this.#body!
      if (last !== undefined && last.length > 0) body.push(last)
      if (closing !== undefined) body.push(closing)
      this.#upstreamEnded = true
      body.push(null)
      this.#watchFlush()
      return
    }
    if (last !== undefined && last.length > 0) this.res.write(last)
    if (closing !== undefined) this.res.write(closing)
    this.#endClient()
  }

  /** Body bytes still due on a relayed response with a Content-Length (NaN: none declared). */
  #directLeft = Number.NaN

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    if (this.#pendingInfo === undefined) this.#clearTimer() // (else it bounds the response phase)
    if (this.#relayTrailers) this.#trailers = trailers
    switch (this.phase) {
      case Phase.Direct:
      case Phase.Relay:
        this.#endClient()
        return
      case Phase.ResponsePhase:
        if (this.#body !== undefined) {
          this.#upstreamEnded = true
          this.#body.push(null)
        } else this.#heldEnd = true
        return
      case Phase.Stream:
        this.#upstreamEnded = true
        this.#body!.push(null)
        this.#watchFlush()
        return
      default:
        // Done: the last bytes of a declared length ended the response (onResponseData).
        this.#upstreamEnded = true
        this.#body?.push(null)
        this.#watchFlush()
    }
  }

  #endClient(): void {
    this.phase = Phase.Done
    const trailers = this.#trailers === undefined ? undefined : relayableTrailers(this.#trailers)
    if (trailers !== undefined && this.res.chunkedEncoding) {
      try {
        this.res.addTrailers(trailers)
      } catch (err) {
        // A field node:http cannot send: the body still ends cleanly, without the trailers.
        this.ctx.log.warn({ err: { message: (err as Error).message } }, 'upstream trailers not relayed (a field node:http cannot send)')
      }
    }
    this.res.end()
    this.#watchFlush()
  }
  /** The client reads trailers (TE: trailers) of a response they can go with (see onResponseStart). */
  #relayTrailers = false
  /** The upstream's Trailer header, relayed with a head that can announce trailers. */
  #upstreamTrailer: string | string[] | undefined = undefined
  /** The upstream's trailer fields, kept until the client's response ends (#endClient). */
  #trailers: Record<string, string | string[] | undefined> | undefined = undefined

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#pendingInfo === undefined) this.#clearTimer() // (else it bounds the response phase)
    if (this.#discarded) return
    const phase = this.phase
    if (phase === Phase.Done && this.res.destroyed) return // the client left first
    if (phase === Phase.Dispatched && this.#mayRetry(err)) {
      this.#retry(err)
      return
    }
    if (phase === Phase.Dispatched || (phase === Phase.ResponsePhase && !this.res.headersSent)) {
      // How long the upstream was waited on before failing (a 502/504's line had no upstreamMs:
      // it is set when headers arrive, which never happened).
      if (phase === Phase.Dispatched) this.ctx.upstreamMs = performance.now() - this.#dispatchedAt
      // A filter reading the body before the head sees the failure; the client gets a 502/504.
      this.#body?.destroy(err)
      const [code, message] = classify(err, this.route)
      const errInfo = { message: err.message, code: (err as { code?: string }).code }
      if (code === 'REQUEST_TIMEOUT') this.ctx.log.warn({ err: errInfo, upstream: this.route.upstream.name }, 'request body stalled') // (the client's doing: per request)
      else logUpstreamFailed(this.ctx, this.route.upstream, errInfo)
      // An upload cut short (over the limit, the upstream gone): the rest is still coming.
      if (!this.ctx.req.complete) this.#closeAfterReply()
      // During an async response phase, the filters that ran (and the one still pending) saw this
      // request's response already: the error goes through only those that have not run (as the
      // phase deadline's 504 does). Running them all again called each onResponse twice.
      let below = this.route.filters.length
      const info = this.#pendingInfo
      if (phase === Phase.ResponsePhase && info !== undefined) {
        this.#pendingInfo = undefined
        this.#clearTimer() // (the phase's deadline; the error reply's own phase re-arms one if it awaits)
        info.abandoned = true
        below = info.runningFilter
      }
      this.phase = Phase.Request
      this.replyError(code, message, below)
      return
    }
    // Headers already went out: the only honest signal left is to cut the connection, so the
    // client sees a truncated response instead of a short body that looks complete.
    this.ctx.errorCode = classify(err, this.route)[0]
    this.proxy.metrics.proxyErrors.labels(this.route.name, this.ctx.errorCode).inc()
    const errInfo = { message: err.message, code: (err as { code?: string }).code }
    // A stalled upload is one client's doing: per request, as before the head (onResponseError above).
    if (this.ctx.errorCode === 'REQUEST_TIMEOUT') this.ctx.log.warn({ err: errInfo, upstream: this.route.upstream.name }, 'request body stalled')
    else logUpstreamFailed(this.ctx, this.route.upstream, errInfo, 'upstream failed mid-response')
    this.phase = Phase.Done
    this.#cutMidResponse(this.#body, err)
  }

  // --- end of the exchange ----------------------------------------------------------------

  clientClosed(): void {
    if (this.#finished) return
    this.#finished = true
    this.#clearTimer()
    // In proxy.streams: relayed as a subscription stream (#relaySubscription, the only one to add
    // it), its duration observed under op="subscription".
    const streamed = this.proxy.streams.delete(this)
    const res = this.res
    const aborted = !res.writableFinished
    // Closed with the connection the response watch cut for an earlier response the client did
    // not read (HTTP/1.1 pipelining, this one queued behind it): that stall is counted and logged
    // there, once. Nor is this a client abort; its access line names the same cause.
    if (aborted && !this.#cut && (this.ctx.socket as StallMarked)[kReadStalled] === true) {
      this.#cut = true
      this.ctx.errorCode ??= 'REQUEST_TIMEOUT'
    }
    if (aborted && this.phase !== Phase.Done) {
      this.phase = Phase.Done
      this.controller?.abort(new ClientGone())
      this.#body?.destroy()
    } else if (this.#body !== undefined && !this.#upstreamEnded && !this.#discarded) {
      // A filter's body stream ended the response before it read all of the upstream's: the
      // transfer it left paused (undici's bodyTimeout does not run while paused, and the timer is
      // cleared above) held the upstream connection for ever. Stopped (see UpstreamBody._destroy).
      this.#body.destroy()
    }
    // (the drain deadline cutting it, or an upstream failing mid-body, is the gateway's doing or
    // the upstream's, not the client's: an upstream that resets streams must not page as clients
    // walking away)
    if (aborted && !this.proxy.cutting && !this.#cut) this.proxy.metrics.clientAborts.labels(this.route.name).inc()
    let status = this.#countedStatus || res.statusCode
    // Ended before any head went out: res.statusCode is only Node's default 200, which would log
    // and count a request the client never got as a success (SLO dashboards, usage reports).
    if (aborted && !res.headersSent) {
      if (this.proxy.cutting) {
        // Cut by the drain deadline: the gateway's doing.
        status = 503
        this.ctx.errorCode ??= 'OVERLOADED'
        this.proxy.metrics.proxyErrors.labels(this.route.name, 'OVERLOADED').inc()
      } else if (this.#cut) status = 408 // queued behind a response the client did not read (above)
      else status = 499 // the client left first (nginx's "client closed request", as our WebSocket handshakes)
    }
    this.proxy.finishRequest(this.ctx, status, aborted, streamed)
    this.snapshot.release()
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer)
      this.#timer = undefined
    }
  }

  /**
   * Have the timer fire no later than `due` (a performance.now() time). An armed timer already due
   * by then is kept: it fires early and timerFired re-arms for whatever is due at that point.
   */
  #armBy(due: number, now: number): void {
    if (this.#timer !== undefined) {
      if (this.#timerDue <= due) return
      clearTimeout(this.#timer)
    }
    this.#timerDue = due
    this.#timer = setTimeout(onTimer, Math.max(0, due - now), this)
  }
  #timerDue = Number.POSITIVE_INFINITY
}

function classify(err: Error, route: RouteRuntime): [ErrorCode, string] {
  if (err instanceof ProxyAbort) return [err.code, err.message]
  const code = (err as { code?: string }).code
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return ['UPSTREAM_TIMEOUT', 'connecting to the upstream timed out']
    case 'UND_ERR_HEADERS_TIMEOUT':
      return ['UPSTREAM_TIMEOUT', `upstream sent no response headers within ${route.timeouts.headersMs} ms`]
    case 'UND_ERR_BODY_TIMEOUT':
      return ['UPSTREAM_TIMEOUT', `upstream body stalled for more than ${route.timeouts.bodyIdleMs} ms`]
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      return ['BAD_REQUEST', 'request body does not match its Content-Length']
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} is unreachable (${code})`]
    // An upstream's broken answer is named as such (it was "failed: UND_ERR_HEADERS_OVERFLOW",
    // undici's code, which reads as the gateway's fault and names no limit), as Envoy and nginx
    // log "upstream sent too big header", "upstream prematurely closed connection".
    case 'UND_ERR_HEADERS_OVERFLOW':
      return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} sent response headers larger than the ${maxHeaderSize} bytes this gateway reads`]
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} sent a response whose body does not match its Content-Length`]
    case 'UND_ERR_SOCKET':
      // undici's own refusal of a head it will not take, on a connection the upstream kept open: a
      // 100 Continue (RFC 9110 §15.2 lets a server send one unasked; undici drops the connection)
      // or a 101 to a request that asked no upgrade. Named as a closed connection, it sent the
      // operator after the network.
      if (err.message === 'bad response' || err.message === 'bad upgrade') {
        return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} answered with an interim response this gateway does not relay (${err.message === 'bad upgrade' ? 'a protocol switch this request did not ask for' : '100 Continue'})`]
      }
      return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} closed the connection before its response was complete`]
    default:
      // llhttp refused the answer (undici's HTTPParserError; its code is mostly undefined).
      if (err.name === 'HTTPParserError') return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} sent a malformed HTTP response: ${err.message || code}`]
      return ['UPSTREAM_UNAVAILABLE', `upstream ${route.upstream.name} failed: ${code ?? err.message}`]
  }
}

/**
 * application/json or a `+json` type (RFC 6839), by the media type alone (before any `;`), in any
 * case. `includes('+json')` took `text/plain; x=+json` — a type browsers send cross-site without a
 * CORS preflight — and `application/jsonp`; `Application/JSON` was a 415.
 */
function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined) return true // GraphQL clients that omit it still send JSON
  if (contentType.startsWith('application/json') && (contentType.length === 16 || contentType.charCodeAt(16) === 59 /* ; */)) return true // the common spelling, no allocation
  const semi = contentType.indexOf(';')
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
  return type === 'application/json' || (type.endsWith('+json') && /^[a-z0-9!#$&^_.-]+\/[a-z0-9!#$&^_.+-]+$/.test(type))
}

function noop(): void {}

/**
 * A reply's body as bytes. A Uint8Array that is no Buffer (TextEncoder's output; replyProblem
 * takes it as bytes) was handed to pipeline() as if it were a stream, which failed and destroyed
 * the response: the client's connection dropped with no answer, nothing logged. A view on its
 * memory, no copy.
 */
function replyBytes(raw: Buffer | string | Uint8Array): Buffer {
  return typeof raw === 'string' ? Buffer.from(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
}

/**
 * An OPTIONS request a browser sends before a cross-origin request (Fetch §4.8 "CORS-preflight
 * request"): Origin and Access-Control-Request-Method, and no body.
 */
function isCorsPreflight(req: IncomingMessage, declared: string | undefined): boolean {
  const h = req.headers
  return h.origin !== undefined && h['access-control-request-method'] !== undefined && h['transfer-encoding'] === undefined && (declared === undefined || declared === '0')
}

/**
 * A refusal of a whole batch (a quota's 429, the tenant's 403, DLP's, a 504…) to a client that takes
 * `application/graphql-response+json`: one copy of the error result per operation. In that type
 * the body is read as the batch's results whatever the status, and a single object failed every
 * operation of Apollo Client's BatchHttpLink with "server returned results with length 1, expected
 * length of N" — code, message and extensions lost. In `application/json` an error status reads as
 * a failed request (Apollo Client's ServerError, with the body), so that answer stays one object.
 */
function perOperationErrors(batch: GraphQLBatch | undefined, status: number, headers: Record<string, string | string[]>, body: Buffer): Buffer {
  if (batch === undefined || status < 400 || body[0] !== 0x7b /* { */) return body
  const type = headers['content-type']
  if (typeof type !== 'string' || !/^application\/graphql-response\+json\s*(?:;|$)/i.test(type)) return body
  const text = body.toString('utf8')
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return body
  }
  if (parsed === null || typeof parsed !== 'object' || 'data' in parsed || !Array.isArray((parsed as { errors?: unknown }).errors)) return body
  return Buffer.from(`[${new Array<string>(batch.operations).fill(text).join(',')}]`)
}

/**
 * A proxy error as the whole response, outside any exchange (no route, a target that cannot be
 * routed) or instead of a head node:http refused. The reason phrase is explicit: a refused
 * writeHead leaves the one it was given behind.
 */
export function writeErrorReply(res: ServerResponse, code: ErrorCode, message: string): void {
  const r = errorReply(code, message)
  const body = Buffer.from(r.body)
  const headers = { ...r.headers, 'content-length': String(body.length) }
  negotiateErrorType(headers, res.req?.headers.accept)
  res.writeHead(r.status, STATUS_CODES[r.status]!, headers)
  res.end(body)
}
