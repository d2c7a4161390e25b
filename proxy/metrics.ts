// Metrics: one prom-client Registry per worker thread plus one for the supervisor; the admin
// port merges them into a single view (AggregatorRegistry.aggregate), so a scrape sees the
// process, not a thread. Hot-path children are cached so a request does no label hashing.
import { Counter, Gauge, Histogram, Registry, type CounterConfiguration, type GaugeConfiguration, type HistogramConfiguration } from 'prom-client'

/** Latency buckets from 0.25 ms: the proxy's own overhead lives in the first few. */
export const LATENCY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export function counter<T extends string>(registry: Registry, cfg: CounterConfiguration<T>): Counter<T> {
  const existing = registry.getSingleMetric(cfg.name)
  if (existing) return existing as Counter<T>
  return new Counter({ ...cfg, registers: [registry] })
}

export function gauge<T extends string>(registry: Registry, cfg: GaugeConfiguration<T>): Gauge<T> {
  const existing = registry.getSingleMetric(cfg.name)
  if (existing) return existing as Gauge<T>
  return new Gauge({ ...cfg, registers: [registry] })
}

export function histogram<T extends string>(registry: Registry, cfg: HistogramConfiguration<T>): Histogram<T> {
  const existing = registry.getSingleMetric(cfg.name)
  if (existing) return existing as Histogram<T>
  return new Histogram({ ...cfg, registers: [registry] })
}

type CounterChild = ReturnType<Counter<string>['labels']>
type HistogramChild = ReturnType<Histogram<string>['labels']>

const TIERS = ['', 'gold', 'silver', 'bronze'] as const
const OPS = ['none', 'query', 'mutation', 'subscription'] as const

function tierIndex(tier: string | undefined): number {
  return tier === 'gold' ? 1 : tier === 'silver' ? 2 : tier === 'bronze' ? 3 : 0
}

/** Per-route metric children, created once per route × status × tier and route × operation type. */
export class RouteMetrics {
  readonly upstream: HistogramChild
  readonly #requests: Counter<'route' | 'status' | 'tier'>
  readonly #byKey = new Map<number, CounterChild>()
  readonly #durationByOp: HistogramChild[]
  readonly #route: string

  constructor(m: ProxyMetrics, route: string) {
    this.#route = route
    this.#requests = m.requests
    this.#durationByOp = OPS.map((op) => m.duration.labels(route, op))
    this.upstream = m.upstreamDuration.labels(route)
  }

  /** Count one answered request; `tier` is the tenant's QoS tier when a tenant filter ran. */
  request(status: number, tier?: string): void {
    const t = tierIndex(tier)
    const key = status * 4 + t
    let child = this.#byKey.get(key)
    if (child === undefined) {
      child = this.#requests.labels(this.#route, String(status), TIERS[t]!)
      this.#byKey.set(key, child)
    }
    child.inc()
  }

  /** Observe a request's duration under its GraphQL operation type (or "none"). */
  duration(seconds: number, op: 'query' | 'mutation' | 'subscription' | undefined): void {
    this.#durationByOp[op === 'query' ? 1 : op === 'mutation' ? 2 : op === 'subscription' ? 3 : 0]!.observe(seconds)
  }
}

export class ProxyMetrics {
  readonly registry: Registry
  readonly requests: Counter<'route' | 'status' | 'tier'>
  readonly duration: Histogram<'route' | 'op'>
  readonly upstreamDuration: Histogram<'route'>
  readonly proxyErrors: Counter<'route' | 'code'>
  readonly filterErrors: Counter<'filter'>
  readonly clientAborts: Counter<'route'>
  readonly wsConnections: Gauge<'route'>
  readonly wsMessages: Counter<'direction'>
  readonly workerRequests: Counter<'worker'>
  readonly configApplyFailures: Counter
  readonly redisUp: Gauge
  readonly redisReconnects: Counter
  readonly #routes = new Map<string, RouteMetrics>()

  constructor(registry: Registry) {
    this.registry = registry
    this.requests = counter(registry, { name: 'igw_requests_total', help: 'Requests answered, by route, HTTP status and tenant tier ("" before/without a tenant)', labelNames: ['route', 'status', 'tier'] })
    this.duration = histogram(registry, {
      name: 'igw_request_duration_seconds',
      help: 'Time from request received to response finished, by route and GraphQL operation type (none: not GraphQL or not parsed)',
      labelNames: ['route', 'op'],
      buckets: LATENCY_BUCKETS,
    })
    this.upstreamDuration = histogram(registry, {
      name: 'igw_upstream_duration_seconds',
      help: 'Time from dispatch to upstream response headers',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
    })
    this.proxyErrors = counter(registry, { name: 'igw_proxy_errors_total', help: 'Requests the proxy answered with an error of its own, by code', labelNames: ['route', 'code'] })
    this.filterErrors = counter(registry, { name: 'igw_filter_errors_total', help: 'Filters that threw, by filter', labelNames: ['filter'] })
    this.clientAborts = counter(registry, { name: 'igw_client_aborts_total', help: 'Requests the client abandoned before the response finished', labelNames: ['route'] })
    this.wsConnections = gauge(registry, { name: 'igw_websocket_connections', help: 'Open proxied WebSocket connections', labelNames: ['route'] })
    this.wsMessages = counter(registry, { name: 'igw_websocket_messages_total', help: 'WebSocket messages relayed', labelNames: ['direction'] })
    this.workerRequests = counter(registry, { name: 'igw_worker_requests_total', help: 'Requests accepted per worker thread (shows the kernel spread)', labelNames: ['worker'] })
    this.configApplyFailures = counter(registry, { name: 'igw_config_apply_failures_total', help: 'Validated config versions a worker failed to build' })
    this.redisUp = gauge(registry, { name: 'igw_redis_up', help: 'Worker threads whose Redis command connection is ready', aggregator: 'sum' })
    this.redisReconnects = counter(registry, { name: 'igw_redis_reconnects_total', help: 'Times a Redis connection came back after a loss' })
  }

  route(name: string): RouteMetrics {
    let m = this.#routes.get(name)
    if (m === undefined) {
      m = new RouteMetrics(this, name)
      this.#routes.set(name, m)
    }
    return m
  }
}
