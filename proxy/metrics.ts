// Metrics: one prom-client Registry per worker thread plus one for the supervisor; the admin
// port merges them into a single view (AggregatorRegistry.aggregate), so a scrape sees the
// process, not a thread. Series touched on every request are plain numbers (PlainCounter,
// PlainHistogram): a request does no label hashing and allocates nothing for its metrics.
import type { Logger } from 'pino'
import { LogWindow } from './log.ts'
import { Counter, Gauge, Histogram, Registry, type CounterConfiguration, type GaugeConfiguration, type HistogramConfiguration, type MetricObjectWithValues, type MetricValue } from 'prom-client'

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

type MetricJson = MetricObjectWithValues<MetricValue<string>>

/**
 * A registry's metrics as JSON (prom-client's getMetricsAsJSON), each metric collected on its own.
 * There one collect() callback that throws rejects the whole answer: a worker thread died of it
 * (an unhandled rejection) at every scrape, and one failing in the supervisor made /metrics 500.
 * A metric that fails is left out of this answer, counted in `errors` by metric name (the count
 * already in this answer) and handed to onError; every other metric is served.
 */
export async function metricsJson(registry: Registry, errors: Counter<'metric'>, onError: (metric: string, err: unknown) => void): Promise<MetricJson[]> {
  const metrics = registry.getMetricsAsArray() as unknown as { name: string; get(): Promise<MetricJson> }[]
  const got = await Promise.allSettled(metrics.map(async (m) => m.get()))
  const out: MetricJson[] = []
  let failed = false
  for (let i = 0; i < got.length; i++) {
    const r = got[i]!
    if (r.status === 'fulfilled') {
      out.push(r.value)
      continue
    }
    failed = true
    errors.labels(metrics[i]!.name).inc()
    onError(metrics[i]!.name, r.reason)
  }
  if (failed) {
    const name = (errors as unknown as { name: string }).name
    const at = out.findIndex((m) => m.name === name)
    if (at !== -1) out[at] = (await errors.get()) as MetricJson
  }
  return out
}

/** metricsJson's onError for a thread's scrapes: the failure logged, at most one line a minute (with how many were not). */
export function logCollectErrors(logger: Logger): (metric: string, err: unknown) => void {
  const window = new LogWindow(60_000)
  return (metric, err) => {
    const held = window.take()
    if (held !== undefined) logger.error({ err, metric, ...(held > 0 ? { notLogged: held } : {}) }, 'a metric failed to collect and is left out of the scrape (igw_metrics_collect_errors_total)')
  }
}

/** The counter metricsJson counts failed collections in (in each registry it reads). */
export function collectErrorsCounter(registry: Registry): Counter<'metric'> {
  return counter(registry, { name: 'igw_metrics_collect_errors_total', help: 'Metrics left out of a scrape because collecting them failed, by metric', labelNames: ['metric'] })
}

/** One series of a PlainCounter: a number; inc() hashes and allocates nothing. */
export class PlainCounterSeries {
  readonly labels: Record<string, string>
  value = 0
  used = false
  constructor(labels: Record<string, string>) {
    this.labels = labels
  }
  inc(n = 1): void {
    this.value += n
    this.used = true
  }
}

/** One series of a PlainHistogram: counts per bucket in a typed array. */
export class PlainHistogramSeries {
  readonly labels: Record<string, string>
  readonly #bounds: readonly number[]
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  readonly counts: Float64Array
  sum = 0
  count = 0
  constructor(labels: Record<string, string>, bounds: readonly number[]) {
    this.labels = labels
    this.#bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }
  observe(value: number): void {
    const b = this.#bounds
    let i = 0
    while (i < b.length && value > b[i]!) i++
    this.counts[i]!++
    this.sum += value
    this.count++
  }
}

/** A plain metric's label sets, each resolved once into its series object. */
class SeriesTable<S> {
  readonly #names: readonly string[]
  readonly #make: (labels: Record<string, string>) => S
  readonly #byKey = new Map<string, S>()

  constructor(names: readonly string[], make: (labels: Record<string, string>) => S) {
    this.#names = names
    this.#make = make
  }

