// One terminated client WebSocket: its protocol state machine, its subscriptions, and its
// QoS-tiered delivery (token bucket, bounded queue, socket backpressure). A subscribe runs
// through the route's filter chain with the connection's headers plus its connection_init
// payload; a refusal answers that operation only, the socket stays open.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { RawData, WebSocket } from 'ws'
import type { Tier } from '../../config/primitives.ts'
import { runRequestChain } from '../chain.ts'
import { RequestContext } from '../context.ts'
import { ERROR_STATUS, type LocalReply } from '../errors.ts'
import type { Filter, SubscriptionContext } from '../filter.ts'
import { GraphQLRequest } from '../graphql-request.ts'
import type { RouteRuntime, Snapshot } from '../runtime.ts'
import { DeliveryQueue, type GapHolder, type QueuedEntry } from './delivery-queue.ts'
import { compileEventFilter, EventFilterError, type EventMatcher } from './event-filter.ts'
import type { SubscriptionHub } from './hub.ts'
import type { TierMetrics } from './metrics.ts'
import { CLOSE, graphqlErrors, LEGACY_WS, parseClientMessage, ProtocolWriter, TOPICS, TRANSPORT_WS, type GapNotice, type ProtocolName, type SubscribeCommand } from './protocols.ts'
import type { ReplayFeed } from './replay-feed.ts'
import type { LogEvent } from './replay-ring.ts'
import { upstreamErrors, type Stream, type StreamSubscriber, type UpstreamPayload } from './stream.ts'
import { TokenBucket } from './token-bucket.ts'
import { invalidHeader, type UpstreamListener } from './upstream.ts'
import { closeReason } from '../websocket-bridge.ts'
import { routeIncomingRequestId } from '../headers.ts'
import { clipLogField, LogWindow, roundMs, traceIdOf } from '../log.ts'

/**
 * `draining`: shutdown with queries or mutations still in flight: their results are still sent
 * (subscriptions were ended, new operations are not admitted), and the socket closes with 1001
 * when the last of them ends (or the worker's drain deadline cuts it).
 */
type ConnState = 'init' | 'ready' | 'draining' | 'closing' | 'closed'

const CONTROL_BYTES = 96
/**
 * igw_filter_errors_total's label for a filter reply to a subscribe whose errors were not GraphQL
 * errors, when the chain did not record which filter answered (it always does: a fallback).
 */
const MALFORMED_REPLY = 'subscribe-reply'
/** Replay entries one subscription is fed before the next one's turn, and at most per turn. */
const FEED_SLICE = 64
const FEED_TURN = 4096

/** A route's filters that look at each event (onSubscriptionEvent), in chain order, with their failMode. */
interface EventFilters {
  readonly list: readonly Filter[]
  readonly open: readonly boolean[]
}

const NO_EVENT_FILTERS: EventFilters = { list: [], open: [] }

/**
 * At most one error line per event filter instance per this interval (the count of lines held
 * back rides on the next): a filter that fails on every event logged a line per event per client,
 * tens of thousands a second on a busy fan-out. igw_filter_errors_total still counts each one.
 */
const EVENT_FILTER_LOG_MS = 10_000
const eventFilterLogs = new WeakMap<Filter, LogWindow>()
const eventFiltersByRoute = new WeakMap<RouteRuntime, EventFilters>()

/** The route's event filters, computed once per route runtime (a snapshot's routes never change). */
function eventFiltersOf(route: RouteRuntime): EventFilters {
  let f = eventFiltersByRoute.get(route)
  if (f === undefined) {
    const list: Filter[] = []
    const open: boolean[] = []
    route.filters.forEach((x, i) => {
      if (x.onSubscriptionEvent === undefined) return
      list.push(x)
      open.push(route.failOpen[i] === true)
    })
    f = list.length === 0 ? NO_EVENT_FILTERS : { list, open }
    eventFiltersByRoute.set(route, f)
  }
  return f
}

const resultFiltersByRoute = new WeakMap<RouteRuntime, readonly Filter[]>()
const NO_FILTERS: readonly Filter[] = []

/** The route's filters that see a socket operation's result (onSocketResult), in chain order, computed once per route runtime. */
function resultFiltersOf(route: RouteRuntime): readonly Filter[] {
  let f = resultFiltersByRoute.get(route)
  if (f === undefined) {
    const list = route.filters.filter((x) => x.onSocketResult !== undefined)
    f = list.length === 0 ? NO_FILTERS : list
    resultFiltersByRoute.set(route, f)
  }
  return f
}

/**
 * How an operation over the socket ended, for its access line: `complete` (the upstream, or a
 * filter's local result), `error` (an error message ended it), `stopped` (the client's complete /
 * stop / unsubscribe), `closed` (the socket closed under it), `replayed` (a topic replay started it
 * over), `refused` (not admitted: a filter's or the hub's refusal).
 */
type OpOutcome = 'complete' | 'error' | 'stopped' | 'closed' | 'replayed' | 'refused'

/** The code of the first of `errors` (GraphQL errors), if it names one. */
function firstCode(errors: readonly unknown[] | undefined): string | undefined {
  const code = (errors?.[0] as { extensions?: { code?: unknown } } | undefined)?.extensions?.code
  return typeof code === 'string' ? code : undefined
}

/** The HTTP status an error code stands for (the gateway's codes), else `otherwise`. */
function statusOf(code: string | undefined, otherwise: number): number {
  return code !== undefined && Object.hasOwn(ERROR_STATUS, code) ? ERROR_STATUS[code as keyof typeof ERROR_STATUS] : otherwise
}

export class Subscription implements StreamSubscriber, GapHolder {
  readonly id: string
  readonly conn: ClientConnection
  readonly ctx: RequestContext
  readonly prefix: string
  readonly topic: string | undefined
  readonly matcher: EventMatcher | undefined
  /** The subscribe it was admitted for (a topic replay runs it again, from another cursor). */
  readonly cmd: SubscribeCommand
  stream: Stream | undefined = undefined
  streamIndex = -1
  lastCursor: string | null = null
  pendingGap: GapNotice | undefined = undefined
  closed = false
  /** Its entries waiting in the connection's delivery queue (the queue keeps the count). */
  queued = 0
  /** Of those, the ones its replay read from the log (dropped only when no live item can be). */
  replayQueued = 0
  /** The replay being read from the log; live pushes wait in the log until it caught up. */
  #feed: ReplayFeed | undefined = undefined
  /** Completion or error of the stream that came while replaying: delivered after the replay. */
  #terminal: QueuedEntry | undefined = undefined
  /**
   * The log's newest entry when the replay caught up. A replay can catch up inside the fan-out of
   * that very entry (another subscription's push on this connection feeds every replay of it):
   * the feed read it from the log, and the fan-out, reaching this one next, must not send it again.
   */
  #caughtUp: QueuedEntry | undefined = undefined
  #cancel: (() => void) | undefined = undefined
  /**
   * The onSubscriptionEvent filters of the chain it was admitted by, kept for its whole life (as
   * Envoy keeps a stream's route config): a reload that removed its route, or changed the chain,
   * let its events through unfiltered (a masking filter no longer applied). Their snapshot is held
   * (`#held`) so a reload does not close them under it; released when it ends.
   */
  readonly #filters: EventFilters
  #held: Snapshot | undefined
  #sctx: SubscriptionContext | undefined = undefined

  constructor(conn: ClientConnection, cmd: SubscribeCommand, ctx: RequestContext, matcher: EventMatcher | undefined, filters: EventFilters = NO_EVENT_FILTERS, snapshot?: Snapshot) {
    this.conn = conn
    this.cmd = cmd
    this.id = cmd.id
    this.ctx = ctx
    this.topic = cmd.topic
    this.matcher = matcher
    this.prefix = conn.writer.nextPrefix(cmd.id, cmd.topic)
    this.#filters = filters
    if (filters.list.length > 0 && snapshot !== undefined) {
      snapshot.inflight++
      this.#held = snapshot
    }
  }

  push(entry: QueuedEntry): void {
    if (this.closed) return
    if (this.#feed !== undefined) {
      // Replaying: events and epoch marks are in the log already, the feed reads them in turn.
      // Completion and errors are not logged: they wait for the feed to catch up.
      if (entry.kind === 'complete' || entry.kind === 'error') this.#terminal ??= entry
      this.conn.refill()
      return
    }
    const seen = this.#caughtUp
    if (seen !== undefined) {
      this.#caughtUp = undefined
      if (entry === seen) return
    }
    this.#deliver(entry)
  }

  replayFrom(feed: ReplayFeed): void {
    if (this.closed) return
    this.#feed = feed
    feed.onReady = this.conn.refill
    this.conn.startFeed(this)
  }

