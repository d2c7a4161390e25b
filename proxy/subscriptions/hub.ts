// The subscription hub of one worker thread: it accepts WebSockets on routes whose
// websocket.mode is "terminate", speaks the client protocols itself, runs every subscribe
// through the route's filter chain, shares one upstream subscription among identical
// subscribes (never across tenants or credentials), logs every stream for replay and delivers
// through per-connection QoS queues. Live streams do not belong to a config snapshot: a reload
// changes what new subscribes see, never what is already flowing.
import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { getOperationAST, Kind, type DocumentNode } from 'graphql'
import type { Logger } from 'pino'
import type { Counter, Gauge } from 'prom-client'
import { WebSocketServer, type WebSocket } from 'ws'
import type { SubscriptionsConfig } from '../../config/subscriptions.ts'
import type { Tier } from '../../config/primitives.ts'
import { RequestContext } from '../context.ts'
import { routeIncomingRequestId } from '../headers.ts'
import { LogWindow } from '../log.ts'
import type { GraphQLRequest } from '../graphql-request.ts'
import type { ProxyMetrics } from '../metrics.ts'
import type { TenantUsage } from '../tenant-usage.ts'
import { SharedRedis } from '../redis.ts'
import type { RouteRuntime, Snapshot } from '../runtime.ts'
import { checkClientHandshake, handshakeRefusalHeaders, refuseHandshake, upgradeRefusal } from '../websocket-bridge.ts'
import { ClientConnection } from './connection.ts'
import { CursorCodec } from './cursor.ts'
import { canonicalJson, credentialScope, identityHeaders, sha256, streamKey } from './dedup-key.ts'
import { siteOf } from '../router.ts'
import { HubMetrics } from './metrics.ts'
import { chooseProtocol, type ProtocolName } from './protocols.ts'
import { RedisReplayLog } from './redis-log.ts'
import { Stream } from './stream.ts'
import { UpstreamPool, type UpstreamConnection } from './upstream.ts'

/** What the hub needs of the worker's proxy (WorkerProxy satisfies it). */
export interface HubHost {
  readonly logger: Logger
  readonly metrics: ProxyMetrics
  readonly snapshot: Snapshot
  readonly bridges: Set<{ goAway(): void; terminate(): void }>
  readonly draining: boolean
  /** Per-tenant usage: each operation over a terminated socket is counted as it is admitted or refused. */
  readonly usage: TenantUsage
  finishUpgrade(ctx: RequestContext, status: number): void
}

/** At most one maxStreams warning per this interval (the count of refusals rides on the next). */
const CAPACITY_LOG_MS = 10_000

/** Bytes of process-shared memory for the fallback cursor key (see `processCursorKey`). */
export const CURSOR_KEY_SHARED_BYTES = 64

/**
 * One random key per process, the same in every worker thread: the first thread to get here
 * writes it into shared memory, the others wait for it. Used only when no cursorKey is set.
 */
export function processCursorKey(shared: SharedArrayBuffer | undefined): Buffer {
  if (shared === undefined || shared.byteLength < CURSOR_KEY_SHARED_BYTES) return randomBytes(32)
  const state = new Int32Array(shared, 0, 1)
  const bytes = new Uint8Array(shared, 4, 32)
  if (Atomics.compareExchange(state, 0, 0, 1) === 0) {
    bytes.set(randomBytes(32))
    Atomics.store(state, 0, 2)
    Atomics.notify(state, 0)
  } else {
    while (Atomics.load(state, 0) !== 2) {
      try {
        Atomics.wait(state, 0, 1, 50)
      } catch {
        // the main thread may not wait; the writer finishes within microseconds
      }
    }
  }
  return Buffer.from(bytes)
}

/** The replay log's Redis connection for one (url, keyPrefix), and the streams writing to it. */
interface ReplayRedis {
  url: string
  keyPrefix: string
  shared: SharedRedis
  log: RedisReplayLog
  /** Open streams that write their epochs here (a retired one closes with its last). */
  streams: number
  retired: boolean
}

