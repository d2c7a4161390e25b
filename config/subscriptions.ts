// The `subscriptions:` section: how the gateway terminates GraphQL subscriptions on routes
// whose `websocket.mode` is `terminate` (protocols, upstream sharing, replay log and cursors,
// QoS delivery tiers, topics). Process-wide; per-route policy lives in the `subscriptions`
// filter. Runtime code imports only the types from here (worker threads never load zod).
import { getOperationAST, parse } from 'graphql'
import { z } from 'zod'
import { byteSize, durationMs, identifier, tierName } from './primitives.ts'

const cursorKey = z.string().min(32, { error: 'expected a cursor signing key of at least 32 characters (use ${IGW_CURSOR_KEY})' })

const qosTier = (d: { ratePerSec: number; burst: number; maxQueue: number; maxQueueBytes: number }) =>
  z
    .strictObject({
      /** Messages per second one connection of this tier receives (token bucket refill); 0 = unlimited. */
      ratePerSec: z.number().nonnegative().default(d.ratePerSec),
      /** Messages a connection may receive back to back before the rate applies. */
      burst: z.int().min(1).default(d.burst),
      /** Events queued for one connection; over it bronze and silver drop the oldest (gold ignores it). */
      maxQueue: z.int().min(1).default(d.maxQueue),
      /** Bytes queued for one connection; bronze and silver drop the oldest over it, gold is closed with 1013. */
      maxQueueBytes: byteSize.default(d.maxQueueBytes),
    })
    .prefault({})

const topicConfig = z
  .strictObject({
    /** The GraphQL subscription the topic stands for, sent to the route's upstream. */
    query: z.string().min(1),
    operationName: z.string().min(1).optional(),
    /** Variables the topic always sends. */
    variables: z.record(z.string(), z.unknown()).default({}),
    /** Variables a client may set in its subscribe message (others are refused). */
    clientVariables: z.array(z.string().min(1)).default([]),
  })
  .superRefine((t, ctx) => {
    try {
      const doc = parse(t.query, { noLocation: true })
      const op = getOperationAST(doc, t.operationName)
      if (op === null || op === undefined) ctx.addIssue({ code: 'custom', path: ['query'], message: 'expected one operation (or name it with operationName)' })
      else if (op.operation !== 'subscription') ctx.addIssue({ code: 'custom', path: ['query'], message: `expected a subscription operation, got a ${op.operation}` })
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['query'], message: `does not parse: ${(err as Error).message}` })
    }
  })
export type TopicConfig = z.infer<typeof topicConfig>