  get(values: readonly string[]): S {
    const key = values.length === 1 ? values[0]! : values.join('\u0000')
    let s = this.#byKey.get(key)
    if (s === undefined) {
      const labels: Record<string, string> = {}
      for (let i = 0; i < this.#names.length; i++) labels[this.#names[i]!] = values[i] ?? ''
      this.#byKey.set(key, (s = this.#make(labels)))
    }
    return s
  }

  /** prom-client's labels() arguments: the values in order, or one object keyed by label name. */
  fromArgs(args: unknown[]): S {
    const first = args[0]
    return this.get(typeof first === 'object' && first !== null ? this.#names.map((n) => String((first as Record<string, unknown>)[n] ?? '')) : args.map(String))
  }

  all(): IterableIterator<S> {
    return this.#byKey.values()
  }
}

/**
 * A prom-client Counter for hot paths. prom-client's labels().inc() builds and hashes a label
 * object on every call (~200 ns and garbage per request per metric); series() resolves the
 * labels once and inc() is an addition. It registers, aggregates across worker threads and
 * prints exactly like a prom-client Counter (series never incremented are not printed).
 */
export class PlainCounter<T extends string> extends Counter<T> {
  readonly #name: string
  readonly #help: string
  readonly #series: SeriesTable<PlainCounterSeries>

  constructor(registry: Registry, cfg: { name: string; help: string; labelNames: readonly T[] }) {
    super({ name: cfg.name, help: cfg.help, labelNames: cfg.labelNames, registers: [registry] })
    this.#name = cfg.name
    this.#help = cfg.help
    this.#series = new SeriesTable(cfg.labelNames, (labels) => new PlainCounterSeries(labels))
  }

  series(...values: string[]): PlainCounterSeries {
    return this.#series.get(values)
  }

  /** The prom-client child API, on top of series() (so both never print the same series twice). */
  override labels(...args: unknown[]): Counter.Internal {
    const s = this.#series.fromArgs(args)
    return { inc: (n?: number) => s.inc(n) } as unknown as Counter.Internal
  }

  override async get(): Promise<MetricObjectWithValues<MetricValue<T>>> {
    const values: MetricValue<T>[] = []
    for (const s of this.#series.all()) if (s.used) values.push({ value: s.value, labels: { ...s.labels } as Partial<Record<T, string>> })
    return { help: this.#help, name: this.#name, type: 'counter', values, aggregator: 'sum' } as unknown as MetricObjectWithValues<MetricValue<T>>
  }

  override reset(): void {
    super.reset()
    if (!(#series in this)) return // prom-client's constructor resets before our fields exist
    for (const s of this.#series.all()) {
      s.value = 0
      s.used = false
    }
  }
}

type HistogramValue = { labels: Record<string, string | number>; sharedLabels: Record<string, never>; value: number; metricName: string }

/**
 * A prom-client Histogram for hot paths: series in plain numbers (series().observe() allocates
 * and hashes nothing), turned into prom-client's exposition only when scraped, so it registers,
 * aggregates across worker threads and prints exactly like a prom-client Histogram.
 */
export class PlainHistogram<T extends string> extends Histogram<T> {
  readonly #bounds: readonly number[]
  readonly #name: string
  readonly #help: string
  readonly #series: SeriesTable<PlainHistogramSeries>

  constructor(registry: Registry, cfg: { name: string; help: string; labelNames: readonly T[]; buckets: readonly number[] }) {
    super({ name: cfg.name, help: cfg.help, labelNames: cfg.labelNames, buckets: [...cfg.buckets], registers: [registry] })
    const bounds = [...cfg.buckets]
    this.#bounds = bounds
    this.#name = cfg.name
    this.#help = cfg.help
    this.#series = new SeriesTable(cfg.labelNames, (labels) => new PlainHistogramSeries(labels, bounds))
  }

  series(...values: string[]): PlainHistogramSeries {
    return this.#series.get(values)
  }

  /** The prom-client child API, on top of series(). */
  override labels(...args: unknown[]): Histogram.Internal<T> {
    const s = this.#series.fromArgs(args)
    return { observe: (v: number) => s.observe(v) } as Histogram.Internal<T>
  }

  #values(): HistogramValue[] {
    const name = this.#name
    const bucket = `${name}_bucket`
    const out: HistogramValue[] = []
    for (const s of this.#series.all()) {
      if (s.count === 0) continue
      let acc = 0
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += s.counts[i]!
        out.push({ labels: { le: this.#bounds[i]!, ...s.labels }, sharedLabels: {}, value: acc, metricName: bucket })
      }
      out.push({ labels: { le: '+Inf', ...s.labels }, sharedLabels: {}, value: s.count, metricName: bucket })
      out.push({ labels: { ...s.labels }, sharedLabels: {}, value: s.sum, metricName: `${name}_sum` })
      out.push({ labels: { ...s.labels }, sharedLabels: {}, value: s.count, metricName: `${name}_count` })
    }
    return out
  }

  /**
   * prom-client builds both get() (what worker threads send for aggregation) and the text
   * exposition from this method; its type declarations do not list it.
   */
  async getForPromString(): Promise<{ name: string; help: string; type: string; aggregator: string; values: HistogramValue[] }> {
    return { name: this.#name, help: this.#help, type: 'histogram', aggregator: 'sum', values: this.#values() }
  }

  override reset(): void {
    super.reset()
    if (!(#series in this)) return // prom-client's constructor resets before our fields exist
    for (const s of this.#series.all()) {
      s.counts.fill(0)
      s.sum = 0
      s.count = 0
    }
  }
}

const TIERS = ['', 'gold', 'silver', 'bronze'] as const
const OPS = ['none', 'query', 'mutation', 'subscription'] as const

function tierIndex(tier: string | undefined): number {
  return tier === 'gold' ? 1 : tier === 'silver' ? 2 : tier === 'bronze' ? 3 : 0
}

/** Per-route series, created once per route × status × tier and route × operation type. */
export class RouteMetrics {
  readonly upstream: PlainHistogramSeries
  readonly #requests: PlainCounter<'route' | 'status' | 'tier'>
  readonly #byKey = new Map<number, PlainCounterSeries>()
  readonly #durationByOp: PlainHistogramSeries[]
  readonly #route: string

  constructor(m: ProxyMetrics, route: string) {
    this.#route = route
    this.#requests = m.requests
    this.#durationByOp = OPS.map((op) => m.duration.series(route, op))
    this.upstream = m.upstreamDuration.series(route)
  }

  /** Count one answered request; `tier` is the tenant's QoS tier when a tenant filter ran. */
  request(status: number, tier?: string): void {
    const t = tierIndex(tier)
    const key = status * 4 + t
    let s = this.#byKey.get(key)
    if (s === undefined) {
      s = this.#requests.series(this.#route, String(status), TIERS[t]!)
      this.#byKey.set(key, s)
    }
    s.inc()
  }

  /** Observe a request's duration under its GraphQL operation type (or "none"). */
  duration(seconds: number, op: 'query' | 'mutation' | 'subscription' | undefined): void {
    this.#durationByOp[op === 'query' ? 1 : op === 'mutation' ? 2 : op === 'subscription' ? 3 : 0]!.observe(seconds)
  }
}

export class ProxyMetrics {
  readonly registry: Registry
  readonly requests: PlainCounter<'route' | 'status' | 'tier'>
  readonly duration: PlainHistogram<'route' | 'op'>
  readonly upstreamDuration: PlainHistogram<'route'>
  readonly proxyErrors: Counter<'route' | 'code'>
  readonly filterErrors: Counter<'filter'>
  readonly clientAborts: Counter<'route'>
  readonly upstreamRetries: Counter<'route'>
  readonly wsConnections: Gauge<'route'>
  readonly wsMessages: Counter<'direction'>
  readonly workerRequests: PlainCounter<'worker'>
  readonly configApplyFailures: Counter
  readonly redisUp: Gauge
  readonly redisReconnects: Counter
  readonly collectErrors: Counter<'metric'>
  readonly #routes = new Map<string, RouteMetrics>()

  constructor(registry: Registry) {
    this.registry = registry
    this.requests = new PlainCounter(registry, { name: 'igw_requests_total', help: 'Requests answered, by route, HTTP status and tenant tier ("" before/without a tenant)', labelNames: ['route', 'status', 'tier'] })
    this.duration = new PlainHistogram(registry, {
      name: 'igw_request_duration_seconds',
      help: 'Time from request received to response finished, by route and GraphQL operation type (none: not GraphQL or not parsed)',
      labelNames: ['route', 'op'],
      buckets: LATENCY_BUCKETS,
    })
    this.upstreamDuration = new PlainHistogram(registry, {
      name: 'igw_upstream_duration_seconds',
      help: 'Time from dispatch to upstream response headers',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
    })
    this.proxyErrors = counter(registry, { name: 'igw_proxy_errors_total', help: 'Requests the proxy answered with an error of its own, by code', labelNames: ['route', 'code'] })
    this.filterErrors = counter(registry, { name: 'igw_filter_errors_total', help: 'Filters that threw, by filter', labelNames: ['filter'] })
    this.clientAborts = counter(registry, { name: 'igw_client_aborts_total', help: 'Requests the client abandoned before the response finished', labelNames: ['route'] })
    this.upstreamRetries = counter(registry, { name: 'igw_upstream_retries_total', help: 'Requests sent upstream a second time because the upstream closed the connection before answering (the keep-alive race), by route', labelNames: ['route'] })
    this.wsConnections = gauge(registry, { name: 'igw_websocket_connections', help: 'Open proxied WebSocket connections', labelNames: ['route'] })
    this.wsMessages = counter(registry, { name: 'igw_websocket_messages_total', help: 'WebSocket messages relayed', labelNames: ['direction'] })
    this.workerRequests = new PlainCounter(registry, { name: 'igw_worker_requests_total', help: 'Requests accepted per worker thread (shows the kernel spread)', labelNames: ['worker'] })
    this.configApplyFailures = counter(registry, { name: 'igw_config_apply_failures_total', help: 'Validated config versions a worker failed to build' })
    this.redisUp = gauge(registry, { name: 'igw_redis_up', help: 'Worker threads whose Redis command connection is ready', aggregator: 'sum' })
    this.redisReconnects = counter(registry, { name: 'igw_redis_reconnects_total', help: 'Times a Redis connection came back after a loss' })
    this.collectErrors = collectErrorsCounter(registry)
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