const kProtocol = Symbol('igw.subscriptions.protocol')
const kContext = Symbol('igw.subscriptions.upgradeContext')
type UpgradeRequest = IncomingMessage & { [kProtocol]?: ProtocolName; [kContext]?: RequestContext | undefined }

export class SubscriptionHub {
  readonly host: HubHost
  readonly metrics: HubMetrics
  readonly pool: UpstreamPool
  readonly logger: Logger
  readonly streams = new Map<string, Stream>()
  /** Streams without clients, waiting out their linger time: oldest first (insertion order). */
  readonly #idle = new Set<Stream>()
  /** maxStreams refusals since the last warning (logged at most every CAPACITY_LOG_MS). */
  readonly #capLog = new LogWindow(CAPACITY_LOG_MS)
  /** Keep-alive drops since the last warning: a network outage drops many clients at once. */
  readonly #keepAliveLog = new LogWindow(CAPACITY_LOG_MS)
  readonly connections = new Set<ClientConnection>()
  /** Connections with something queued, by tier: shed bronze first, then silver, when over budget. */
  readonly backlogged: Record<Tier, Set<ClientConnection>> = { gold: new Set(), silver: new Set(), bronze: new Set() }
  queuedBytes = 0
  readonly #shared: SharedArrayBuffer | undefined
  #codec: { cfg: SubscriptionsConfig; codec: CursorCodec } | undefined
  #processKey: Buffer | undefined
  #redis: ReplayRedis | undefined
  readonly #servers = new Map<number, WebSocketServer>()
  /** One keep-alive timer per interval the open connections were accepted with (see #ensureHeartbeat). */
  readonly #heartbeats = new Map<number, NodeJS.Timeout>()
  #warnedKey = false
  #warnedStore = false
  /** Replay-log Redis connections a reload replaced that streams still write to. */
  readonly #retiredRedis = new Set<ReplayRedis>()

  constructor(host: HubHost, shared: SharedArrayBuffer | undefined) {
    this.host = host
    this.logger = host.logger.child({ component: 'subscriptions' })
    this.metrics = new HubMetrics(host.metrics.registry)
    this.pool = new UpstreamPool(this.metrics, this.logger)
    this.#shared = shared
  }

  /** The current config's section (a reload swaps it; live streams keep their settings). */
  get config(): SubscriptionsConfig {
    return this.host.snapshot.config.subscriptions
  }