export const subscriptionsConfig = z.strictObject({
  /**
   * Key that signs replay cursors (HMAC-SHA256). Set it (e.g. "${IGW_CURSOR_KEY}") whenever
   * cursors must survive a restart or work on another replica; without it each process
   * generates its own key and cursors from elsewhere are answered with an `invalid` gap.
   */
  cursorKey: cursorKey.optional(),
  /** Keys that still verify cursors during a key rotation (never used to sign). */
  previousCursorKeys: z.array(cursorKey).default([]),
  /** graphql-transport-ws and legacy graphql-ws: close (4408) a connection that sends no connection_init within this time. */
  connectionInitTimeoutMs: durationMs.min(1).default(3_000),
  /** WebSocket ping toward clients (and legacy "ka" messages); a client silent for two intervals is dropped. 0 disables. */
  keepAliveMs: durationMs.default(15_000),
  /** Operations one connection may run at once; more are refused. */
  maxSubscriptionsPerConnection: z.int().min(1).max(10_000).default(100),
  /** Tier of a connection whose chain named none (no tenant filter, or a tenant without one). */
  defaultTier: tierName.default('silver'),
  /**
   * connection_init payload keys read as request headers for the filter chain (browsers cannot
   * set headers on a WebSocket): payload key → header name. A `headers` object in the payload
   * is read too, for these header names.
   */
  initPayloadHeaders: z
    .record(z.string().min(1), z.string().toLowerCase())
    .default({ authorization: 'authorization', Authorization: 'authorization', 'x-tenant-id': 'x-tenant-id', tenantId: 'x-tenant-id', tenant: 'x-tenant-id' }),
  upstream: z
    .strictObject({
      /** Client headers sent on the upstream WebSocket handshake (the chain's header edits are always sent). */
      forwardHeaders: z.array(z.string().toLowerCase()).default(['authorization', 'cookie']),
      /** Header edits of the chain that differ per request and must not split sharing. */
      volatileHeaders: z.array(z.string().toLowerCase()).default(['x-request-id', 'traceparent', 'tracestate']),
      /** Send the client's connection_init payload as the upstream's (tenant keys rewritten by the chain). */
      forwardInitPayload: z.boolean().default(true),
      /** First reconnect delay after the upstream dropped; doubles (with jitter) up to retryMaxMs. */
      retryInitialMs: durationMs.min(1).default(200),
      retryMaxMs: durationMs.min(1).default(5_000),
      /** Handshake and connection_ack wait toward the upstream. */
      connectTimeoutMs: durationMs.min(1).default(5_000),
      /** graphql-transport-ws ping toward the upstream; no pong or event within max(keepAliveMs, connectTimeoutMs) drops the connection (an outage: reconnect, resubscribe). 0 disables both. */
      keepAliveMs: durationMs.default(10_000),
      /**
       * Keep an upstream subscription (and its log) this long after its last client left, so a
       * client that reconnects with a cursor resumes without a gap. 0 closes it at once.
       */
      lingerMs: durationMs.default(30_000),
      /**
       * Upstream subscriptions (shared streams) one worker thread keeps open, in use or lingering.
       * A new stream over it first closes lingering ones (no client left), oldest first; when
       * every stream has clients the subscribe is refused with OVERLOADED. The default is
       * 100 connections' worth of maxSubscriptionsPerConnection with nothing shared.
       */
      maxStreams: z.int().min(1).max(1_000_000).default(10_000),
      /**
       * The backend resumes a stream: events carry `extensions.eventId`; on resubscribe the
       * gateway sends `extensions.lastEventId` and keeps the epoch when the first event answers
       * with `extensions.resumedFrom` equal to it. Otherwise a reconnect starts a new epoch.
       */
      resume: z.boolean().default(false),
    })
    .prefault({}),
  replay: z
    .strictObject({
      /** memory: a ring per stream in each worker. redis: also Redis Streams (restarts and other replicas replay). auto: redis when `redis:` is set. */
      store: z.enum(['auto', 'memory', 'redis']).default('auto'),
      /** Events kept per stream. */
      maxEvents: z.int().min(1).max(1_000_000).default(1_000),
      /** Events older than this are gone from the log (an age, not a timer: not held to durationMs's bound). */
      maxAgeMs: z.int({ error: 'expected a whole number of milliseconds' }).min(1_000).default(300_000),
      /** Event text kept per stream in memory, whatever maxEvents says (the newest event always is). */
      maxBytes: byteSize.default(8 * 1024 * 1024),
    })
    .prefault({}),
  qos: z
    .strictObject({
      gold: qosTier({ ratePerSec: 0, burst: 1_000, maxQueue: 10_000, maxQueueBytes: 8 * 1024 * 1024 }),
      silver: qosTier({ ratePerSec: 1_000, burst: 1_000, maxQueue: 2_000, maxQueueBytes: 1024 * 1024 }),
      bronze: qosTier({ ratePerSec: 200, burst: 200, maxQueue: 200, maxQueueBytes: 256 * 1024 }),
      /** Bytes waiting in one socket's send buffer before further messages wait in the queue. */
      socketHighWaterBytes: byteSize.default(64 * 1024),
      /** Queued bytes per worker across connections; over it bronze queues shed oldest first, then silver. Gold never. */
      memoryBudgetBytes: byteSize.default(64 * 1024 * 1024),
    })
    .prefault({}),
  /** The topic protocol's topics: name → the GraphQL subscription it stands for. */
  topics: z.record(identifier, topicConfig).default({}),
})
export type SubscriptionsConfig = z.infer<typeof subscriptionsConfig>
export type QosTierConfig = SubscriptionsConfig['qos']['gold']