  /**
   * Deliver the replay's next entry (the connection calls this while its queue has room).
   * False when there is nothing to deliver now: the feed waits for Redis, or it caught up and the
   * subscription is live again.
   */
  feedOne(): boolean {
    const feed = this.#feed
    if (feed === undefined || this.closed) {
      this.conn.stopFeed(this)
      return false
    }
    const e = feed.next()
    if (e === null) return false
    if (e === undefined) {
      this.#feed = undefined
      const ring = this.stream?.ring
      this.#caughtUp = ring?.at(ring.endSeq - 1)
      this.conn.stopFeed(this)
      const t = this.#terminal
      this.#terminal = undefined
      if (t !== undefined) this.#deliver(t)
      return false
    }
    this.#deliver(e, true)
    return true
  }

  #deliver(entry: QueuedEntry, replay = false): void {
    if (entry.kind === 'event' && !this.#accepts(entry)) return
    this.conn.deliver(this, entry, replay)
  }

  #accepts(e: LogEvent): boolean {
    if (this.matcher !== undefined && !this.matcher(e.result) && !errorsOnly(e.result)) return false
    const f = this.#filters
    if (f.list.length === 0) return true
    const sctx = (this.#sctx ??= { tenant: this.ctx.tenant, tier: this.conn.tier, route: this.conn.routeName, id: this.id, connectionId: this.conn.id, topic: this.topic })
    const ev = { streamId: this.stream?.streamId ?? '', payload: e.result, epoch: e.epoch, offset: e.offset, cursor: e.cursor }
    for (let i = 0; i < f.list.length; i++) {
      const filter = f.list[i]!
      try {
        if (filter.onSubscriptionEvent!(sctx, ev) !== undefined) return false
      } catch (err) {
        // As in the request phase: counted and logged either way; failMode open goes on down the
        // chain (the event is delivered unchanged unless another filter withholds it), closed
        // withholds the event from this client.
        const open = f.open[i]!
        this.conn.hub.host.metrics.filterErrors.labels(filter.name).inc()
        let window = eventFilterLogs.get(filter)
        if (window === undefined) eventFilterLogs.set(filter, (window = new LogWindow(EVENT_FILTER_LOG_MS)))
        const suppressed = window.take()
        if (suppressed !== undefined) {
          this.ctx.log.error({ err, filter: filter.name, failMode: open ? 'open' : 'closed', suppressed }, open ? 'onSubscriptionEvent failed; event delivered (failMode open)' : 'onSubscriptionEvent failed; event withheld')
        }
        if (!open) return false
      }
    }
    return true
  }

  /** For queries and mutations over the socket: how to stop the upstream operation. */
  setCancel(fn: () => void): void {
    this.#cancel = fn
  }

  /**
   * It is over (client stop, stream completed or errored, connection closed, a topic replay
   * starting over): release everything once. `detach: false` leaves it on its stream, receiving
   * nothing, so a stream it alone kept alive does not close before the replay's subscribe
   * attaches (the caller detaches it then).
   */
  end(detach = true, outcome: OpOutcome = 'closed', errors?: readonly unknown[]): void {
    if (this.closed) return
    this.closed = true
    this.pendingGap = undefined
    this.#feed?.cancel()
    this.#feed = undefined
    this.#terminal = undefined
    this.conn.stopFeed(this)
    this.#cancel?.()
    this.conn.purge(this)
    if (detach) this.stream?.detach(this)
    if (this.conn.subs.get(this.id) === this) this.conn.subs.delete(this.id)
    if (this.stream !== undefined) this.conn.tierMetrics.subscriptions.dec()
    this.ctx.runCleanups()
    const held = this.#held
    this.#held = undefined
    held?.release()
    // A subscription's client ending it (or its socket closing) is its normal end; a query or
    // mutation still waiting for its result was abandoned, as an HTTP request the client aborts.
    const abandoned = this.stream === undefined && (outcome === 'stopped' || outcome === 'closed')
    const code = outcome === 'error' ? firstCode(errors) : undefined
    this.conn.accessLine(this.ctx, this.cmd, abandoned ? 499 : statusOf(code, 200), outcome, code)
    if (this.conn.draining) this.conn.drainStep()
  }
}

/**
 * An event that is only errors: `errors` and no value in `data` (null, absent, or its root field
 * null — its resolver failed). A topic `filter` has nothing in it to match, and withholding it
 * kept every filtered client from hearing of upstream errors at all: it is delivered to them.
 */
function errorsOnly(r: LogEvent['result']): boolean {
  if (!Array.isArray(r.errors) || r.errors.length === 0) return false
  const data = r.data
  return data === null || typeof data !== 'object' || Object.values(data).every((v) => v === null || v === undefined)
}

/** A subscribe's variables and extensions as parsed (what the chain got) and with the client's digits. */
interface ExactOperation {
  parsed: { variables: Record<string, unknown> | undefined; extensions: Record<string, unknown> | undefined }
  exact: { variables: Record<string, unknown> | undefined; extensions: Record<string, unknown> | undefined }
}

/**
 * The variables and extensions to send upstream and key the stream by: the chain's, except that a
 * value a filter left as the client sent it (the same object, or the same top-level member of an
 * object a filter rebuilt: setExtension/deleteExtension copy the others) goes with the client's
 * digits. A value a filter set is sent as the filter set it.
 */
function toSend(gql: GraphQLRequest, exact: ExactOperation | undefined): { variables: Record<string, unknown> | undefined; extensions: Record<string, unknown> | undefined } {
  if (exact === undefined) return { variables: gql.variables, extensions: gql.extensions }
  return { variables: keepDigits(gql.variables, exact.parsed.variables, exact.exact.variables), extensions: keepDigits(gql.extensions, exact.parsed.extensions, exact.exact.extensions) }
}

function keepDigits(now: Record<string, unknown> | undefined, parsed: Record<string, unknown> | undefined, exact: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (now === undefined || parsed === undefined || exact === undefined) return now
  if (now === parsed) return exact
  // Object.fromEntries, not assignment: a "__proto__" member stays a member.
  return Object.fromEntries(Object.entries(now).map(([k, v]) => [k, Object.hasOwn(parsed, k) && parsed[k] === v && Object.hasOwn(exact, k) ? exact[k] : v]))
}

/** The close code ws sends when it refuses a peer's frame: it rides on the error under a symbol. */
function wsCloseCode(err: Error): number | undefined {
  for (const sym of Object.getOwnPropertySymbols(err)) {
    if (sym.description !== 'status-code') continue
    const v = (err as unknown as Record<symbol, unknown>)[sym]
    return typeof v === 'number' ? v : undefined
  }
  return undefined
}

function entryBytes(sub: Subscription, entry: QueuedEntry): number {
  return entry.kind === 'event' ? sub.prefix.length + entry.tail.length : CONTROL_BYTES
}

/**
 * A filter's LocalReply as what the protocol can carry: a result (status < 400 with data) or
 * errors. Only GraphQL errors reach the client (graphqlErrors): `malformed` counts the entries a
 * filter got wrong and that were replaced.
 */
export function replyPayload(reply: LocalReply): { data: true; json: string; malformed: number } | { data: false; errors: unknown[]; malformed: number } {
  const text = typeof reply.body === 'string' ? reply.body : reply.body.toString('utf8')
  const fallback = { message: `refused (HTTP ${reply.status})`, code: reply.code ?? 'REFUSED' }
  try {
    const body = JSON.parse(text) as { data?: unknown; errors?: unknown }
    if (reply.status < 400 && body !== null && typeof body === 'object' && !Array.isArray(body) && 'data' in body) {
      if (body.errors === undefined) return { data: true, json: text, malformed: 0 }
      // A result with errors: the same rules, the text kept as it came when they are well formed.
      const e = graphqlErrors(Array.isArray(body.errors) ? body.errors : [body.errors], fallback)
      if (e.malformed === 0 && Array.isArray(body.errors)) return { data: true, json: text, malformed: 0 }
      return { data: true, json: JSON.stringify({ ...body, errors: e.errors }), malformed: Math.max(1, e.malformed) }
    }
    if (body !== null && typeof body === 'object' && Array.isArray(body.errors) && body.errors.length > 0) return { data: false, ...graphqlErrors(body.errors, fallback) }
  } catch {}
  return { data: false, errors: [{ message: fallback.message, extensions: { code: fallback.code } }], malformed: 0 }
}