  get codec(): CursorCodec {
    const cfg = this.config
    if (this.#codec?.cfg === cfg) return this.#codec.codec
    let keys: (string | Buffer)[]
    if (cfg.cursorKey !== undefined) keys = [cfg.cursorKey, ...cfg.previousCursorKeys]
    else {
      this.#processKey ??= processCursorKey(this.#shared)
      keys = [this.#processKey, ...cfg.previousCursorKeys]
      if (!this.#warnedKey) {
        this.#warnedKey = true
        this.logger.warn('subscriptions.cursorKey is not set: cursors are signed with a per-process key and are not honoured after a restart or on another replica')
      }
    }
    const codec = new CursorCodec(keys)
    this.#codec = { cfg, codec }
    return codec
  }

  readonly #currentCodec = (): CursorCodec => this.codec

  /** The Redis replay log when replay.store is redis (or auto with `redis:` configured). */
  replayLog(): RedisReplayLog | undefined {
    return this.#replayRedis()?.log
  }

  #replayRedis(): ReplayRedis | undefined {
    const snapCfg = this.host.snapshot.config
    const cfg = snapCfg.subscriptions.replay
    const want = cfg.store === 'memory' ? undefined : snapCfg.redis
    const cur = this.#redis
    if (cur !== undefined && (want === undefined || want.url !== cur.url || want.keyPrefix !== cur.keyPrefix)) {
      this.#redis = undefined
      this.#retire(cur)
    }
    if (cfg.store === 'redis' && want === undefined && !this.#warnedStore) {
      this.#warnedStore = true
      this.logger.warn('subscriptions.replay.store is "redis" but no redis: is configured; replay logs stay in memory')
    }
    if (want !== undefined && this.#redis === undefined) {
      const rr = { url: want.url, keyPrefix: want.keyPrefix, streams: 0, retired: false } as ReplayRedis
      // The gauge and counter speak for the current connection only: a retired one (its Redis
      // maybe gone for good, reconnecting until its last stream ends) must not report it down.
      const up = { set: (v: number) => void (this.#redis === rr && this.metrics.redisUp.set(v)) } as unknown as Gauge
      const reconnects = { inc: () => void (this.#redis === rr && this.metrics.redisReconnects.inc()) } as unknown as Counter
      rr.shared = new SharedRedis(want.url, want.keyPrefix, this.logger.child({ component: 'subscriptions-redis' }), { up, reconnects })
      rr.log = new RedisReplayLog(rr.shared, cfg.maxEvents, cfg.maxAgeMs, this.metrics, this.logger)
      this.#redis = rr
    }
    this.#redis?.log.setBounds(cfg.maxEvents, cfg.maxAgeMs)
    return this.#redis
  }

  /**
   * A reload replaced the replay log's Redis. Streams opened before the change keep writing
   * their epoch where it started, for as long as they live; the old connection closes with the
   * last of them (at once when none is left), and nothing is parked for it meanwhile.
   */
  #retire(rr: ReplayRedis): void {
    rr.retired = true
    this.metrics.redisUp.set(0)
    if (rr.streams === 0) {
      this.#closeRedis(rr)
      return
    }
    rr.log.retire()
    this.#retiredRedis.add(rr)
    this.logger.info({ streams: rr.streams }, 'replay log moved to another redis: the old connection closes when the streams still writing to it end')
  }

  #closeRedis(rr: ReplayRedis): void {
    this.#retiredRedis.delete(rr)
    rr.log.close().catch((err: unknown) => this.logger.debug({ err: { message: (err as Error)?.message ?? String(err) } }, 'closing a retired replay-log redis connection failed'))
  }

  /** The route of that name in the current snapshot, if it still terminates subscriptions. */
  route(name: string): RouteRuntime | undefined {
    for (const r of this.host.snapshot.routes) if (r.name === name) return r.websocket.mode === 'terminate' ? r : undefined
    return undefined
  }

  #server(maxPayload: number): WebSocketServer {
    let wss = this.#servers.get(maxPayload)
    if (wss === undefined) {
      wss = new WebSocketServer({
        noServer: true,
        perMessageDeflate: false,
        maxPayload,
        clientTracking: false,
        handleProtocols: (_offered, req: UpgradeRequest) => {
          const p = req[kProtocol]
          // The topic protocol needs no subprotocol; name it only when the client offered it.
          return p !== undefined && _offered.has(p) ? p : false
        },
      })
      wss.on('headers', echoRequestId)
      this.#servers.set(maxPayload, wss)
    }
    return wss
  }

  /** Same signature as the passthrough bridge's handleUpgrade. */
  readonly handleUpgrade = async (_host: HubHost, _snap: Snapshot, route: RouteRuntime, req: UpgradeRequest, socket: Duplex, head: Buffer): Promise<void> => {
    const host = this.host
    // Built first: a refused handshake is logged, counted and named as any refusal on the route.
    const ctx = new RequestContext(req, undefined, route, host.logger, performance.now(), routeIncomingRequestId(route, req.headers))
    const refusal = upgradeRefusal(route, req)
    if (refusal !== undefined) {
      refuseHandshake(host, ctx, socket, refusal)
      return
    }
    const offered = checkClientHandshake(req)
    if (typeof offered === 'string') {
      refuseHandshake(host, ctx, socket, offered, handshakeRefusalHeaders(req))
      return
    }
    const protocol = chooseProtocol(offered)
    if (protocol === undefined) {
      refuseHandshake(host, ctx, socket, 'unsupported WebSocket subprotocol; this route speaks graphql-transport-ws, graphql-ws and igw-topics')
      return
    }
    req[kProtocol] = protocol
    // The connection's id, kept or made by the route's request-id rule (no filter runs on the
    // handshake): its 101 line, the 101 itself (echoed, as a passthrough 101 and every HTTP
    // answer are) and its operations refused before their chain all name it.
    ctx.assignRequestId()
    // Connect the replay log's Redis before the first event needs it.
    this.replayLog()?.provider.client()
    req[kContext] = ctx
    // Synchronous (no verifyClient): ws calls #accepted before returning, or refuses the client
    // itself (it half-closed, or the hub is shutting down) and never calls back.
    this.#server(route.websocket.maxMessageBytes).handleUpgrade(req, socket, head, this.#accepted)
    if (req[kContext] !== undefined) {
      req[kContext] = undefined
      host.finishUpgrade(ctx, 499)
    }
  }

  readonly #accepted = (ws: WebSocket, upgrade: IncomingMessage): void => {
    const req = upgrade as UpgradeRequest
    const ctx = req[kContext]
    const protocol = req[kProtocol]
    if (ctx === undefined || protocol === undefined) {
      ws.terminate()
      return
    }
    req[kContext] = undefined
    const host = this.host
    const conn = new ClientConnection(this, ws, req, ctx.route.name, protocol, ctx.id)
    this.connections.add(conn)
    host.bridges.add(conn)
    this.#ensureHeartbeat(conn.keepAliveMs)
    // The handshake is done: the snapshot it ran on is released; the connection lives on.
    host.finishUpgrade(ctx, 101)
    if (host.draining) conn.goAway()
  }

  /**
   * A connection keeps the keepAliveMs it was accepted with, as it keeps its other connection
   * settings: a reload does not touch live connections (docs/subscriptions.md). One timer served
   * them all and took the current value at the next upgrade, so a reload reached every open
   * connection at some other client's upgrade (and never without one): a timer per interval in use.
   */
  #ensureHeartbeat(ms: number): void {
    if (ms === 0 || this.#heartbeats.has(ms)) return
    const timer = setInterval(() => {
      let any = false
      for (const c of this.connections) {
        if (c.keepAliveMs !== ms) continue
        any = true
        c.heartbeat()
      }
      if (any) return
      clearInterval(timer)
      this.#heartbeats.delete(ms)
    }, ms)
    timer.unref()
    this.#heartbeats.set(ms, timer)
  }

  /** The name of the root field a topic's events carry (what topic filters match against). */
  rootField(doc: DocumentNode, operationName: string | undefined): string {
    const first = getOperationAST(doc, operationName)?.selectionSet.selections[0]
    return first?.kind === Kind.FIELD ? (first.alias?.value ?? first.name.value) : ''
  }

  /**
   * Header names the route's own filters set anew on every operation: the request-id filter's
   * header (a fresh id per subscribe unless the client sent one) and the persisted filter's cost
   * hints header (the hints of that one operation). They belong to an operation, not to the
   * connection several operations share, so they are never credentials: kept, every subscribe got
   * its own upstream WebSocket and stream (no sharing at all when the request-id header is not one
   * of `upstream.volatileHeaders`, which are only defaults), and a shared connection carried the
   * id or hints of whichever operation opened it. Per route config, computed once.
   */
  #operationHeaders(route: RouteRuntime): ReadonlySet<string> {
    let names = this.#opHeaders.get(route.config)
    if (names === undefined) {
      const set = new Set<string>()
      for (const f of route.config.filters) {
        if (f.name === 'request-id') set.add(f.header)
        else if (f.name === 'persisted' && f.hints.header !== false) set.add(f.hints.header)
      }
      names = set
      this.#opHeaders.set(route.config, names)
    }
    return names
  }

