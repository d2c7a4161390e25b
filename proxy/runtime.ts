// A config version compiled for the hot path: routes with their filter instances, upstream
// pools, the router. A reload builds a new Snapshot and swaps one reference; requests already
// running keep the snapshot they started with, and its filters close once its last request ends.
import type { Logger } from 'pino'
import { Dispatcher, Pool } from 'undici'
import type { FilterEntry } from '../config/filters/index.ts'
import { resolveRouteUpstream } from '../config/resolve.ts'
import type { GatewayConfig, RouteConfig, UpstreamConfig } from '../config/schema.ts'
import { filterModules, type FilterModules } from '../filters/registry.ts'
import type { Filter, FilterDeps, FilterModule } from './filter.ts'
import type { RedisProvider } from './redis.ts'
import type { ProxyMetrics, RouteMetrics } from './metrics.ts'
import { Router, type Routable } from './router.ts'
import { normalizeTarget, REJECTED, type PathOptions } from './path-normalize.ts'

export interface UpstreamRuntime {
  readonly name: string
  readonly origin: string
  /** host[:port] of the origin, for requests that arrive without a Host. */
  readonly authority: string
  readonly pool: UpstreamConnections
}

export interface RouteRuntime extends Routable {
  readonly name: string
  readonly type: 'graphql' | 'http'
  readonly config: RouteConfig
  readonly maxBodyBytes: number
  readonly batching: RouteConfig['batching']
  readonly hostRewrite: string | undefined
  readonly timeouts: RouteConfig['timeouts']
  readonly websocket: RouteConfig['websocket']
  readonly upstream: UpstreamRuntime
  /** The chain in config order. */
  readonly filters: readonly Filter[]
  /** failMode per filter, same order as `filters`. */
  readonly failOpen: readonly boolean[]
  /** Indices of filters with onRequest, in chain order. */
  readonly requestPhase: readonly number[]
  /** Indices of filters with onResponse, in reverse chain order. */
  readonly responsePhase: readonly number[]
  readonly metrics: RouteMetrics
  /**
   * The route's request-id filter as config says it (the first one in the chain), or undefined:
   * the proxy names a request it answers before that filter ran (a 413, 415, 400 or 408 refused
   * before the chain, a filter earlier in the chain refusing) by the same rule.
   */
  readonly requestId?: RequestIdPolicy
}

/** What the request-id filter at `index` does: which header, whether an incoming id is kept, whether it is echoed. */
export interface RequestIdPolicy {
  readonly index: number
  readonly header: string
  readonly trustIncoming: boolean
  readonly echo: boolean
}

/**
 * An upstream's connections: one pool for requests, bounded by `connections`, and one for streams
 * that last as long as their client listens — a GraphQL subscription over HTTP (SSE, multipart)
 * or any request asking for `text/event-stream`. Such a stream holds its upstream connection for
 * its whole life, so on the bounded pool `connections` open streams (128 idle graphql-sse
 * subscribers per worker) left none for requests: every query on that upstream waited for a free
 * connection until headersMs and got 504. Streams get connections of their own, one per client
 * stream as a relayed WebSocket has, and never queue behind (or in front of) requests.
 */
export class UpstreamConnections extends Dispatcher {
  readonly requests: Pool
  #streams: Pool | undefined = undefined
  readonly #def: UpstreamConfig

  constructor(def: UpstreamConfig) {
    super()
    this.#def = def
    this.requests = UpstreamConnections.#pool(def, def.connections, def.pipelining)
  }