export class ClientConnection {
  readonly id = randomUUID()
  readonly hub: SubscriptionHub
  readonly ws: WebSocket
  readonly routeName: string
  readonly upgrade: IncomingMessage
  /**
   * The upgrade's request id (its 101 access line's reqId), by the route's request-id rule: every
   * operation starts with it, so one refused before (or without) the chain's request-id filter
   * is still logged under the id that joins it to its connection.
   */
  readonly reqId: string
  readonly writer: ProtocolWriter
  readonly protocol: ProtocolName
  readonly subs = new Map<string, Subscription>()
  /** Subscribes whose filter chain is still running, by id. */
  readonly #pending = new Map<string, { cancelled: boolean }>()
  /** Subscribes completed by the client while their chain still runs (no longer in #pending). */
  #cancelledPending = 0
  #state: ConnState
  #req: IncomingMessage
  #initPayload: Record<string, unknown> | undefined = undefined
  #inited = false
  #initTimer: NodeJS.Timeout | undefined
  tenant: string | undefined = undefined
  #tenantKnown = false
  tier: Tier | undefined = undefined
  tierMetrics: TierMetrics
  queue: DeliveryQueue<Subscription> | undefined = undefined
  #bucket: TokenBucket | undefined = undefined
  #highWater: number
  #lowWater: number
  #timer: NodeJS.Timeout | undefined = undefined
  #awaitDrain = false
  #pumping = false
  #accounted = 0
  #alive = true
  /** subscriptions.keepAliveMs when it was accepted (0: no keep-alive); a reload does not change it. */
  readonly keepAliveMs: number
  /** Subscriptions replaying from the log, fed as the queue drains (see refill). */
  readonly #feeding = new Set<Subscription>()
  #refilling = false
  #refillSoon: NodeJS.Immediate | undefined = undefined
  /** Replayed entries wait in the queue up to half its bounds (the rest stays in the log). */
  #feedEvents = 1
  #feedBytes = 1

