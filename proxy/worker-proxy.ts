// One worker thread's proxy: its listener, the current config snapshot, access logging and
// the drain on shutdown. Everything global lives in the supervisor or in shared memory.
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { Server as NetServer } from 'node:net'
import { finished, type Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/schema.ts'
import type { RequestContext } from './context.ts'
import { Exchange, writeErrorReply } from './exchange.ts'
import { ERROR_STATUS, rawHttpError, type ErrorCode } from './errors.ts'
import type { GraphQLBatch } from './graphql-request.ts'
import type { FilterModules } from '../filters/registry.ts'
import type { ProxyMetrics } from './metrics.ts'
import { buildSnapshot, PoolRegistry, type Snapshot } from './runtime.ts'
import { SharedRedis } from './redis.ts'
import { SubscriptionHub } from './subscriptions/hub.ts'
import { bodyStillComing, endRaw, lingeringClose } from './linger.ts'
import { destroyOnSocketError, handleUpgrade, type WsBridge } from './websocket-bridge.ts'
import { TenantUsage } from './tenant-usage.ts'
import { configureStreamGc } from './stream-gc.ts'
import { normalizeTarget, REJECTED, type PathOptions } from './path-normalize.ts'
import { clipLogField, roundMs, traceIdOf } from './log.ts'
import { isValidHost } from '../config/primitives.ts'
import { chunkedOnly } from './headers.ts'

/**
 * A request answered before any route (no route matched, or refused before routing) has no
 * request-id rule to follow: it gets a new id, never the client's (Envoy names every request the
 * same way), sent as x-request-id and logged, so a client's report of a 404 or 400 can be found
 * in the access log. Such answers carried no id and their lines none.
 */
/** `Upgrade: websocket` (any case; a list naming it first, as RFC 9110 allows a list). */
function isWebSocketUpgrade(upgrade: string | undefined): boolean {
  if (upgrade === undefined) return false
  const comma = upgrade.indexOf(',')
  return (comma === -1 ? upgrade : upgrade.slice(0, comma)).trim().toLowerCase() === 'websocket'
}

/**
 * A refusal before routing of a request whose body is still arriving: if the connection ends
 * after it (the refusal's own Connection: close, the client's, HTTP/1.0), it lingers. Closed at
 * once, the upload still coming reset it: the client got EPIPE, not the 404/417/501.
 */
function lingerIfUploading(req: IncomingMessage): void {
  if (bodyStillComing(req)) req.socket.destroySoon = lingeringClose
}

function unroutedRequestId(res: ServerResponse): string {
  const id = randomUUID()
  res.setHeader('x-request-id', id)
  return id
}

/**
 * What a 405 refused before routing (TRACE, CONNECT) names in Allow, as RFC 9110 §15.5.6 requires:
 * the methods routes relay (a GraphQL route's own 405 names its narrower set).
 */
const RELAYED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'

export interface WorkerProxyOptions {
  workerId: number
  logger: Logger
  metrics: ProxyMetrics
  shared: Record<string, SharedArrayBuffer>
  modules?: FilterModules
}

export class WorkerProxy {
  readonly logger: Logger
  readonly metrics: ProxyMetrics
  readonly workerId: number
  /** Open WebSockets, bridged or terminated by the subscription hub: drain sends each 1001. */
  readonly bridges = new Set<Pick<WsBridge, 'goAway' | 'terminate'>>()
  /** GraphQL subscriptions relayed over HTTP (SSE, multipart) whose head is out: drain ends each between two events (Exchange.goAway). */
  readonly streams = new Set<{ goAway(): void }>()
  readonly subscriptions: SubscriptionHub
  readonly pools = new PoolRegistry()
  readonly server: Server
  /** Per-tenant counters the supervisor drains for the control plane's usage reports. */
  readonly usage = new TenantUsage()
  snapshot!: Snapshot
  trustForwarded = true
  /** listener.normalizePath / mergeSlashes / escapedSlashes of the current config. */
  paths: PathOptions = { normalize: true, mergeSlashes: false, escapedSlashes: 'keep' }
  draining = false
  /** The drain deadline passed: what is still in flight is being cut, not left by its client. */
  cutting = false
  inflight = 0
  #accessLog = true
  #sampleRate = 1
  readonly #shared: Record<string, SharedArrayBuffer>
  readonly #modules: FilterModules | undefined
  readonly #workerCounter: ReturnType<ProxyMetrics['workerRequests']['series']>
  #drained: (() => void) | undefined

  constructor(opts: WorkerProxyOptions, config: GatewayConfig) {
    this.logger = opts.logger
    this.metrics = opts.metrics
    this.workerId = opts.workerId
    this.#shared = opts.shared
    this.#modules = opts.modules
    this.#workerCounter = opts.metrics.workerRequests.series(String(opts.workerId))
    this.subscriptions = new SubscriptionHub(this, opts.shared.subscriptions)
    this.server = createServer(
      {
        keepAliveTimeout: config.listener.keepAliveTimeoutMs,
        headersTimeout: config.listener.headersTimeoutMs,
        requestTimeout: 0, // the route's total timeout governs; 0 lets long uploads/exports through
        maxHeaderSize: config.listener.maxHeaderBytes,
        // Node enforces headersTimeout only when this check runs (every 30 s by default), so a
        // 10 s slowloris guard held a slow head for up to 40 s.
        connectionsCheckingInterval: checkingIntervalFor(config.listener.headersTimeoutMs),
        noDelay: true,
        // Only a WebSocket upgrade goes to 'upgrade': `Upgrade: h2c` (curl --http2 on http://,
        // Java's HttpClient) is an ordinary HTTP/1.1 request whose offer is declined by serving
        // it, as Envoy and nginx do (Upgrade and HTTP2-Settings are hop-by-hop, not forwarded).
        // Node sent every Upgrade to the WebSocket handler, which refused it with a 400.
        shouldUpgradeCallback: (req: IncomingMessage) => isWebSocketUpgrade(req.headers.upgrade),
      },
      this.handle,
    )
    // Expect: 100-continue: the exchange sends the 100 itself when it is about to read the body
    // (Node's default answers at once, so a request refused anyway made the client upload first).
    this.server.on('checkContinue', this.checkContinue)
    // Any other Expect: Node's own answer is a bare 417 that keeps the connection, whose unread
    // body is then parsed as the next request. Ours is the GraphQL-shaped error, counted, closed.
    this.server.on('checkExpectation', this.checkExpectation)
    this.server.on('upgrade', this.upgrade)
    // CONNECT (a tunnel request): without a listener Node drops the socket with no reply, no
    // log and no count. This gateway tunnels nothing: 405, counted and logged like any refusal.
    this.server.on('connect', (req: IncomingMessage, socket: Duplex) => {
      socket.on('error', destroyOnSocketError)
      const start = performance.now()
      // A new id, as every refusal before routing gets (TRACE's 405 among them), so a client's
      // report of this one can be found in the log.
      const reqId = randomUUID()
      endRaw(socket, rawHttpError('METHOD_NOT_ALLOWED', 'CONNECT (a tunnel) is not served by this gateway', { allow: RELAYED_METHODS, 'x-request-id': reqId }))
      this.#countUnrouted(req, 405, 'METHOD_NOT_ALLOWED', start, reqId)
    })
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable || (err.code === 'ECONNRESET' && !socket.readable)) {
        socket.destroy()
        return
      }
      // Bytes after a request that said Connection: close are no request (RFC 9112 §9.6): that
      // request is answered and the connection closed, as node:http does once it is; no 400.
      if (err.code === 'HPE_CLOSED_CONNECTION' && inFlight(socket) !== undefined) return
      const [code, message] = clientErrorReply(err.code)
      // Pipelined requests parsed before the bad bytes are answered first, in order (RFC 9112
      // §9.3.2): the 400 went out at once, ahead of their responses, and closed the connection
      // under them — the client read the 400 as the answer to its first request, the others
      // were lost and logged as client aborts.
      afterInFlight(socket, () => {
        if (!socket.writable) return // an earlier response closed the connection (Connection: close)
        // (not read further: node:http's parser, failed, still listens on it)
        endRaw(socket, rawHttpError(code, message), false)
        // Refused before there is a request object: counted and logged like any other refusal.
        const status = ERROR_STATUS[code]
        this.metrics.requests.series('', String(status), '').inc()
        this.metrics.proxyErrors.labels('', code).inc()
        if (this.#accessLog && (this.#sampleRate >= 1 || Math.random() < this.#sampleRate)) this.logger.info({ status, code, parseError: err.code, remote: (socket as { remoteAddress?: string }).remoteAddress }, 'access (unparsed request)')
      })
    })
  }

  /** Build and switch to a config version. The old snapshot retires when its requests finish. */
  async apply(version: number, config: GatewayConfig): Promise<void> {
    // The connection this version would use; it becomes the worker's only once the version is in
    // force. A version refused (a later filter fails to build) closes a connection it opened, and
    // the running version's Redis stays the worker's (it was swapped in before the build: the
    // refused URL's connection stayed open, retrying and flipping igw_redis_up, and the next
    // reload of the running URL opened yet another connection to it).
    const redis = this.#redisFor(config)
    // While a snapshot is being built (filter builds may await for a second: a Redis warm-up),
    // its upstream pools are in the registry but it is not in #live yet: an older snapshot
    // going idle meanwhile must not prune them (its route would answer 502 UND_ERR_DESTROYED
    // until the next reload). The pruning waits for the build, and runs after it either way.
    this.#building++
    let next: Snapshot
    try {
      next = await buildSnapshot(version, config, { workerId: this.workerId, logger: this.logger, metrics: this.metrics, pools: this.pools, shared: this.#shared, modules: this.#modules, redis })
    } catch (err) {
      if (redis !== undefined && redis !== this.#redis) void redis.close()
      throw err
    } finally {
      if (--this.#building === 0 && this.#pruneDeferred && this.snapshot !== undefined) queueMicrotask(() => this.#prunePools())
    }
    const prev = this.snapshot as Snapshot | undefined
    this.snapshot = next
    if (redis !== this.#redis) {
      if (this.#redis !== undefined) this.#retiredRedis.push(this.#redis)
      this.#redis = redis
      // The gauge is the current connection's (a retiring one's close no longer writes it).
      this.metrics.redisUp.set(redis?.ready ? 1 : 0)
    }
    this.trustForwarded = config.forwarded.trustIncoming
    this.#idleGraceMs = config.shutdown.idleGraceMs
    this.paths = { normalize: config.listener.normalizePath, mergeSlashes: config.listener.mergeSlashes, escapedSlashes: config.listener.escapedSlashes }
    this.#accessLog = config.log.access.enabled
    this.#sampleRate = config.log.access.sampleRate
    this.logger.level = config.log.level
    this.usage.setTenants(Object.keys(config.tenants))
    configureStreamGc(config.workerHeap.streamedMbPerGc)
    // Upstream subscription connections already open take the new keep-alive, ack and retry
    // timings now (a pending ping or backoff is re-timed), not at the next operation.
    this.subscriptions.pool.configure(config.subscriptions.upstream)
    this.#live.set(next, redis)
    if (prev !== undefined) {
      prev.retire(() => {
        this.#live.delete(prev)
        // Keep what any snapshot still serving requests uses, not only the current one: after
        // several quick reloads an older snapshot may still hold requests (reading a body,
        // waiting in a filter) that will dispatch to its upstream pool and use its Redis.
        const redisInUse = new Set<SharedRedis | undefined>()
        for (const r of this.#live.values()) redisInUse.add(r)
        void prev.closeFilters(this.logger).then(() => {
          this.#retiredRedis = this.#retiredRedis.filter((r) => {
            if (redisInUse.has(r) || r === this.#redis) return true
            void r.close()
            return false
          })
        })
        this.#prunePools()
      })
    }
  }

  #building = 0
  #pruneDeferred = false
  /** Close the upstream pools no live snapshot uses (deferred while one is being built). */
  #prunePools(): void {
    if (this.#building > 0) {
      this.#pruneDeferred = true
      return
    }
    this.#pruneDeferred = false
    const keys = new Set<string>()
    for (const snap of this.#live.keys()) for (const k of snap.poolKeys) keys.add(k)
    void this.pools.retainOnly(keys)
  }

  #redis: SharedRedis | undefined
  #retiredRedis: SharedRedis[] = []
  /** Snapshots not yet idle (the current one and retired ones with requests), with their Redis. */
  readonly #live = new Map<Snapshot, SharedRedis | undefined>()

  /**
   * The Redis connections for a config version: the worker's current ones when `redis.url` and
   * `keyPrefix` are unchanged, else new ones (taken over by apply() once the version is in force).
   */
  #redisFor(config: GatewayConfig): SharedRedis | undefined {
    const want = config.redis
    if (want === undefined) return undefined
    const cur = this.#redis
    if (cur !== undefined && want.url === cur.url && want.keyPrefix === cur.keyPrefix) return cur
    const redis: SharedRedis = new SharedRedis(want.url, want.keyPrefix, this.logger.child({ component: 'redis' }), {
      // Only the worker's current connection speaks for igw_redis_up: a retiring one closing (or
      // a refused version's one failing) set it to 0 while the connection in use was ready.
      up: { set: (v: number) => this.#redis === redis && this.metrics.redisUp.set(v) } as unknown as ProxyMetrics['redisUp'],
      reconnects: this.metrics.redisReconnects,
    })
    return redis
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => this.#serve(req, res, false)
  /** Node's 'checkContinue': the client sent Expect: 100-continue and waits for the invitation. */
  readonly checkContinue = (req: IncomingMessage, res: ServerResponse): void => this.#serve(req, res, true)

  /** Node's 'checkExpectation': an Expect other than 100-continue. */
  readonly checkExpectation = (req: IncomingMessage, res: ServerResponse): void => {
    const start = performance.now()
    this.inflight++
    this.#workerCounter.inc()
    res.shouldKeepAlive = false // the body (if any) stays unread
    lingerIfUploading(req)
    const id = unroutedRequestId(res)
    res.once('close', () => this.#finishUnrouted(req, res, start, 'EXPECTATION_FAILED', id))
    writeErrorReply(res, 'EXPECTATION_FAILED', 'the only expectation this gateway meets is Expect: 100-continue')
  }

  #serve(req: IncomingMessage, res: ServerResponse, awaitingContinue: boolean): void {
    const start = performance.now()
    this.inflight++
    this.#workerCounter.inc()
    if (this.draining) res.shouldKeepAlive = false
    const refusal = this.#refuseBeforeRouting(req)
    if (refusal !== undefined) {
      // TRACE's body, and a body in a coding we do not read, stay unread.
      if (refusal[0] === 'METHOD_NOT_ALLOWED' || refusal[0] === 'NOT_IMPLEMENTED') res.shouldKeepAlive = false
      lingerIfUploading(req)
      const id = unroutedRequestId(res)
      res.once('close', () => this.#finishUnrouted(req, res, start, refusal[0], id))
      if (refusal[0] === 'METHOD_NOT_ALLOWED') res.setHeader('allow', RELAYED_METHODS)
      writeErrorReply(res, refusal[0], refusal[1])
      return
    }
    const snap = this.snapshot
    const route = snap.router.match(req.headers.host, req.url ?? '/')
    if (route === undefined) {
      lingerIfUploading(req)
      const id = unroutedRequestId(res)
      res.once('close', () => this.#finishUnrouted(req, res, start, 'NOT_FOUND', id))
      writeErrorReply(res, 'NOT_FOUND', 'no route matches this host and path')
      return
    }
    snap.inflight++
    new Exchange(this, snap, route, req, res, start, awaitingContinue).start()
  }

  /**
   * Why a request is refused before routing, or undefined (the common case allocates nothing):
   * a target that is neither a path nor an absolute URL, a fragment or a repeated Host, TRACE
   * (it echoes credentials to whoever makes a browser send it: cross-site tracing, as nginx
   * refuses it), an escaped slash under `reject`. Normalizes req.url in place on the way.
   */
  #refuseBeforeRouting(req: IncomingMessage): [ErrorCode, string] | undefined {
    if (unroutableTarget(req)) return ['BAD_REQUEST', badTargetMessage(req.url!)]
    const refused = refusedRequest(req)
    if (refused !== undefined) return ['BAD_REQUEST', refused]
    // Node reads `Transfer-Encoding: gzip, chunked` as chunked and hands over the still-coded
    // bytes; Transfer-Encoding is hop-by-hop, so the backend got them as a plain body nothing
    // announced. A coding other than chunked is refused as Envoy and nginx do (RFC 9112 §6.1).
    const te = req.headers['transfer-encoding']
    if (te !== undefined && !chunkedOnly(te)) return ['NOT_IMPLEMENTED', `the request transfer coding "${te.slice(0, 64)}" is not supported; send the body chunked or with a Content-Length`]
    if (req.method === 'TRACE') return ['METHOD_NOT_ALLOWED', 'TRACE is not served by this gateway']
    if (!this.#normalizePath(req)) return ['BAD_REQUEST', ESCAPED_SLASH_MESSAGE]
    return undefined
  }

  /** Normalize req.url in place (routing, filters and the upstream see one path); false: refused. */
  #normalizePath(req: IncomingMessage): boolean {
    const url = req.url!
    const n = normalizeTarget(url, this.paths)
    if (n === REJECTED) return false
    if (n !== url) req.url = n
    return true
  }

  readonly upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // First, before any path can write to it: the upgrade socket comes without an error listener.
    socket.on('error', destroyOnSocketError)
    const refusal = this.#refuseBeforeRouting(req)
    if (refusal !== undefined) {
      this.#refuseUpgrade(req, socket, refusal[0], refusal[1])
      return
    }
    const snap = this.snapshot
    const route = snap.router.match(req.headers.host, req.url ?? '/')
    if (route === undefined || this.draining) {
      this.#refuseUpgrade(req, socket, this.draining ? 'OVERLOADED' : 'NOT_FOUND', this.draining ? 'gateway is shutting down' : 'no route matches this host and path')
      return
    }
    this.inflight++
    snap.inflight++
    this.#upgradeSnapshots.set(req, snap)
    ;(route.websocket.mode === 'terminate' ? this.subscriptions.handleUpgrade : handleUpgrade)(this, snap, route, req, socket, head).catch((err: unknown) => {
      this.logger.error({ err }, 'websocket upgrade failed')
      socket.destroy()
      this.finishUpgradeRaw(req)
    })
  }
  readonly #upgradeSnapshots = new WeakMap<IncomingMessage, Snapshot>()

  /**
   * An upgrade refused before routing (no route, a bad target, draining): counted and logged as
   * the same request without Upgrade is, with a new x-request-id its line names. They were
   * neither logged nor counted: a subscriber reconnecting to a wrong host or path, or every
   * WebSocket refused while draining, left no trace.
   */
  #refuseUpgrade(req: IncomingMessage, socket: Duplex, code: ErrorCode, message: string): void {
    const start = performance.now()
    const reqId = randomUUID()
    endRaw(socket, rawHttpError(code, message, { 'x-request-id': reqId }))
    this.#countUnrouted(req, ERROR_STATUS[code], code, start, reqId)
  }

  /**
   * `subscriptionStream`: relayed as a subscription over HTTP (SSE, multipart), its duration the
   * client's listening time: observed under op="subscription" even when igw could not type the
   * operation (a persisted id the backend resolves), which under "none" put an hour-long stream in
   * +Inf of the latency panels (they exclude op="subscription").
   */
  finishRequest(ctx: RequestContext, status: number, aborted: boolean, subscriptionStream = false): void {
    ctx.runCleanups()
    const durMs = performance.now() - ctx.startTime
    const m = ctx.route.metrics
    m.request(status, ctx.tier)
    m.duration(durMs / 1000, subscriptionStream ? 'subscription' : ctx.graphql?.operationType)
    const startBytes = ctx.socketBytesAtStart
    this.usage.request(ctx, status, startBytes < 0 ? 0 : ctx.socket.bytesWritten - startBytes)
    if (this.#accessLog && (status >= 500 || aborted || this.#sampleRate >= 1 || Math.random() < this.#sampleRate)) this.#access(ctx, status, durMs, aborted)
    this.#done()
  }

  /** A WebSocket handshake ended (101 when bridged): count it and let its snapshot go. */
  finishUpgrade(ctx: RequestContext, status: number): void {
    // A relayed socket holds what the chain took (a concurrency slot) until it ends: its bridge
    // runs the cleanups then. Every other ending is the request's end.
    if (!(status === 101 && ctx.upgrade)) ctx.runCleanups()
    ctx.route.metrics.request(status, ctx.tier)
    this.usage.subscription(ctx, status)
    // Sampled as any request (a 101 or a 4xx refusal was logged whatever the rate: every
    // reconnecting subscriber); 499, the client gone mid-handshake, is kept as an abort is.
    if (this.#accessLog && (status === 499 || this.#sampled(status))) this.#access(ctx, status, performance.now() - ctx.startTime, false)
    this.finishUpgradeRaw(ctx.req)
  }

  finishUpgradeRaw(req: IncomingMessage): void {
    const snap = this.#upgradeSnapshots.get(req)
    if (snap === undefined) return
    this.#upgradeSnapshots.delete(req)
    snap.release()
    this.#done()
  }

  #access(ctx: RequestContext, status: number, durMs: number, aborted: boolean): void {
    const q = ctx.url.indexOf('?')
    const gql = ctx.graphql
    const tp = ctx.req.headers.traceparent
    this.logger.info(
      {
        reqId: ctx.id || undefined,
        // W3C traceparent "00-<trace-id>-<parent-id>-<flags>": the trace id joins this line to traces.
        traceId: typeof tp === 'string' ? traceIdOf(tp) : undefined,
        method: ctx.method,
        path: q === -1 ? ctx.url : ctx.url.slice(0, q), // the query string may carry variables: not logged
        route: ctx.route.name,
        status,
        tenant: ctx.tenant,
        op: clipLogField(gql !== undefined ? gql.opName : ctx.batch !== undefined ? batchOpNames(ctx.batch) : undefined), // names are client text up to the body limit
        batch: ctx.batch?.operations,
        persistedId: gql?.persistedId,
        cost: ctx.costSource === 'default' ? undefined : ctx.cost,
        code: ctx.errorCode,
        filter: ctx.answeredBy, // the filter that answered (refused) the request itself
        aborted: aborted || undefined,
        upstreamMs: ctx.upstreamMs >= 0 ? roundMs(ctx.upstreamMs) : undefined,
        filterMs: roundMs(ctx.filterMs),
        durMs: roundMs(durMs),
      },
      'access',
    )
  }

  #finishUnrouted(req: IncomingMessage, res: ServerResponse, start: number, code: ErrorCode, reqId: string): void {
    this.#countUnrouted(req, res.statusCode, code, start, reqId)
    this.#done()
  }

  /** A refusal before routing (HTTP, an upgrade, CONNECT): counted and logged under route "". */
  #countUnrouted(req: IncomingMessage, status: number, code: ErrorCode, start: number, reqId: string): void {
    this.metrics.requests.series('', String(status), '').inc()
    // The proxy's own error, as any other (route ""): counted only in igw_requests_total, a
    // dashboard of errors by code never showed a bad Host, a 501 coding or no route at all.
    this.metrics.proxyErrors.labels('', code).inc()
    if (this.#accessLog && this.#sampled(status)) this.logger.info({ reqId, method: req.method, host: clipLogField(req.headers.host), status, code, durMs: roundMs(performance.now() - start) }, 'access (no route)')
  }

  /**
   * Whether a refusal's access line is written under `log.access.sampleRate` (5xx always): the
   * lines without a route (a scanner trying hosts and paths, CONNECT) were written in full
   * whatever the rate, the noisiest traffic unsampled.
   */
  #sampled(status: number): boolean {
    return status >= 500 || this.#sampleRate >= 1 || Math.random() < this.#sampleRate
  }

  #done(): void {
    if (--this.inflight === 0 && this.#drained) this.#drained()
  }

  listen(host: string | undefined, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host, port, reusePort: true, backlog: 4096 }, () => {
        this.server.removeListener('error', reject)
        const addr = this.server.address()
        resolve(typeof addr === 'object' && addr ? addr.port : port)
      })
    })
  }

  /**
   * Graceful stop: no new connections, idle keep-alives closed, in-flight requests finish (with
   * Connection: close) until the deadline, WebSockets get 1001; then whatever is left is cut.
   */
  /** shutdown.idleGraceMs of the config in force (the default before any). */
  #idleGraceMs = 1_000
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true
    // Stop accepting, but leave idle keep-alive connections open for a short grace (http's
    // Server.close() would close them at once): a request already on its way on one, or sent right
    // after the signal, is then served with `Connection: close` (as Envoy does while draining),
    // where closing the socket under it reset it (ECONNRESET) or dropped it unanswered.
    NetServer.prototype.close.call(this.server)
    for (const b of this.bridges) b.goAway()
    // An SSE or multipart subscription is a request in flight that never ends by itself: it held
    // the drain for all of its deadline, then was cut. Ended as a WebSocket gets its 1001.
    for (const s of this.streams) s.goAway()
    const graceUntil = performance.now() + Math.min(this.#idleGraceMs, deadlineMs / 4)
    let graceOver = false
    let resolveIdle!: () => void
    const idle = new Promise<void>((resolve) => (resolveIdle = resolve))
    const settle = (): void => {
      if (!graceOver && performance.now() >= graceUntil) {
        graceOver = true
        this.server.closeIdleConnections()
      }
      if (graceOver && this.inflight === 0 && this.bridges.size === 0) resolveIdle()
    }
    this.#drained = settle
    // No client connection left (at the start, or during the grace: their clients closed them, or
    // their requests were answered with Connection: close): nothing to wait for.
    const noneLeft = (): void => {
      this.server.getConnections((err, n) => {
        if (!err && n === 0 && this.inflight === 0 && this.bridges.size === 0) resolveIdle()
      })
    }
    noneLeft()
    // Keep-alive sockets that finish a request while draining are closed by shouldKeepAlive=false;
    // after the grace, sweep idle ones periodically for connections that were between requests.
    const sweep = setInterval(() => {
      settle()
      if (graceOver) this.server.closeIdleConnections()
      else noneLeft()
    }, 50)
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<'timeout'>((resolve) => (timer = setTimeout(resolve, deadlineMs, 'timeout')))
    const outcome = await Promise.race([idle, expired])
    clearInterval(sweep)
    clearTimeout(timer)
    if (outcome === 'timeout') {
      this.logger.warn({ inflight: this.inflight, websockets: this.bridges.size }, 'drain deadline reached; closing remaining connections')
      for (const b of this.bridges) b.terminate()
    }
    this.cutting = true
    this.server.closeAllConnections()
    // The exchanges just cut finish on their socket's 'close', a loop turn later: wait for them
    // (bounded) so each writes its access line (`aborted`) before the logs are flushed and the
    // thread ends, and sees its client gone before the pools go (else it logs "upstream failed").
    if (this.inflight > 0) {
      let cap: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        this.#drained = resolve
        cap = setTimeout(resolve, 1_000)
      })
      clearTimeout(cap)
    }
    await this.subscriptions.close()
    // No snapshot yet: a thread the supervisor restarted is told to drain (SIGTERM) before its
    // first config is built; a TypeError here ended it with a spurious fatal line at shutdown.
    await this.snapshot?.closeFilters(this.logger)
    await this.pools.destroyAll()
    await this.#redis?.close()
    for (const r of this.#retiredRedis.splice(0)) await r.close()
  }
}