  readonly #opHeaders = new WeakMap<RouteRuntime['config'], ReadonlySet<string>>()

  /**
   * `headers` without the route's per-operation headers (the same object when it has none of
   * them), with the route's `hostRewrite` as Host (over the client's, see ClientConnection's
   * credentials). HTTP requests and passthrough sockets send it; the upstream handshake went with
   * the upstream URL's own host, so a backend behind an ingress or virtual host that routes on it
   * refused every subscription (a 404: final, UPSTREAM_UNAVAILABLE).
   */
  #connectionHeaders(route: RouteRuntime, headers: Record<string, string>): Record<string, string> {
    const names = this.#operationHeaders(route)
    let out: Record<string, string> | undefined
    for (const name of names) {
      if (!Object.hasOwn(headers, name)) continue
      out ??= { ...headers }
      delete out[name]
    }
    // As over HTTP, it wins over a client Host forwarded by `forwardHeaders`.
    if (route.hostRewrite !== undefined && headers.host !== route.hostRewrite) (out ??= { ...headers }).host = route.hostRewrite
    return out ?? headers
  }

  /** The upstream connection for these credentials (shared by every stream opened with them). */
  upstreamFor(route: RouteRuntime, upgradeUrl: string, tenant: string | undefined, headers: Record<string, string>, params: Record<string, unknown> | undefined): UpstreamConnection {
    headers = this.#connectionHeaders(route, headers)
    const wsUrl = upstreamWsUrl(route, upgradeUrl)
    // The route's message limit holds toward the upstream too (ws's own default is 100 MiB).
    // The upstream's name is part of the key: two names for one URL are two series of the
    // connections gauge, each counting its own sockets.
    const upstream = route.upstream.name
    return this.pool.get(sha256(canonicalJson([wsUrl, upstream, tenant ?? null, headers, params ?? null, route.websocket.maxMessageBytes])), wsUrl, headers, params, { ...this.config.upstream, maxMessageBytes: route.websocket.maxMessageBytes, upstream })
  }

  /**
   * The shared stream for an admitted subscribe, opened upstream when it is the first of its
   * kind. `headers` and `params` are the credentials the upstream connection is opened with.
   * Undefined when it would be a new stream and the worker is at `upstream.maxStreams` with
   * every stream in use (lingering ones are closed first, oldest first, to make room).
   * `variables` and `extensions` are what goes upstream (the chain's, with the client's digits for
   * numbers beyond 2^53: see connection.ts); the stream is keyed by them too, so …993 and …992
   * are two streams with two stream ids (cursors, replay ring, Redis keys), never one.
   */
  streamFor(
    ctx: RequestContext,
    gql: GraphQLRequest,
    route: RouteRuntime,
    upgradeUrl: string,
    headers: Record<string, string>,
    params: Record<string, unknown> | undefined,
    variables: Record<string, unknown> | undefined = gql.variables,
    extensions: Record<string, unknown> | undefined = gql.extensions,
  ): Stream | undefined {
    const cfg = this.config
    const upstreamUrl = upstreamWsUrl(route, upgradeUrl)
    headers = this.#connectionHeaders(route, headers)
    // Identity reads the Host without its port (router.ts siteOf): replicas reached on
    // other ports share cursors; the handshake still sends it as the client wrote it.
    const scope = ctx.subscription?.dedupScope ?? credentialScope(identityHeaders(headers), params)
    const { key, streamId } = streamKey({
      route: route.name,
      upstreamUrl,
      host: headers.host === undefined ? undefined : siteOf(headers.host),
      tenant: ctx.tenant,
      scope,
      docHash: gql.docHash ?? '',
      operationName: gql.operationName,
      variables,
      extensions,
    })
    let stream = this.streams.get(key)
    if (stream === undefined || stream.done) {
      if (!this.#makeRoom(cfg.upstream.maxStreams)) {
        this.#atCapacity(cfg.upstream.maxStreams, ctx.tenant)
        return undefined
      }
      const rr = this.#replayRedis()
      if (rr !== undefined) rr.streams++
      stream = new Stream({
        key,
        streamId,
        codec: this.#currentCodec,
        upstream: this.upstreamFor(route, upgradeUrl, ctx.tenant, headers, params),
        payload: { query: gql.query!, operationName: gql.operationName ?? null, variables: variables ?? null, extensions: extensions ?? null },
        maxEvents: cfg.replay.maxEvents,
        maxAgeMs: cfg.replay.maxAgeMs,
        maxBytes: cfg.replay.maxBytes,
        lingerMs: cfg.upstream.lingerMs,
        resume: cfg.upstream.resume,
        redis: rr?.log,
        metrics: this.metrics,
        logger: this.logger,
        onClosed: (s) => {
          this.#idle.delete(s)
          if (this.streams.get(s.key) === s) this.streams.delete(s.key)
          if (rr !== undefined && --rr.streams === 0 && rr.retired) this.#closeRedis(rr)
        },
        onIdle: (s) => void this.#idle.add(s),
        onBusy: (s) => void this.#idle.delete(s),
      })
      this.streams.set(key, stream)
      stream.start()
    }
    return stream
  }

  /**
   * Room for one more stream under `max`: lingering streams (no client) are closed, the one idle
   * longest first. False when every stream left has clients.
   */
  #makeRoom(max: number): boolean {
    while (this.streams.size >= max) {
      const next = this.#idle.values().next()
      if (next.done === true) return false
      const s = next.value
      this.#idle.delete(s)
      this.metrics.streamEvictions.inc()
      this.logger.debug({ streamId: s.streamId, streams: this.streams.size, maxStreams: max }, 'closing a lingering stream to stay within upstream.maxStreams')
      s.close()
    }
    return true
  }

  #atCapacity(max: number, tenant: string | undefined): void {
    const held = this.#capLog.take()
    if (held === undefined) return
    this.logger.warn({ maxStreams: max, streams: this.streams.size, refused: held + 1, tenant }, 'subscriptions.upstream.maxStreams reached with every stream in use: refusing new streams with OVERLOADED')
  }

  /** A client answered no ping for a whole keep-alive interval and was dropped (the connection counts it). */
  keepAliveLost(fields: Record<string, unknown>): void {
    const held = this.#keepAliveLog.take()
    if (held === undefined) return
    this.logger.warn({ ...fields, dropped: held + 1 }, 'client answered no keep-alive ping within keepAliveMs: connection dropped')
  }

  /** A connection's queued bytes changed by `delta`; over the worker's budget, shed bronze then silver. */
  adjustQueued(delta: number): void {
    if (delta === 0) return
    this.queuedBytes += delta
    this.metrics.queuedBytes.inc(delta)
    if (delta > 0 && this.queuedBytes > this.config.qos.memoryBudgetBytes) this.#shed()
  }

  #shedding = false
  #shed(): void {
    if (this.#shedding) return
    this.#shedding = true
    try {
      const budget = this.config.qos.memoryBudgetBytes
      for (const tier of ['bronze', 'silver'] as const) {
        for (const conn of this.backlogged[tier]) {
          while (this.queuedBytes > budget && conn.shedOne()) {}
          if (this.queuedBytes <= budget) return
        }
      }
    } finally {
      this.#shedding = false
    }
  }

  /** Shutdown, after the connections went away: upstream subscriptions and Redis. */
  async close(): Promise<void> {
    for (const t of this.#heartbeats.values()) clearInterval(t)
    this.#heartbeats.clear()
    for (const c of [...this.connections]) c.terminate()
    for (const s of [...this.streams.values()]) s.close()
    this.pool.closeAll()
    for (const wss of this.#servers.values()) wss.close()
    await this.#redis?.log.close()
    for (const r of [...this.#retiredRedis]) {
      this.#retiredRedis.delete(r)
      await r.log.close()
    }
  }
}

/** The upstream's WebSocket URL for a client that connected on `url` (path and query kept). */
export function upstreamWsUrl(route: RouteRuntime, url: string): string {
  return `${route.upstream.origin.replace(/^http/, 'ws')}${url.startsWith('/') ? url : `/${url}`}`
}

/** ws's 101 head for a terminated upgrade: the request id the route echoes (ctx.assignRequestId). */
function echoRequestId(headers: string[], req: IncomingMessage): void {
  const added = (req as UpgradeRequest)[kContext]?.responseHeaders
  if (added === undefined) return
  for (let i = 0; i < added.length; i += 2) headers.push(`${added[i]!}: ${added[i + 1]!}`)
}