  constructor(hub: SubscriptionHub, ws: WebSocket, upgrade: IncomingMessage, routeName: string, protocol: ProtocolName, reqId?: string) {
    this.hub = hub
    this.ws = ws
    this.upgrade = upgrade
    this.#req = upgrade
    this.routeName = routeName
    this.reqId = reqId ?? routeIncomingRequestId(hub.route(routeName) ?? {}, upgrade.headers)
    this.protocol = protocol
    this.writer = new ProtocolWriter(protocol)
    this.tierMetrics = hub.metrics.tiers.none
    this.keepAliveMs = hub.config.keepAliveMs
    this.#highWater = Math.max(1024, hub.config.qos.socketHighWaterBytes)
    this.#lowWater = this.#highWater >> 1
    this.tierMetrics.connections.inc()
    if (protocol === TOPICS) this.#state = 'ready'
    else {
      this.#state = 'init'
      this.#initTimer = setTimeout(() => {
        if (this.#state === 'init') this.#close(CLOSE.initTimeout, 'Connection initialisation timeout')
      }, hub.config.connectionInitTimeoutMs)
      this.#initTimer.unref()
    }
    ws.on('message', this.#onMessage)
    ws.on('pong', () => (this.#alive = true))
    ws.on('close', () => this.#onClose())
    ws.on('error', (err) => {
      // ws refusing a frame (oversized, not UTF-8, bad framing) closes the connection itself
      // with the code it put on the error: one of the gateway's closes, counted like the others.
      const code = wsCloseCode(err)
      if (code !== undefined && this.#state !== 'closing' && this.#state !== 'closed') {
        this.#state = 'closing'
        hub.metrics.closes.labels(String(code)).inc()
      }
      hub.logger.debug({ err: { message: err.message, code: (err as { code?: unknown }).code }, conn: this.id }, 'client websocket error')
    })
  }

  // --- lifecycle ---------------------------------------------------------------------------------

  heartbeat(): void {
    if (this.#state === 'closed') return
    if (!this.#alive) {
      // Judged after the poll phase: after an event-loop stall (a GC pause, a large event) longer
      // than the interval this timer runs before the sockets are read, and a live client's pong
      // or message waiting in the kernel did not count.
      setImmediate(this.#checkAlive)
      return
    }
    this.#alive = false
    this.ws.ping()
    const ka = this.writer.keepAlive()
    // A reply like any other (#sendNow): written past the high-water mark it counts toward the
    // unread cap; sent around it, a client that kept sending but never read grew by a `ka` per interval, never closed.
    if (ka !== undefined && (this.#state === 'ready' || this.#state === 'draining')) this.#sendNow(ka)
  }

  readonly #checkAlive = (): void => {
    if (this.#alive || this.#state === 'closed') return
    // Counted and logged: these drops were invisible, a client's network or a proxy eating
    // pongs indistinguishable from the client leaving. No close frame: nothing reads it.
    // One already closing was counted with its close code.
    if (this.#state !== 'closing') {
      this.#state = 'closing'
      this.hub.metrics.closes.labels('keepalive').inc()
      this.hub.keepAliveLost({ conn: this.id, route: this.routeName, tenant: this.tenant, protocol: this.protocol, keepAliveMs: this.keepAliveMs })
    }
    this.ws.terminate()
  }

  /** Set while shutdown waits for the queries and mutations in flight (see goAway). */
  draining = false

  /**
   * Shutdown: flush what is queued, then 1001 Going Away (clients reconnect elsewhere with their
   * cursors). Subscriptions end at once; a query or mutation in flight is waited for first, as
   * HTTP requests in flight are (the worker's drain deadline bounds the wait): cut by the 1001,
   * its result was lost and graphql-ws clients re-sent it on reconnect — a mutation ran twice.
   */
  goAway(): void {
    if (this.#state === 'closing' || this.#state === 'closed' || this.#state === 'draining') return
    const wasReady = this.#state === 'ready'
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    if (wasReady) {
      this.#flushAll()
      let singles = false
      for (const sub of this.subs.values()) {
        if (sub.stream === undefined) {
          singles = true
          break
        }
      }
      if (singles) {
        // Nothing more is queued or delivered for subscriptions (deliver and pump want 'ready'),
        // and admissions still running end unanswered when their chain returns (never sent
        // upstream, so the client's re-send on reconnect is safe).
        this.#state = 'draining'
        for (const sub of [...this.subs.values()]) if (sub.stream !== undefined) sub.end(true, 'closed')
        this.draining = true
        this.drainStep()
        return
      }
    }
    this.#goAwayNow()
  }

  /** Draining: close with 1001 once no query or mutation is left in flight. */
  drainStep(): void {
    if (this.#state !== 'draining' || this.subs.size > 0) return
    this.draining = false
    this.#goAwayNow()
  }

  #goAwayNow(): void {
    this.draining = false
    this.#state = 'closing'
    this.hub.metrics.closes.labels(String(CLOSE.goingAway)).inc()
    this.ws.close(CLOSE.goingAway, 'gateway shutting down')
  }

  terminate(): void {
    this.ws.terminate()
  }

  #close(code: number, reason: string): void {
    if (this.#state === 'closed' || this.#state === 'closing') return
    this.#state = 'closing'
    this.hub.metrics.closes.labels(String(code)).inc()
    // Bytes, not characters: ws throws on a reason over 123 bytes of UTF-8 (an id or a message
    // type of non-ASCII characters quoted in it), and the connection would stay open, deaf.
    this.ws.close(code, closeReason(reason))
  }

  #onClose(): void {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    this.draining = false
    if (this.#initTimer !== undefined) clearTimeout(this.#initTimer)
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    if (this.#drainCheck !== undefined) clearTimeout(this.#drainCheck)
    if (this.#refillSoon !== undefined) clearImmediate(this.#refillSoon)
    this.#refillSoon = undefined
    this.#timer = undefined
    // Admissions still running end when their chain returns (the state says why: `closed`, not
    // the client's `stopped`).
    for (const sub of [...this.subs.values()]) sub.end(true, 'closed')
    this.subs.clear()
    this.#feeding.clear()
    if (this.tier !== undefined) this.hub.backlogged[this.tier].delete(this)
    this.hub.adjustQueued(-this.#accounted)
    this.#accounted = 0
    this.queue = undefined
    this.tierMetrics.connections.dec()
    this.hub.connections.delete(this)
    this.hub.host.bridges.delete(this)
  }

  // --- incoming ----------------------------------------------------------------------------------

  readonly #onMessage = (data: RawData, isBinary: boolean): void => {
    this.#alive = true
    if (this.#state === 'closed' || this.#state === 'closing') return
    void isBinary
    // A throw out of a ws 'message' listener is uncaught: it would take down the worker thread
    // and every connection on it. Whatever a message provokes costs this connection only.
    try {
      this.#handle(data)
    } catch (err) {
      this.hub.logger.error({ err, conn: this.id }, 'client message handling failed; closing the connection with 1011')
      this.#close(CLOSE.internalError, 'internal error')
    }
  }

  #handle(data: RawData): void {
    const text = Buffer.isBuffer(data) ? data.toString('utf8') : Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data).toString('utf8')
    const cmd = parseClientMessage(this.protocol, text)
    switch (cmd.t) {
      case 'bad':
        if (this.protocol === TRANSPORT_WS) {
          this.#close(CLOSE.badRequest, cmd.reason)
          return
        }
        // Legacy graphql-ws: the `error` for that id ends the operation in the client
        // (subscriptions-transport-ws deletes it), so one running under that id — a malformed
        // `start` reusing it — ends here too, as that library's server does, instead of running on
        // unseen (its upstream stream and quota slot held until the socket closes).
        // The topic protocol likewise: its `error` for an id tells the client that id is over
        // (see the duplicate subscribe in #subscribe), so a malformed message naming a running
        // operation ends it rather than leave it delivering to a client that dropped it.
        if (cmd.id !== undefined) this.#stop(cmd.id, [{ message: cmd.reason, extensions: { code: 'BAD_REQUEST' } }])
        this.#sendNow(this.writer.badMessage(cmd.reason, cmd.id))
        return
      case 'init':
        this.#init(cmd.payload)
        return
      case 'subscribe':
        this.#subscribe(cmd)
        return
      case 'stop':
        this.#stop(cmd.id)
        return
      case 'replay':
        this.#replay(cmd.id, cmd.cursor)
        return
      case 'ping':
        this.#sendNow(this.writer.pong(cmd.payload))
        return
      case 'pong':
        return
      case 'terminate':
        this.#close(1000, 'client terminated')
        return
    }
  }

  /**
   * The client ends operation `id` (complete, stop, unsubscribe); nothing is sent for it after.
   * With `errors`: the gateway ends it with that `error`, which the caller sends (no `complete`).
   * `replaced`: a legacy `start` reusing the id ends it, and no `complete` may end the new one.
   */
  #stop(id: string, errors?: readonly unknown[], replaced = false): void {
    const notify = errors === undefined
    const pending = this.#pending.get(id)
    if (pending !== undefined) {
      // The id is free again at once (the protocol allows reusing it after complete); the
      // admission still running keeps counting toward the connection's limit until it ends.
      pending.cancelled = true
      this.#pending.delete(id)
      this.#cancelledPending++
    }
    const sub = this.subs.get(id)
    sub?.end(true, notify ? 'stopped' : 'error', errors)
    // Topic clients wait for `complete` to know the id is over, also when its admission was
    // still running (a slow tenant or quota filter): that one ends silently now. Legacy graphql-ws
    // gets it too, as subscriptions-transport-ws's server answers a `stop` (its iterator's return
    // ends the forAwaitEach that sends `complete`): the protocol's word that nothing more comes for it.
    if (notify && !replaced && (this.protocol === TOPICS || this.protocol === LEGACY_WS) && (sub !== undefined || pending !== undefined)) this.#sendNow(this.writer.complete(id))
  }

  #init(payload: Record<string, unknown> | undefined): void {
    if (this.protocol === TOPICS) {
      if (this.subs.size > 0 || this.#pending.size > 0 || this.#inited) {
        this.#sendNow(this.writer.badMessage('"init" must come once, before any subscribe', undefined))
        return
      }
      this.#inited = true
      this.#merge(payload)
      this.#sendNow(this.writer.ack())
      return
    }
    if (this.#state !== 'init') {
      if (this.protocol === TRANSPORT_WS) this.#close(CLOSE.tooManyInits, 'Too many initialisation requests')
      return
    }
    clearTimeout(this.#initTimer)
    this.#initTimer = undefined
    this.#merge(payload)
    this.#state = 'ready'
    this.#sendNow(this.writer.ack())
    // Only when more follow (as subscriptions-transport-ws's server, keepAlive unset): a first
    // `ka` arms SubscriptionClient's liveness check, which then drops the socket every
    // `timeout` (30 s) without the next one, and reconnects, resubscribing everything.
    const ka = this.writer.keepAlive()
    if (ka !== undefined && this.keepAliveMs > 0) this.#sendNow(ka)
  }

  /**
   * connection_init payload values become request headers for the chain (browsers cannot set
   * any) — only those the upgrade request lacks: a header it carries (an edge that authenticated
   * the client and pinned its x-tenant-id) is not the client's to replace from its payload.
   */
  #merge(payload: Record<string, unknown> | undefined): void {
    this.#initPayload = payload
    if (payload === undefined) return
    const map = this.hub.config.initPayloadHeaders
    const headers: Record<string, string | string[] | undefined> = { ...this.upgrade.headers }
    let changed = false
    for (const key in map) {
      const v = payload[key]
      if (typeof v === 'string' && this.upgrade.headers[map[key]!] === undefined) {
        headers[map[key]!] = v
        changed = true
      }
    }
    const nested = payload.headers
    if (nested !== null && typeof nested === 'object' && !Array.isArray(nested)) {
      const allowed = new Set(Object.values(map))
      for (const [k, v] of Object.entries(nested as Record<string, unknown>)) {
        const lower = k.toLowerCase()
        if (allowed.has(lower) && typeof v === 'string' && this.upgrade.headers[lower] === undefined) {
          headers[lower] = v
          changed = true
        }
      }
    }
    // The upgrade request with these headers: filters read ctx.req.headers as for any request.
    if (changed) this.#req = Object.create(this.upgrade, { headers: { value: headers, enumerable: true, writable: true } }) as IncomingMessage
  }

  /** Refuse operation `cmd` (not admitted): the error to the client, counted, and its access line. */
  #refuse(cmd: SubscribeCommand, ctx: RequestContext | undefined, code: string, message: string, extensions?: Record<string, unknown>): void {
    this.hub.metrics.rejections.labels(code).inc()
    this.#sendNow(this.writer.error(cmd.id, [{ message, extensions: { code, ...extensions } }]))
    if (ctx !== undefined) ctx.errorCode ??= code
    this.accessLine(ctx, cmd, statusOf(code, 400), 'refused', code)
  }

  /**
   * One access line per operation over the socket, when it ends: HTTP requests get one each, and
   * a terminated route's operations (a subscription, a query or mutation sent over the socket)
   * were in no access log at all — only the upgrade's 101. The HTTP line's fields where they
   * apply (method "WS"; `path` without its query string, which may carry secrets), plus the
   * operation's id, protocol, connection and outcome. Under `log.access` like HTTP lines
   * (`sampleRate` for the others; status >= 500 and 499, an operation the client abandoned,
   * always, as on the HTTP path).
   */
  accessLine(ctx: RequestContext | undefined, cmd: SubscribeCommand, status: number, outcome: OpOutcome, code: string | undefined): void {
    // Per-operation metrics (the upgrade's 101 is the only thing igw_requests_total sees of a socket).
    const opType = ctx?.graphql?.operationType ?? 'none'
    const m = this.hub.metrics
    // A refusal before the chain (no ctx, or a ctx without a tier yet) is still the connection's
    // tier once its first operation fixed it: "" only while nothing has.
    m.operations.labels(this.routeName, opType, String(status), ctx?.tier ?? this.tier ?? '').inc()
    if (ctx !== undefined && (opType === 'query' || opType === 'mutation')) m.operationDuration.labels(this.routeName, opType).observe((performance.now() - ctx.startTime) / 1000)
    const access = this.hub.host.snapshot.config.log.access
    if (!access.enabled || !(status >= 500 || status === 499 || access.sampleRate >= 1 || Math.random() < access.sampleRate)) return
    const url = this.upgrade.url ?? '/'
    const q = url.indexOf('?')
    const gql = ctx?.graphql
    const tp = this.upgrade.headers.traceparent
    const now = performance.now()
    this.hub.host.logger.info(
      {
        reqId: (ctx === undefined ? this.reqId : ctx.id) || undefined,
        traceId: typeof tp === 'string' ? traceIdOf(tp) : undefined,
        method: 'WS',
        path: q === -1 ? url : url.slice(0, q),
        route: this.routeName,
        status,
        tenant: ctx?.tenant ?? this.tenant,
        op: clipLogField(gql !== undefined ? gql.opName : cmd.operationName),
        opType: gql?.operationType,
        opId: clipLogField(cmd.id),
        topic: clipLogField(cmd.topic),
        protocol: this.protocol,
        conn: this.id,
        outcome,
        persistedId: gql?.persistedId,
        cost: ctx === undefined || ctx.costSource === 'default' ? undefined : ctx.cost,
        code: code ?? ctx?.errorCode,
        filter: ctx?.answeredBy,
        aborted: status === 499 || undefined,
        filterMs: ctx === undefined ? undefined : roundMs(ctx.filterMs),
        durMs: ctx === undefined ? 0 : roundMs(now - ctx.startTime),
      },
      'access',
    )
  }

  /** Returns the admission in flight (undefined when the subscribe was refused or answered at once). */
  #subscribe(cmd: SubscribeCommand): Promise<void> | undefined {
    if (this.#state === 'init') {
      if (this.protocol === TRANSPORT_WS) this.#close(CLOSE.unauthorized, 'Unauthorized')
      else this.#refuse(cmd, undefined, 'BAD_REQUEST', 'send connection_init first')
      return
    }
    if (this.#state === 'draining') {
      // Shutting down: not admitted, and not answered either (an error would end the operation
      // for good in the client); the 1001 that follows has clients re-send it elsewhere.
      this.hub.metrics.rejections.labels('OVERLOADED').inc()
      this.accessLine(undefined, cmd, 503, 'refused', 'OVERLOADED')
      return
    }
    if (this.subs.has(cmd.id) || this.#pending.has(cmd.id)) {
      if (this.protocol === TRANSPORT_WS) {
        this.#close(CLOSE.subscriberExists, `Subscriber for ${cmd.id} already exists`)
        return
      }
      if (this.protocol === TOPICS) {
        // graphql-transport-ws closes the socket (4409 above): a client bug, and every other
        // operation on it goes too. The topic protocol refuses per operation and keeps the socket,
        // but its `error` for an id means that id is over (a refusal, a stream's error), so the
        // running one ends with it: answering the duplicate with an error while the first ran on
        // left the client believing it ended (its events kept coming, its stream and quota slot
        // held, a resubscribe under the id refused again). One `error` (BAD_REQUEST, "already
        // exists"), nothing more for the id, which is free at once: subscribe again, or use
        // another id for a second subscription to the same topic (the id defaults to the topic).
        const message = `subscription "${cmd.id.slice(0, 64)}" already exists; it has been ended: use another id for a second subscription, or unsubscribe first`
        this.#stop(cmd.id, [{ message, extensions: { code: 'BAD_REQUEST' } }])
        this.#refuse(cmd, undefined, 'BAD_REQUEST', message)
        return
      }
      // Legacy graphql-ws has no way to refuse a start without ending the operation of that id
      // in the client (its `error` does): subscriptions-transport-ws's server ends the running
      // operation and starts the new one. An `error` here left the old one running unseen —
      // its upstream stream and quota slot held until the socket closed, its events discarded.
      this.#stop(cmd.id, undefined, true)
    }
    const cfg = this.hub.config
    if (this.subs.size + this.#pending.size + this.#cancelledPending >= cfg.maxSubscriptionsPerConnection) {
      this.#refuse(cmd, undefined, 'QUOTA_EXCEEDED', `at most ${cfg.maxSubscriptionsPerConnection} operations per connection`)
      return
    }
    const route = this.hub.route(this.routeName)
    if (route === undefined) {
      this.#refuse(cmd, undefined, 'NOT_FOUND', 'this route no longer terminates subscriptions')
      return
    }
    let { query, operationName, variables } = cmd
    let exactVariables = cmd.exact?.variables
    let rootField: string | undefined
    let filter: unknown
    if (cmd.topic !== undefined) {
      const topic = Object.hasOwn(cfg.topics, cmd.topic) ? cfg.topics[cmd.topic] : undefined
      if (topic === undefined) {
        this.#refuse(cmd, undefined, 'BAD_REQUEST', `unknown topic "${cmd.topic.slice(0, 64)}"`)
        return
      }
      for (const k of Object.keys(variables ?? {})) {
        if (!topic.clientVariables.includes(k)) {
          this.#refuse(cmd, undefined, 'BAD_REQUEST', `topic "${cmd.topic}" does not take variable "${k.slice(0, 64)}"`)
          return
        }
      }
      query = topic.query
      operationName = topic.operationName
      variables = { ...topic.variables, ...variables }
      if (Object.keys(variables).length === 0) variables = undefined
      if (cmd.exact !== undefined) exactVariables = { ...topic.variables, ...cmd.exact.variables }
      filter = cmd.filter
      rootField = ''
    }
    const gql = new GraphQLRequest('POST', undefined, query, operationName, variables, cmd.extensions)
    // Numbers beyond 2^53 (or 1e400) in variables or extensions: the filters see them parsed, the
    // backend and the dedup key get the client's digits (toSend, after the chain).
    const exact: ExactOperation | undefined =
      cmd.exact === undefined ? undefined : { parsed: { variables, extensions: cmd.extensions }, exact: { variables: exactVariables, extensions: cmd.exact.extensions } }
    let matcher: EventMatcher | undefined
    if (rootField !== undefined) {
      try {
        matcher = compileEventFilter(filter, this.hub.rootField(gql.document, operationName))
      } catch (err) {
        this.#refuse(cmd, undefined, 'BAD_REQUEST', err instanceof EventFilterError ? err.message : `topic query: ${(err as Error).message}`)
        return
      }
    }
    // Its deadline is the route's timeouts.totalMs from now, as an HTTP request's or a relayed
    // handshake's: a filter that never decides (a hung dependency) no longer leaves the operation
    // unanswered, holding its place, for ever. Nothing reads it once a subscription is admitted.
    const ctx = new RequestContext(this.#req, undefined, route, this.hub.host.logger, performance.now(), this.reqId)
    ctx.graphql = gql
    // Every operation the hub's own limit counts: those admitted, those being admitted, and those
    // the client completed while their admission still runs (they hold their place until it ends).
    ctx.subscription = { id: cmd.id, connectionId: this.id, topic: cmd.topic, active: this.subs.size + this.#pending.size + this.#cancelledPending }
    const pending = { cancelled: false }
    this.#pending.set(cmd.id, pending)
    const snap = this.hub.host.snapshot
    // Hold the snapshot while its filters run, so a reload cannot close them mid-call.
    snap.inflight++
    return runRequestChain(ctx, route, this.hub.host.metrics)
      .then(
        (reply) => {
          ctx.filterMs = performance.now() - ctx.startTime
          this.#admissionOver(cmd.id, pending)
          if (pending.cancelled || this.#state !== 'ready') {
            ctx.runCleanups()
            // Given up before its answer, as an HTTP request the client aborts.
            this.accessLine(ctx, cmd, 499, pending.cancelled ? 'stopped' : 'closed', undefined)
            return
          }
          if (reply !== undefined) {
            // Counted as an HTTP request answered by a filter would be: a refusal by its code
            // (statements, budget alerts), a result (a cached query) as a request.
            if (reply.code !== undefined && ctx.errorCode === undefined) ctx.errorCode = reply.code
            this.hub.host.usage.request(ctx, reply.status)
            const result = this.#answerLocally(cmd.id, reply, cmd.topic, ctx.answeredBy)
            ctx.runCleanups()
            this.accessLine(ctx, cmd, reply.status, result ? 'complete' : 'refused', undefined)
            return
          }
          this.#admitted(cmd, ctx, gql, route, matcher, exact, snap)
        },
        (err: unknown) => {
          ctx.filterMs = performance.now() - ctx.startTime
          this.#admissionOver(cmd.id, pending)
          ctx.runCleanups()
          this.hub.logger.error({ err, conn: this.id }, 'subscribe failed')
          if (this.#state === 'ready') this.#refuse(cmd, ctx, 'INTERNAL_SERVER_ERROR', 'subscribe failed')
          else this.accessLine(ctx, cmd, 499, 'closed', undefined)
        },
      )
      .catch((err: unknown) => {
        // A bug past the chain must cost this operation, not the worker and its connections.
        this.hub.logger.error({ err, conn: this.id }, 'subscribe failed after admission')
        const sub = this.subs.get(cmd.id)
        const errors = [{ message: 'subscribe failed', extensions: { code: 'INTERNAL_SERVER_ERROR' } }]
        if (sub !== undefined && sub.ctx === ctx) {
          // Its access line is written as it ends.
          if (this.#state === 'ready') {
            this.hub.metrics.rejections.labels('INTERNAL_SERVER_ERROR').inc()
            this.#sendNow(this.writer.error(cmd.id, errors))
          }
          sub.end(true, 'error', errors)
          return
        }
        ctx.runCleanups()
        if (this.#state === 'ready') this.#refuse(cmd, ctx, 'INTERNAL_SERVER_ERROR', 'subscribe failed')
      })
      .finally(() => snap.release())
  }

  /** A subscribe's chain finished: it leaves #pending (unless the client completed it meanwhile). */
  #admissionOver(id: string, pending: { cancelled: boolean }): void {
    if (this.#pending.get(id) === pending) this.#pending.delete(id)
    else this.#cancelledPending-- // only a stop takes an entry out of #pending early
  }

  /** A filter answered the subscribe itself: a result (e.g. a cached query: true) or a refusal (false). */
  #answerLocally(id: string, reply: LocalReply, topic: string | undefined, answeredBy: string | undefined): boolean {
    const p = replyPayload(reply)
    if (p.malformed > 0) {
      this.hub.host.metrics.filterErrors.labels(answeredBy ?? MALFORMED_REPLY).inc()
      this.hub.logger.warn({ conn: this.id, route: this.routeName, filter: answeredBy, id: id.slice(0, 64), status: reply.status, code: reply.code, body: String(reply.body).slice(0, 256) }, 'a filter answered a subscribe with errors that are not GraphQL errors; replaced')
    }
    if (p.data) {
      this.#sendNow(this.writer.result(id, p.json, topic))
      this.#sendNow(this.writer.complete(id))
      return true
    }
    const code = (p.errors[0] as { extensions?: { code?: unknown } } | undefined)?.extensions?.code
    this.hub.metrics.rejections.labels(typeof code === 'string' ? code : (reply.code ?? 'REFUSED')).inc()
    this.#sendNow(this.writer.error(id, p.errors))
    return false
  }

  #admitted(cmd: SubscribeCommand, ctx: RequestContext, gql: GraphQLRequest, route: RouteRuntime, matcher: EventMatcher | undefined, exact: ExactOperation | undefined, snap: Snapshot): void {
    let opType: string | undefined
    try {
      void gql.document
      opType = gql.operationType
    } catch (err) {
      ctx.runCleanups()
      this.#refuse(cmd, ctx, 'GRAPHQL_PARSE_FAILED', (err as Error).message)
      return
    }
    if (gql.query === undefined || opType === undefined) {
      ctx.runCleanups()
      this.#refuse(cmd, ctx, 'BAD_REQUEST', 'the document has no operation to run (or operationName names none)')
      return
    }
    if (!this.#tenantKnown) {
      this.#tenantKnown = true
      this.tenant = ctx.tenant
    } else if (ctx.tenant !== this.tenant) {
      // Never: headers and payload are fixed per connection. Refuse rather than mix tenants.
      ctx.runCleanups()
      this.#refuse(cmd, ctx, 'UNKNOWN_TENANT', 'one connection serves one tenant')
      return
    }
    const { headers, params } = this.#credentials(ctx)
    // The upstream handshake would throw on these (inside graphql-ws, where nothing catches it).
    const bad = invalidHeader(headers)
    if (bad !== undefined) {
      ctx.runCleanups()
      this.#refuse(cmd, ctx, 'BAD_REQUEST', `"${bad.slice(0, 64)}" is not a valid HTTP header value for the upstream connection`)
      return
    }
    if (this.tier === undefined) this.#setTier(this.#connectionTier(ctx))
    const { variables, extensions } = toSend(gql, exact)
    let stream: Stream | undefined
    if (opType === 'subscription') {
      stream = this.hub.streamFor(ctx, gql, route, this.upgrade.url ?? '/', headers, params, variables, extensions)
      if (stream === undefined) {
        ctx.runCleanups()
        const max = this.hub.config.upstream.maxStreams
        this.#refuse(cmd, ctx, 'OVERLOADED', `this gateway worker holds its limit of ${max} upstream subscriptions and every one has subscribers; retry later`, { limit: max, retryAfterSeconds: 1 })
        return
      }
    }
    // A subscription keeps the event filters of the chain that admitted it (see Subscription).
    const sub = stream === undefined ? new Subscription(this, cmd, ctx, matcher) : new Subscription(this, cmd, ctx, matcher, eventFiltersOf(route), snap)
    this.subs.set(cmd.id, sub)
    // igw_subscriptions_active counts subscriptions only (its share of igw_subscription_upstreams
    // is the dedup ratio): a query or mutation in flight over the socket is no subscription.
    if (stream !== undefined) {
      sub.stream = stream
      this.tierMetrics.subscriptions.inc()
    }
    // The tenant's usage (reports, statements, usedToday without Redis): the socket's upgrade has
    // no tenant yet, so a terminated route's operations were never counted at all.
    if (opType === 'subscription') this.hub.host.usage.subscription(ctx, 101)
    else this.hub.host.usage.request(ctx, 200)
    if (stream === undefined) {
      if (resultFiltersOf(route).length > 0) {
        // Its filters see its result (onSocketResult): a reload must not close them before it ends.
        snap.inflight++
        ctx.addCleanup(() => snap.release())
      }
      this.#single(sub, { query: gql.query!, operationName: gql.operationName ?? null, variables: variables ?? null, extensions: extensions ?? null }, route, headers, params, opType === 'mutation')
      return
    }
    const cursor = cmd.cursor
    // Topic protocol: where it stands is the client's cursor only when it is one of this stream's
    // (what it missed follows); anything else (forged, another key, another subscription's) starts
    // at the head, as the `invalid` gap after it says. Echoed, a client that keeps the cursor it
    // was acknowledged with resumed from it again on every reconnect, invalid each time.
    const own = this.protocol === TOPICS && cursor !== undefined && this.hub.codec.decode(cursor)?.streamId === stream.streamId
    const ack = this.writer.subscribed(cmd.id, cmd.topic ?? '', own ? cursor! : stream.headCursor)
    if (ack !== undefined) this.#sendNow(ack)
    // Its own connection, should the stream have to move to this subscriber's credentials (after
    // an upstream drop, the stream reconnects with those of the sharer that joined last).
    stream.attach(sub, cursor, () => this.hub.upstreamFor(route, this.upgrade.url ?? '/', ctx.tenant, headers, params))
  }

  /**
   * Queries and mutations over the socket: one upstream operation, answered directly (no sharing,
   * no log). graphql-ws re-sends every operation still open when its connection comes back after
   * a drop: harmless for a query not answered yet, but a mutation the backend may already have
   * run would run twice. A mutation in flight when the upstream connection drops ends with
   * UPSTREAM_UNAVAILABLE instead (like an HTTP mutation whose connection broke: never re-sent).
   * One whose whole result arrived (only its `complete` was still to come) is over for the
   * client: it completes, and a query is not re-sent for a second result. One cut in the middle
   * of an incremental result (`hasNext: true`) ends with UPSTREAM_UNAVAILABLE: run again, its
   * parts would come twice.
   */
  #single(sub: Subscription, payload: UpstreamPayload, route: RouteRuntime, headers: Record<string, string>, params: Record<string, unknown> | undefined, mutation: boolean): void {
    const upstream = this.hub.upstreamFor(route, this.upgrade.url ?? '/', sub.ctx.tenant, headers, params)
    // The route's filters that see socket results (the cache invalidating what a mutation
    // touched, as its HTTP response phase does). A result waits for them before it is sent
    // (read-your-writes), and what follows it waits behind it.
    const hooks = resultFiltersOf(route)
    let settled = false
    let gate: Promise<void> | undefined
    const hook = (result: string | undefined, mayHaveRun: boolean): void => {
      settled = true
      const p = this.#socketResult(hooks, sub.ctx, result, mayHaveRun)
      if (p !== undefined) gate = gate === undefined ? p : gate.then(() => p)
    }
    const later = (fn: () => void): void => {
      if (gate === undefined) fn()
      // A throw must not stall what follows on the gate (as it would a message handler: logged, this operation's only).
      else gate = gate.then(fn).then(undefined, (err: unknown) => this.hub.logger.error({ err, conn: this.id, id: sub.id }, 'delivering a socket operation\'s result failed'))
    }
    const fail = (errors: unknown[]): void =>
      later(() => {
        if (sub.closed) return
        this.#sendNow(this.writer.error(sub.id, errors))
        sub.end(true, 'error', errors)
      })
    const done = (): void =>
      later(() => {
        if (sub.closed) return
        this.#sendNow(this.writer.complete(sub.id))
        sub.end(true, 'complete')
      })
    /** What the client has of the result: none yet, all of it, or the first parts of an incremental one. */
    let answered: 'none' | 'all' | 'part' = 'none'
    const lost: UpstreamListener = {
      upstreamLost: () => {
        if (sub.closed) return
        if (answered === 'all') {
          done()
          return
        }
        // A query with no result yet is re-sent when the connection is back.
        if (answered === 'none' && !mutation) return
        this.hub.logger.debug({ conn: this.id, id: sub.id, upstream: upstream.url, answered }, 'upstream connection lost with an operation in flight; not re-sent')
        const message =
          answered === 'part'
            ? 'upstream connection lost before the rest of the result; the operation was not re-sent'
            : 'upstream connection lost while the mutation was in flight; it was not re-sent (it may or may not have been executed)'
        if (hooks.length > 0 && !settled) hook(undefined, true)
        fail([{ message, extensions: { code: 'UPSTREAM_UNAVAILABLE' } }])
      },
      upstreamRestored: () => {},
    }
    upstream.listeners.add(lost)
    const cancel = upstream.subscribe(
      payload,
      {
        next: (r) => {
          if (sub.closed) return
          answered = (r as { hasNext?: unknown }).hasNext === true ? 'part' : 'all'
          const text = JSON.stringify(r)
          if (hooks.length > 0) hook(text, true)
          later(() => {
            if (!sub.closed) this.#sendNow(this.writer.result(sub.id, text, sub.topic))
          })
        },
        error: (e) => {
          if (sub.closed) return
          // GraphQL errors: the upstream refused the operation (nothing ran); anything else is
          // its connection failing, maybe after the operation reached it — or after its whole
          // result did (a final close, which upstreamLost does not hear of): it is over.
          if (answered === 'all' && !Array.isArray(e)) {
            done()
            return
          }
          if (hooks.length > 0 && !settled) hook(undefined, !Array.isArray(e))
          fail(upstreamErrors(e))
        },
        complete: () => {
          if (!sub.closed) done()
        },
      },
    )
    // Its time budget, as over HTTP: the route's timeouts.totalMs from the subscribe, or less
    // when a filter set an earlier deadline (a persisted operation's timeoutMs): ctx.deadline. A
    // query or mutation to a backend that never answered held the client, and its slot, for ever.
    const deadline = sub.ctx.deadline
    let timer: NodeJS.Timeout | undefined
    if (deadline !== Number.POSITIVE_INFINITY) {
      const budgetMs = Math.round(deadline - sub.ctx.startTime)
      timer = setTimeout(() => {
        timer = undefined
        if (sub.closed) return
        cancel() // nothing more from the upstream reaches this operation
        upstream.listeners.delete(lost)
        // Its whole result arrived and only the upstream's `complete` is missing: it is over for
        // the client, as after a drop (an error here told it the result it already has failed).
        if (answered === 'all') {
          done()
          return
        }
        this.hub.host.metrics.proxyErrors.labels(route.name, 'UPSTREAM_TIMEOUT').inc()
        if (hooks.length > 0 && !settled) hook(undefined, true)
        fail([{ message: `the upstream did not complete the ${mutation ? 'mutation' : 'operation'} within its time budget of ${budgetMs} ms`, extensions: { code: 'UPSTREAM_TIMEOUT' } }])
      }, Math.max(0, deadline - performance.now()))
    }
    sub.setCancel(() => {
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      // Ended before any result (the client stopped it, its socket closed): it was sent, so it may have run.
      if (hooks.length > 0 && !settled) hook(undefined, true)
      upstream.listeners.delete(lost)
      cancel()
    })
  }

  /** Run the route's onSocketResult hooks; a promise when one of them has to be waited for. */
  #socketResult(hooks: readonly Filter[], ctx: RequestContext, result: string | undefined, mayHaveRun: boolean): Promise<void> | undefined {
    let waits: Promise<void>[] | undefined
    for (const f of hooks) {
      const fail = (err: unknown): void => {
        this.hub.host.metrics.filterErrors.labels(f.name).inc()
        ctx.log.error({ err, filter: f.name }, 'onSocketResult failed')
      }
      try {
        const r = f.onSocketResult!(ctx, result, mayHaveRun)
        if (r !== undefined && typeof (r as Promise<void>).then === 'function') (waits ??= []).push((r as Promise<void>).then(undefined, fail))
      } catch (err) {
        fail(err)
      }
    }
    if (waits === undefined) return undefined
    return waits.length === 1 ? waits[0] : Promise.all(waits).then(() => undefined)
  }

  /**
   * Topic protocol re-send on demand: the subscription starts over from `cursor`. It is a
   * resubscribe, admitted like any subscribe (the route's chain with ctx.subscription set, so
   * tenant and quota filters count it): each replay can re-send up to replay.maxEvents events,
   * so it must cost what a subscribe with that cursor costs. The current subscription ends first
   * (its quota slot is released: a replay never needs two); refused, the client gets the error
   * and the subscription stays ended. It stays on its stream, delivering nothing, until the new
   * admission is over, so the stream does not close (lingerMs 0) in between.
   */
  #replay(id: string, cursor: string): void {
    const old = this.subs.get(id)
    const stream = old?.stream
    if (old === undefined || stream === undefined || stream.done) {
      // An `error` for the id ends it (see #subscribe's duplicate): one still being admitted, or
      // whose stream just ended, does not go on after it (no `subscribed`, no second terminal).
      const message = `no live subscription "${id.slice(0, 64)}" to replay`
      this.#stop(id, [{ message, extensions: { code: 'BAD_REQUEST' } }])
      this.#sendNow(this.writer.badMessage(message, id))
      return
    }
    old.end(false, 'replayed')
    const unpin = (): void => stream.detach(old)
    const admission = this.#subscribe({ ...old.cmd, cursor })
    if (admission === undefined) unpin()
    else void admission.then(unpin, unpin)
  }

  /**
   * What the upstream connection is opened with: the configured client headers, the chain's
   * header edits (the resolved tenant, …), and the init payload with those edits applied, so a
   * tenant a client claimed in its payload never reaches the backend over the one the chain chose.
   */
  #credentials(ctx: RequestContext): { headers: Record<string, string>; params: Record<string, unknown> | undefined } {
    const cfg = this.hub.config
    const headers: Record<string, string> = {}
    for (const name of cfg.upstream.forwardHeaders) {
      const v = this.#req.headers[name]
      if (typeof v === 'string') headers[name] = v
    }
    // The client's Host, as HTTP requests and passthrough sockets send it (a route's hostRewrite
    // replaces it: see the hub): the handshake named the upstream URL's own host unless `host`
    // was in forwardHeaders, and a backend routing on Host (an ingress, a virtual host) refused it.
    const host = this.upgrade.headers.host
    if (headers.host === undefined && typeof host === 'string' && host !== '') headers.host = host
    const edits = ctx.upstreamHeaderEdits
    if (edits !== undefined) {
      for (const [name, value] of edits) {
        if (cfg.upstream.volatileHeaders.includes(name)) continue
        if (value === null) delete headers[name]
        else headers[name] = value
      }
    }
    let params: Record<string, unknown> | undefined
    if (cfg.upstream.forwardInitPayload && this.#initPayload !== undefined) {
      params = { ...this.#initPayload }
      // A payload value the chain read as a header but did not send on (a tenant filter that
      // forwards the tenant it resolved under another name, x-org-id): the client's own claim
      // ("tenantId": "evil") must not reach the backend beside the tenant the chain chose. Kept
      // when the chain resolved no tenant (nothing to contradict) or the header is forwarded anyway.
      if (ctx.tenant !== undefined) {
        for (const [key, header] of Object.entries(cfg.initPayloadHeaders)) {
          if (Object.hasOwn(params, key) && !edits?.has(header) && !cfg.upstream.forwardHeaders.includes(header)) delete params[key]
        }
      }
      if (edits !== undefined) {
        for (const [key, header] of Object.entries(cfg.initPayloadHeaders)) {
          if (!Object.hasOwn(params, key) || !edits.has(header)) continue
          const v = edits.get(header)
          if (v === null || v === undefined) delete params[key]
          else params[key] = v
        }
        const nested = params.headers
        if (nested !== null && typeof nested === 'object' && !Array.isArray(nested)) {
          const copy: Record<string, unknown> = { ...(nested as Record<string, unknown>) }
          for (const k of Object.keys(copy)) {
            const lower = k.toLowerCase()
            if (!edits.has(lower)) continue
            const v = edits.get(lower)
            if (v === null || v === undefined) delete copy[k]
            else copy[k] = v
          }
          params.headers = copy
        }
      }
    }
    return { headers, params }
  }

  /**
   * The delivery tier of the whole connection: what is fixed for it — its tenant's tier, or a
   * verified tier claim (the subscriptions filter's `tierClaim`) — else `defaultTier`. A
   * persisted operation's manifest `tier` belongs to that operation: the connection has one
   * delivery queue, and the first operation's tier used to become every operation's, so a gold
   * manifest operation sent first on a bronze tenant's socket made all its other subscriptions
   * gold (never dropped, an 8 MiB queue), and a bronze one demoted a gold tenant's socket. So
   * the connection's tier is the principal's (ctx.principalTier), which only those two set.
   */
  #connectionTier(ctx: RequestContext): Tier {
    return ctx.principalTier ?? this.hub.config.defaultTier
  }

  #setTier(tier: Tier): void {
    this.tier = tier
    this.tierMetrics.connections.dec()
    this.tierMetrics = this.hub.metrics.tiers[tier]
    this.tierMetrics.connections.inc()
    const qos = this.hub.config.qos
    const t = qos[tier]
    this.queue = new DeliveryQueue<Subscription>({ drops: tier !== 'gold', maxQueue: t.maxQueue, maxQueueBytes: t.maxQueueBytes })
    this.#feedEvents = Math.max(1, Math.floor(t.maxQueue / 2))
    this.#feedBytes = Math.max(1, Math.floor(t.maxQueueBytes / 2))
    this.#bucket = new TokenBucket(t.ratePerSec, t.burst, performance.now())
    this.#highWater = Math.max(1024, qos.socketHighWaterBytes)
    this.#lowWater = this.#highWater >> 1
  }

  // --- outgoing ----------------------------------------------------------------------------------

  /**
   * Write a reply (ack, pong, error, a single result): it cannot wait in the delivery queue nor be
   * dropped. A client that keeps asking (pings, bad messages, queries) without reading would
   * otherwise grow the socket's buffer without bound, past every cap the queue keeps: what is
   * written while the socket stays over its high-water mark counts against a cap, and over it
   * the connection is closed with 1013 like a gold one over its queue cap. Replies are never
   * dropped, so every tier gets the hard cap of the one that never drops (gold's maxQueueBytes),
   * or its own when that is larger.
   */
  #sendNow(text: string): void {
    if (this.ws.readyState !== 1) return
    if (this.ws.bufferedAmount < this.#highWater) this.#unread = 0
    else if ((this.#unread += text.length) > this.#replyCap()) {
      this.#notReading()
      return
    }
    this.#send(text)
  }

  /** Bytes of replies written since the socket last was under its high-water mark. */
  #unread = 0

  #replyCap(): number {
    const qos = this.hub.config.qos
    return Math.max(qos.gold.maxQueueBytes, qos[this.tier ?? this.hub.config.defaultTier].maxQueueBytes)
  }

  #notReading(): void {
    this.#closeOverCap({ bufferedBytes: this.ws.bufferedAmount }, 'client does not read its replies: closing with 1013', 'replies over the connection\'s memory cap; read them, then reconnect')
  }

  /**
   * Write one message. Only a write that leaves the socket's buffer past the low-water mark asks
   * to be told when it is flushed: that is all the drain detection needs (the write that makes
   * the socket congested is always one of them), and the common write into an empty socket
   * stays free of per-write callback bookkeeping.
   */
  #send(text: string): void {
    // text.length * 3 bounds its UTF-8 size without measuring it.
    this.ws.send(text, this.ws.bufferedAmount + text.length * 3 >= this.#lowWater ? this.#onWritten : undefined)
  }

  #drainCheck: NodeJS.Timeout | undefined = undefined

  /** Stop writing until the socket drains (a flushed write calls back; a slow timer double-checks). */
  #waitDrain(): void {
    this.#awaitDrain = true
    this.#drainCheck ??= setTimeout(this.#onDrainCheck, 100)
  }