  static #pool(def: UpstreamConfig, connections: number | null, pipelining: number): Pool {
    return new Pool(def.url, {
      connections,
      pipelining,
      connectTimeout: def.connectTimeoutMs,
      keepAliveTimeout: def.keepAliveTimeoutMs,
      keepAliveMaxTimeout: Math.max(def.keepAliveTimeoutMs, 1_000),
      // Per-request timeouts come from the route; these are only the fallbacks.
      headersTimeout: 0,
      bodyTimeout: 0,
    })
  }

  /** The streams' pool, made at the first stream: unbounded (one connection per open stream), never pipelined. */
  get streams(): Pool {
    return (this.#streams ??= UpstreamConnections.#pool(this.#def, null, 1))
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return (isStreamRequest(opts, handler) ? this.streams : this.requests).dispatch(opts, handler)
  }

  override close(): Promise<void>
  override close(callback: () => void): void
  override close(callback?: () => void): Promise<void> | void {
    const done = Promise.all([this.requests.close(), this.#streams?.close()]).then(() => undefined)
    if (callback === undefined) return done
    void done.then(callback, callback)
  }

  override destroy(): Promise<void>
  override destroy(err: Error | null): Promise<void>
  override destroy(callback: () => void): void
  override destroy(err: Error | null, callback: () => void): void
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === 'function' ? null : (a ?? null)
    const callback = typeof a === 'function' ? a : b
    const done = Promise.all([this.requests.destroy(err), this.#streams?.destroy(err)]).then(() => undefined)
    if (callback === undefined) return done
    void done.then(callback, callback)
  }
}

/**
 * Held open for as long as the client listens: asks for an event stream (graphql-sse, EventSource),
 * or is a GraphQL subscription (answered as SSE or multipart; the handler is the exchange, whose
 * context holds the parsed operation).
 */
function isStreamRequest(opts: Dispatcher.DispatchOptions, handler: unknown): boolean {
  const h = opts.headers
  if (Array.isArray(h)) {
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i] as string
      if (name.length === 6 && name.toLowerCase() === 'accept' && /text\/event-stream/i.test(String(h[i + 1]))) return true
    }
  }
  const ctx = (handler as { ctx?: { graphql?: { operationType?: string } } }).ctx
  return ctx?.graphql?.operationType === 'subscription'
}

/** Pools outlive snapshots: a reload that keeps an upstream keeps its warm connections (and open streams). */
export class PoolRegistry {
  readonly #pools = new Map<string, UpstreamConnections>()

  static key(def: UpstreamConfig): string {
    return JSON.stringify([def.url, def.connections, def.pipelining, def.connectTimeoutMs, def.keepAliveTimeoutMs])
  }

  get(def: UpstreamConfig): UpstreamConnections {
    const key = PoolRegistry.key(def)
    let pool = this.#pools.get(key)
    if (pool === undefined) {
      pool = new UpstreamConnections(def)
      this.#pools.set(key, pool)
    }
    return pool
  }

  /** Close pools no live snapshot uses (after the old snapshot drained). */
  async retainOnly(keys: Set<string>): Promise<void> {
    const closing: Promise<void>[] = []
    for (const [key, pool] of this.#pools) {
      if (!keys.has(key)) {
        this.#pools.delete(key)
        closing.push(pool.close().catch(() => undefined))
      }
    }
    await Promise.all(closing)
  }

  async destroyAll(): Promise<void> {
    const all = [...this.#pools.values()]
    this.#pools.clear()
    await Promise.all(all.map((p) => p.destroy().catch(() => undefined)))
  }
}

export class Snapshot {
  readonly version: number
  readonly config: GatewayConfig
  readonly routes: readonly RouteRuntime[]
  readonly router: Router<RouteRuntime>
  readonly poolKeys: Set<string>
  /** Requests (and WebSockets) currently using this snapshot. */
  inflight = 0
  retired = false
  #onIdle: (() => void) | undefined

  constructor(version: number, config: GatewayConfig, routes: RouteRuntime[], poolKeys: Set<string>) {
    this.version = version
    this.config = config
    this.routes = routes
    this.router = new Router(routes)
    this.poolKeys = poolKeys
  }

  release(): void {
    if (--this.inflight === 0 && this.retired && this.#onIdle) {
      const cb = this.#onIdle
      this.#onIdle = undefined
      cb()
    }
  }

  /** Mark as replaced; `onIdle` runs when its last request is done (now, if none). */
  retire(onIdle: () => void): void {
    this.retired = true
    if (this.inflight === 0) onIdle()
    else this.#onIdle = onIdle
  }

  async closeFilters(logger: Logger): Promise<void> {
    for (const route of this.routes) {
      for (const f of route.filters) {
        try {
          await f.close?.()
        } catch (err) {
          logger.warn({ err, filter: f.name, route: route.name }, 'filter close failed')
        }
      }
    }
  }
}

export interface BuildDeps {
  workerId: number
  logger: Logger
  metrics: ProxyMetrics
  pools: PoolRegistry
  shared: Record<string, SharedArrayBuffer>
  /** Filter implementations by name; the registry unless a test substitutes one. */
  modules?: FilterModules
  redis: RedisProvider | undefined
}

export class FilterBuildError extends Error {}

/**
 * A route's path prefix spelled as request paths are once normalized (listener.normalizePath…):
 * `/%7euser` or `/caf%c3%a9` in the config never matched, because requests arrive as `/~user`
 * and `/caf%C3%A9`. A prefix the normalizer refuses (an escaped slash under `reject`) stays as
 * written: no request reaches routing with one.
 */
function routePrefix(prefix: string, config: GatewayConfig): string {
  const o: PathOptions = { normalize: config.listener.normalizePath, mergeSlashes: config.listener.mergeSlashes, escapedSlashes: config.listener.escapedSlashes }
  const n = normalizeTarget(prefix, o)
  return n === REJECTED ? prefix : n
}

export async function buildSnapshot(version: number, config: GatewayConfig, deps: BuildDeps): Promise<Snapshot> {
  const routes: RouteRuntime[] = []
  const poolKeys = new Set<string>()
  const built: Filter[] = []
  try {
    for (const [i, route] of config.routes.entries()) {
      const { name: upstreamName, def } = resolveRouteUpstream(config, route)
      poolKeys.add(PoolRegistry.key(def))
      const url = new URL(def.url)
      const upstream: UpstreamRuntime = { name: upstreamName, origin: url.origin, authority: url.host, pool: deps.pools.get(def) }
      const filters: Filter[] = []
      const failOpen: boolean[] = []
      for (const [j, entry] of route.filters.entries()) {
        const filterDeps: FilterDeps = {
          routeName: route.name,
          workerId: deps.workerId,
          config,
          logger: deps.logger.child({ filter: entry.name, route: route.name }),
          registry: deps.metrics.registry,
          shared: deps.shared[entry.name],
          redis: deps.redis,
        }
        let filter: Filter
        try {
          filter = await createFilter(deps.modules ?? filterModules, entry, filterDeps)
        } catch (err) {
          throw new FilterBuildError(`routes[${i}].filters[${j}] (${entry.name}): ${(err as Error).message}`)
        }
        built.push(filter)
        filters.push(filter)
        failOpen.push(entry.failMode === 'open')
      }
      let requestId: RequestIdPolicy | undefined
      for (const [j, entry] of route.filters.entries()) {
        if (entry.name === 'request-id') {
          requestId = { index: j, header: entry.header, trustIncoming: entry.trustIncoming, echo: entry.echo }
          break
        }
      }
      const requestPhase: number[] = []
      const responsePhase: number[] = []
      filters.forEach((f, k) => {
        if (f.onRequest) requestPhase.push(k)
        if (f.onResponse) responsePhase.unshift(k)
      })
      routes.push({
        name: route.name,
        host: route.match.host,
        pathPrefix: routePrefix(route.match.pathPrefix, config),
        type: route.type,
        config: route,
        maxBodyBytes: route.maxBodyBytes,
        batching: route.batching,
        hostRewrite: route.hostRewrite,
        timeouts: route.timeouts,
        websocket: route.websocket,
        upstream,
        filters,
        failOpen,
        requestPhase,
        responsePhase,
        metrics: deps.metrics.route(route.name),
        requestId,
      })
    }
  } catch (err) {
    // Do not leak half a chain: close what was built before the failure.
    for (const f of built) await Promise.resolve(f.close?.()).catch(() => undefined)
    throw err
  }
  return new Snapshot(version, config, routes, poolKeys)
}

function createFilter(modules: FilterModules, entry: FilterEntry, deps: FilterDeps): Filter | Promise<Filter> {
  const mod = modules[entry.name] as FilterModule<FilterEntry>
  return mod.create(entry, deps)
}