/**
 * True when the request target is neither a path (origin-form) nor absolute-form (`GET
 * http://host/path`, RFC 9112 §3.2.2), e.g. `OPTIONS *` or garbage. A server must accept
 * absolute-form: it is rewritten here to origin-form, with the target's authority as the host
 * (the Host header is then ignored, as the RFC says), and routed and forwarded like any other.
 */
const ESCAPED_SLASH_MESSAGE = 'an escaped slash (%2F or %5C) in the request path is refused here (listener.escapedSlashes: reject)'

function unroutableTarget(req: IncomingMessage): boolean {
  const url = req.url
  if (url === undefined || url.charCodeAt(0) === 47 /* "/" */) return false
  const m = /^https?:\/\/([^/?#@]+)([/?][^#]*)?$/i.exec(url)
  if (m === null) return true
  const path = m[2]
  req.url = path === undefined ? '/' : path.charCodeAt(0) === 63 /* "?" */ ? `/${path}` : path
  req.headers.host = m[1]!
  return false
}

/**
 * Why a request is refused before routing, or undefined (the common case: one scan of the
 * target, one of the header names, no allocation).
 *
 * A fragment ("#") is not part of a request target (RFC 9112 §3.2, as Envoy refuses it): node
 * passed it on, filters read `?query=…#&variables=…` whole while the backend drops everything
 * from "#" on, so the cost, cache key and persisted checks judged variables it never ran.
 *
 * More than one Host header is a 400 (RFC 9112 §3.2): node keeps the first for routing, a
 * tier in front may have judged the request by the last one.
 */
function refusedRequest(req: IncomingMessage): string | undefined {
  if (req.url!.includes('#')) return 'the request target must not contain a fragment ("#")'
  const raw = req.rawHeaders
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 4 && (name === 'host' || name === 'Host' || name.toLowerCase() === 'host') && ++hosts > 1) return 'more than one Host header'
  }
  // A Host that is no host[:port] (Node passes `a b`, `evil.com/.example.com`) is a 400, as nginx
  // answers it: it took the `*.example.com` route by its suffix and went on to the backend as
  // Host and X-Forwarded-Host (links built from it, suffix-trusting checks).
  const host = req.headers.host
  if (host !== undefined && host !== '' && !isValidHost(host)) return 'the Host header is not a valid host[:port]'
  return undefined
}