  readonly #onDrainCheck = (): void => {
    this.#drainCheck = undefined
    if (!this.#awaitDrain) return
    if (this.ws.bufferedAmount < this.#lowWater) {
      this.#awaitDrain = false
      this.#pump()
    } else this.#drainCheck = setTimeout(this.#onDrainCheck, 100)
  }

  readonly #onWritten = (): void => {
    if (this.#awaitDrain && this.ws.bufferedAmount < this.#lowWater) {
      this.#awaitDrain = false
      this.#pump()
    }
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined
    this.#pump()
  }

  /** An entry for one subscription (`replay`: read from the log for it): written now when nothing waits, else queued under the tier's rules. */
  deliver(sub: Subscription, entry: QueuedEntry, replay = false): void {
    if (this.#state !== 'ready') return
    const q = this.queue!
    if (q.empty && this.#timer === undefined && !this.#awaitDrain && this.ws.bufferedAmount < this.#highWater && (entry.kind !== 'event' || this.#bucket!.take(performance.now()))) {
      this.#write(sub, entry)
      return
    }
    const dropped = q.dropped
    const outcome = q.push({ sub, entry, bytes: entryBytes(sub, entry), replay })
    if (outcome === 'overflow') {
      this.#overCap()
      return
    }
    if (q.dropped !== dropped) this.tierMetrics.drops.inc(q.dropped - dropped)
    this.#sync()
    if (this.#timer === undefined && !this.#awaitDrain) this.#pump()
  }

  // --- replay feeds ------------------------------------------------------------------------------

  startFeed(sub: Subscription): void {
    this.#feeding.add(sub)
    this.refill()
  }

  stopFeed(sub: Subscription): void {
    this.#feeding.delete(sub)
  }

  /**
   * Room for replayed entries: they are read from the log only while the queue holds less than
   * half its tier's bounds (and the worker is under its memory budget), so a replay of any length
   * never makes a client that reads look slow. An empty queue always takes one (progress).
   */
  #feedRoom(): boolean {
    if (this.#state !== 'ready') return false
    const q = this.queue
    if (q === undefined) return false
    if (q.length === 0) return true
    return q.events < this.#feedEvents && q.bytes < this.#feedBytes && this.hub.queuedBytes < this.hub.config.qos.memoryBudgetBytes
  }

  /** Feed replaying subscriptions from the log while the queue has room, a slice each in turn. */
  readonly refill = (): void => {
    if (this.#refilling || this.#feeding.size === 0) return
    this.#refilling = true
    // Entries a turn may look at (an event filter may turn most of them away): the rest in the next turn.
    let budget = FEED_TURN
    try {
      let progress = true
      while (progress && budget > 0 && this.#feedRoom()) {
        progress = false
        for (const sub of this.#feeding) {
          for (let i = 0; i < FEED_SLICE && budget > 0 && this.#feedRoom(); i++) {
            budget--
            if (!sub.feedOne()) break
            progress = true
          }
        }
      }
    } finally {
      this.#refilling = false
    }
    if (budget <= 0 && this.#feeding.size > 0 && this.#refillSoon === undefined) this.#refillSoon = setImmediate(this.#onRefillSoon)
  }

  readonly #onRefillSoon = (): void => {
    this.#refillSoon = undefined
    this.refill()
  }

  /** A subscription ended: free what it had queued (a closing connection frees its whole queue instead). */
  purge(sub: Subscription): void {
    const q = this.queue
    if (q === undefined || this.#state === 'closed' || q.empty) return
    q.purge(sub)
    this.#sync()
  }

  /** Drop this connection's oldest queued event for the worker's memory budget (bronze, then silver). */
  shedOne(): boolean {
    const q = this.queue
    if (q === undefined || !q.policy.drops) return false
    const dropped = q.dropped
    const ok = q.dropOldest()
    if (q.dropped !== dropped) this.tierMetrics.drops.inc(q.dropped - dropped)
    this.#sync()
    return ok
  }

  #overCap(): void {
    this.#closeOverCap({ queuedBytes: this.queue?.bytes }, 'gold connection over its delivery queue cap: closing with 1013', 'delivery queue over its memory cap; reconnect with your cursor')
  }

  /** Over a memory cap: log, drop what is queued (and its share of the worker's budget), close with 1013. */
  #closeOverCap(fields: Record<string, unknown>, logMessage: string, reason: string): void {
    this.hub.logger.warn({ conn: this.id, tenant: this.tenant, tier: this.tier, ...fields }, logMessage)
    while (this.queue !== undefined && this.queue.shift() !== undefined) {}
    this.#sync()
    this.#close(CLOSE.tryAgainLater, reason)
  }

  #sync(): void {
    const q = this.queue
    if (q === undefined || this.tier === undefined) return
    const delta = q.bytes - this.#accounted
    this.#accounted = q.bytes
    if (q.empty) this.hub.backlogged[this.tier].delete(this)
    else this.hub.backlogged[this.tier].add(this)
    this.hub.adjustQueued(delta)
  }

  #congested(): boolean {
    return this.ws.bufferedAmount >= this.#highWater
  }

  #pump(): void {
    if (this.#pumping || this.#state !== 'ready') return
    const q = this.queue
    if (q === undefined) return
    this.#pumping = true
    try {
      for (const sub of q.gapOwed) {
        if (this.#congested()) {
          this.#waitDrain()
          return
        }
        q.gapOwed.delete(sub)
        const g = sub.pendingGap
        sub.pendingGap = undefined
        if (g !== undefined && !sub.closed) this.#writeGap(sub, g)
      }
      while (q.urgent.length > 0) {
        if (this.#congested()) {
          this.#waitDrain()
          return
        }
        const item = q.urgent.shift()!
        if (!item.sub.closed) this.#write(item.sub, item.entry)
      }
      const now = performance.now()
      for (let item = q.peek(); item !== undefined; item = q.peek()) {
        if (item.sub.closed) {
          q.shift()
          continue
        }
        if (this.#congested()) {
          this.#waitDrain()
          return
        }
        if (item.entry.kind === 'event' && !this.#bucket!.take(now)) {
          this.#timer = setTimeout(this.#onTimer, Math.max(1, this.#bucket!.waitMs(now)))
          return
        }
        q.shift()
        this.#write(item.sub, item.entry)
      }
    } finally {
      this.#pumping = false
      this.#sync()
    }
    if (this.#feeding.size > 0) this.refill()
  }

  /** Shutdown: everything queued goes to the socket now, whatever the rate and backpressure. */
  #flushAll(): void {
    const q = this.queue
    if (q === undefined) return
    for (const sub of q.gapOwed) {
      const g = sub.pendingGap
      sub.pendingGap = undefined
      if (g !== undefined && !sub.closed) this.#writeGap(sub, g)
    }
    q.gapOwed.clear()
    for (const item of q.urgent.splice(0)) if (!item.sub.closed) this.#write(item.sub, item.entry)
    for (let item = q.shift(); item !== undefined; item = q.shift()) if (!item.sub.closed) this.#write(item.sub, item.entry)
    this.#sync()
  }

  #write(sub: Subscription, entry: QueuedEntry): void {
    switch (entry.kind) {
      case 'event':
        this.#send(sub.prefix + entry.tail)
        sub.lastCursor = entry.cursor
        // Replayed events (receivedAt NaN) are not live deliveries.
        if (entry.receivedAt === entry.receivedAt) this.tierMetrics.delivery.observe((performance.now() - entry.receivedAt) / 1000)
        return
      case 'epoch':
        this.#writeGap(sub, { reason: 'epoch', from: sub.lastCursor, to: entry.cursor })
        return
      case 'gap':
        this.#writeGap(sub, entry.gap)
        return
      case 'complete':
        this.#send(this.writer.complete(sub.id))
        sub.end(true, 'complete')
        return
      case 'error':
        this.#send(this.writer.error(sub.id, entry.errors))
        sub.end(true, 'error', entry.errors)
        return
    }
  }

  #writeGap(sub: Subscription, gap: GapNotice): void {
    this.#send(this.writer.gap(sub.id, gap))
    if (gap.to !== null) sub.lastCursor = gap.to
    this.hub.metrics.gaps.labels(gap.reason).inc()
  }
}

