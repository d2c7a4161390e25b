// The filter interface: the one thing filters import from proxy/. A filter never imports
// another filter; what they share travels on the RequestContext.
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { GatewayConfig } from '../config/schema.ts'
import type { RequestContext } from './context.ts'
import type { LocalReply } from './errors.ts'
import type { RedisProvider } from './redis.ts'

export type { RequestContext } from './context.ts'
export { chargedCost, MAX_REQUEST_COST } from './context.ts'
export type { LocalReply, ErrorCode } from './errors.ts'
export { acceptClass, errorReply, errorBody, ERROR_STATUS, ResponseCut } from './errors.ts'
export type { GraphQLRequest, OperationType } from './graphql-request.ts'
export type { RedisProvider } from './redis.ts'
export { readyWithin } from './redis.ts'
export { LogWindow, oncePer } from './log.ts'
export { isSafeRequestId, applyAddedHeaders, upstreamRequestHeaders } from './headers.ts'
export { atomicTempPath, processAlive, syncDir, syncDirSync, writeFileAtomicSync, writeTemp, writeTempSync } from './atomic-file.ts'

/** undefined: continue down the chain. A LocalReply: answer now, the upstream is not called. */
export type Decision = LocalReply | undefined
export const CONTINUE: Decision = undefined

/**
 * The response as the response phase sees it. Headers are lower-case and mutable;
 * `ctx.addResponseHeader` edits them too (and appends a Set-Cookie rather than replacing the
 * upstream's). To answer with a reply of its own instead (a refusal: DLP's 403), a filter calls
 * `refuse(errorReply(...))`, never sets status, headers and body by hand. `body` is materialized
 * as a stream only when a filter reads it, so filters that only touch headers keep the zero-copy
 * path; assign `body` to replace it (e.g. with a Transform).
 */
export interface ResponseInfo {
  status: number
  headers: Record<string, string | string[]>
  /**
   * A reply made by a filter or by the proxy (error) instead of calling the upstream. Its body is
   * a Buffer. A response refused in the response phase stays `local: false`: the upstream did
   * answer (a mutation ran), which is what the cache's invalidation reads from it; `refused` tells.
   */
  readonly local: boolean
  /**
   * Status, headers and body are igw's own reply, made in this phase in place of the upstream's
   * answer: a filter's `refuse` (DLP's 403), a filter failing closed (500) or missing the
   * deadline (504). The filters still to run see it: it is no content to inspect, store or
   * replace (the cache's stale-if-error would undo a fail-closed 500), and a mutation it stands
   * for did reach the upstream, whose result is gone.
   */
  readonly refused: boolean
  /** Reading it switches to stream mode; assigning it means the bytes change (Content-Length is dropped). */
  body: Readable | Buffer
  /**
   * Replace the body with a stream that re-emits exactly the bytes it reads (a tee, a capture):
   * Content-Length stays valid, so the client still gets a sized response.
   */
  observeBody(stream: Readable): void
  /**
   * Answer with `reply` instead of this response, as a request-phase refusal is answered: the
   * error code logged (ctx.errorCode) and the filter named in the access line, an error reply in
   * the media type the client asked for, the chain's added headers on it (every Set-Cookie), a
   * batch refused per operation for a graphql-response+json client. The upstream's body, unread
   * or read in part, is dropped; the filters still to run see the reply. A reply HTTP cannot carry
   * is the filter's failure (500, whatever its failMode). Ignored once the phase gave up on the
   * filter (its deadline passed); throws once the head is out (end the body with a ResponseCut).
   */
  refuse(reply: LocalReply): void
}

/** One event of a shared subscription stream, as it is about to reach one client. */
export interface StreamEvent {
  streamId: string
  /** The upstream's result ({ data, errors?, extensions? }); shared by every client: do not mutate. */
  payload: unknown
  epoch?: string
  offset?: number
  cursor?: string
}

/** The client subscription an event is about to reach. */
export interface SubscriptionContext {
  tenant: string | undefined
  tier: string | undefined
  route: string
  /** The client's operation id and connection. */
  id?: string
  connectionId?: string
  topic?: string
}

export interface Filter {
  readonly name: string
  /** Request phase, in chain order; may answer directly. */
  onRequest?(ctx: RequestContext): Decision | Promise<Decision>
  /** Response phase, in reverse chain order; may change status/headers or wrap the body. */
  onResponse?(ctx: RequestContext, res: ResponseInfo): void | Promise<void>
  /** Per event on a terminated subscription stream; a LocalReply drops the event for this client. */
  onSubscriptionEvent?(ctx: SubscriptionContext, ev: StreamEvent): Decision
  /**
   * A query or mutation sent over a terminated WebSocket (which has no response phase) got a
   * result: `result` is the upstream's result as JSON text. Called with `result` undefined when
   * it ended without one; `mayHaveRun` then tells whether the upstream may have executed it (its
   * connection was lost, or the client stopped it, after it was sent) or not (the upstream
   * refused it with errors). The client gets the result once a returned promise settles.
   */
  onSocketResult?(ctx: RequestContext, result: string | undefined, mayHaveRun: boolean): void | Promise<void>
  /** Called when a config reload retired this instance and its last request finished. */
  close?(): void | Promise<void>
}

/** What the proxy hands a filter factory. */
export interface FilterDeps {
  readonly routeName: string
  readonly workerId: number
  /** The whole validated config document (tenants, redis, other top-level sections). */
  readonly config: GatewayConfig
  readonly logger: Logger
  /** This worker's metrics registry; use the get-or-create helpers in proxy/metrics.ts. */
  readonly registry: Registry
  /**
   * Memory shared by every worker thread of this process, the same buffer for every route and
   * config version. Sized by the filter module's `sharedBytes`.
   */
  readonly shared: SharedArrayBuffer | undefined
  /** Shared Redis connections when config `redis:` (or --redis) is set. */
  readonly redis: RedisProvider | undefined
}

export type FilterFactory<C> = (config: C, deps: FilterDeps) => Filter | Promise<Filter>

export interface FilterModule<C = never> {
  create: FilterFactory<C>
  /** Bytes of SharedArrayBuffer this filter needs across worker threads (allocated once). */
  sharedBytes?: number
  /**
   * Called by the supervisor once worker thread `workerId` has exited (crashed, hit its heap
   * limit, was stopped by the watchdog, drained): releases what that thread held in `shared` and
   * can no longer give back itself (quota: concurrency slots, the in-flight count). Returns how
   * much was released (logged). `threadId`: the dead thread's (Worker#threadId at its start; -1
   * by its 'exit'), for what it left under its id (quota: its owed-units file).
   */
  workerExited?(shared: SharedArrayBuffer, workerId: number, threadId?: number): number
}