function badTargetMessage(target: string): string {
  const shown = target.length > 64 ? `${target.slice(0, 64)}…` : target
  return target === '*' ? 'the asterisk-form request target ("*") names no resource this gateway can route' : `request target "${shown}" is neither a path nor an absolute http(s) URL`
}

/**
 * A batch's operation names as one `op` field ("A,,C": an unnamed one is empty), clipped as a
 * lone request's name is. A batch's access line named no operation at all: what batching
 * clients ran was not in the log.
 */
function batchOpNames(batch: GraphQLBatch): string | undefined {
  const reqs = batch.requests
  let out = ''
  let named = false
  // Past 128 characters the field is clipped: the rest of the batch is not parsed for it.
  for (let i = 0; i < reqs.length && out.length <= 128; i++) {
    const name = reqs[i]?.opName ?? ''
    if (name !== '') named = true
    out += i === 0 ? name : `,${name}`
  }
  return named ? out : undefined
}

/** The response node:http has on the wire for this connection now (pipelined ones queue behind it). */
function inFlight(socket: Duplex): ServerResponse | undefined {
  return (socket as { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined
}

/**
 * Runs `then` once the connection has no response in flight: node:http hands the socket to the
 * next queued (pipelined) response when one finishes, so this waits for each in turn.
 */
function afterInFlight(socket: Duplex, then: () => void): void {
  const res = inFlight(socket)
  if (res === undefined || socket.destroyed) return then()
  finished(res, () => setImmediate(() => afterInFlight(socket, then)))
}

/** What a request node:http's parser refused gets, by the parser's (or Node's) error code. */
function clientErrorReply(code: string | undefined): [ErrorCode, string] {
  if (code === 'HPE_HEADER_OVERFLOW') return ['REQUEST_HEADER_FIELDS_TOO_LARGE', 'request line and headers are over the size limit']
  // headersTimeout: the head did not arrive in time (Node's own answer is a bare 408 too).
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ['REQUEST_TIMEOUT', 'the request head did not arrive in time']
  return ['BAD_REQUEST', `malformed HTTP request (${code ?? 'parse error'})`]
}

/** How often Node checks heads against headersTimeout: a quarter of it, within [250 ms, 30 s]. */
function checkingIntervalFor(headersTimeoutMs: number): number {
  return Math.min(30_000, Math.max(250, Math.floor(headersTimeoutMs / 4)))
}

