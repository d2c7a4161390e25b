// The control plane's Prometheus metrics (prom-client, one Registry per instance so several
// control planes in one process — tests, the demo — never share counters) and the listener that
// serves them. Names carry `igw_control_plane_` so that queries over the proxies' families
// (igw_requests_total, igw_config_version, …) never sum control plane traffic into the data
// plane's SLOs when both are scraped by one Prometheus. Every label is bounded by code: routes
// are the route table's templates, methods and statuses a fixed set, audit actions come from
// the API's own names, plugin publishers from the trust file.
import { createServer, type Server } from 'node:http'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { LIMIT_NAMES } from './graphql-limits.ts'
import { REJECTION_REASONS, type RejectionReason } from './plugin-package.ts'

/** Admin API latency: from a cached GET (well under a millisecond) to a PostgreSQL commit. */
const API_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const METHODS = new Set(['GET', 'PUT', 'POST', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'])

export class ControlPlaneMetrics {
  readonly registry = new Registry()
  readonly requests = new Counter({ name: 'igw_control_plane_requests_total', help: 'Admin API requests answered, by route template, method and status', labelNames: ['route', 'method', 'status'] as const, registers: [this.registry] })
  readonly duration = new Histogram({ name: 'igw_control_plane_request_duration_seconds', help: 'Admin API request duration (the config stream is not a request and is not observed)', labelNames: ['route', 'method'] as const, buckets: API_BUCKETS, registers: [this.registry] })
  readonly proxiesConnected: Gauge
  readonly headVersion: Gauge
  readonly commits = new Counter({ name: 'igw_control_plane_config_commits_total', help: 'Config versions committed by this instance', registers: [this.registry] })
  readonly pushes = new Counter({ name: 'igw_control_plane_snapshot_pushes_total', help: 'Signed snapshots written to proxy streams', registers: [this.registry] })
  readonly acks = new Counter({ name: 'igw_control_plane_acks_total', help: 'Pushed versions answered by proxies, by result (ack|nack)', labelNames: ['result'] as const, registers: [this.registry] })
  readonly auditAppends = new Counter({ name: 'igw_control_plane_audit_appends_total', help: 'Entries appended to the signed audit log, by action', labelNames: ['action'] as const, registers: [this.registry] })
  readonly pluginUploads = new Counter({ name: 'igw_plugin_uploads_total', help: 'Plugin packages accepted (signature verified with a trusted publisher key) and stored', labelNames: ['publisher'] as const, registers: [this.registry] })
  readonly pluginRejections = new Counter({ name: 'igw_plugin_upload_rejections_total', help: 'Plugin uploads refused, by reason (unsigned|bad_signature|untrusted_publisher|malformed)', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly digestMismatches = new Counter({ name: 'igw_control_plane_stream_digest_mismatches_total', help: "Proxies that connected running another document than this store's under the same version number (a store reset or restored, then committed up to it again): sent the head instead of `current`", registers: [this.registry] })
  readonly streamDrops = new Counter({ name: 'igw_control_plane_stream_drops_total', help: 'Config streams closed by the control plane, by reason (stalled: the proxy stopped reading; token_expired: the token that opened it is no longer accepted, and the proxy reconnects with its current one)', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly streamBuffered: Gauge
  readonly graphqlRefusals = new Counter({ name: 'igw_control_plane_graphql_refusals_total', help: 'GraphQL admin requests refused by a limit before execution, by limit', labelNames: ['limit'] as const, registers: [this.registry] })
  readonly usageSaturations = new Counter({ name: 'igw_control_plane_usage_counter_saturations_total', help: 'Usage counters (tenant, day, counter) found at their maximum, 9007199254740991, after a report added to them: counts beyond it are not recorded', registers: [this.registry] })
  readonly storageFull = new Counter({ name: 'igw_control_plane_storage_full_total', help: 'Writes refused because the database is out of disk space (SQLITE_FULL, ENOSPC, EDQUOT, PostgreSQL disk_full), REST and GraphQL; nothing of them was kept', registers: [this.registry] })
  readonly graphqlUnexpected = new Counter({ name: 'igw_control_plane_graphql_unexpected_errors_total', help: 'Unexpected errors in GraphQL admin requests (masked toward the client, logged with the request id)', registers: [this.registry] })

  constructor(collect: { proxiesConnected: () => number; headVersion: () => number; streamBufferedBytes?: () => number }) {
    collectDefaultMetrics({ register: this.registry, prefix: 'igw_' })
    // Read at scrape time from the hub and the store (no bookkeeping on every change).
    this.proxiesConnected = new Gauge({
      name: 'igw_control_plane_proxies_connected',
      help: 'Proxies holding a config stream to this instance',
      registers: [this.registry],
      collect() {
        this.set(collect.proxiesConnected())
      },
    })
    this.headVersion = new Gauge({
      name: 'igw_control_plane_config_head_version',
      help: 'The newest config version this instance knows',
      registers: [this.registry],
      collect() {
        this.set(collect.headVersion())
      },
    })
    this.streamBuffered = new Gauge({
      name: 'igw_control_plane_stream_buffered_bytes',
      help: 'Bytes written to config streams that their proxies have not read yet (at most about one snapshot per stream)',
      registers: [this.registry],
      collect() {
        this.set(collect.streamBufferedBytes?.() ?? 0)
      },
    })
    // Every reason exists from the start at 0: Prometheus' increase() sees the first refusal as
    // 0 → 1 instead of a new series that starts at 1 (which it would read as no increase).
    for (const reason of REJECTION_REASONS) this.pluginRejections.labels(reason).inc(0)
    for (const result of ['ack', 'nack']) this.acks.labels(result).inc(0)
    for (const reason of ['stalled', 'token_expired']) this.streamDrops.labels(reason).inc(0)
    for (const limit of LIMIT_NAMES) this.graphqlRefusals.labels(limit).inc(0)
  }

  reject(reason: RejectionReason): void {
    this.pluginRejections.labels(reason).inc()
  }

  /** One answered request. `route` is the route template ("/v1/tenants/{id}") or "unmatched". */
  request(route: string, method: string | undefined, status: string, seconds: number | undefined): void {
    const m = method !== undefined && METHODS.has(method) ? method : 'OTHER'
    this.requests.labels(route, m, status).inc()
    if (seconds !== undefined) this.duration.labels(route, m).observe(seconds)
  }
}

/**
 * GET /metrics on its own listener, without authentication, like the proxy's admin port: the API
 * port stays bearer-only, and a NetworkPolicy can open the metrics port to the monitoring
 * namespace alone.
 */
export async function startMetricsServer(metrics: ControlPlaneMetrics, host: string | undefined, port: number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('the control plane metrics listener serves GET /metrics only\n')
      return
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`metrics collection failed: ${(err as Error).message}\n`),
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address()
  return { server, port: typeof addr === 'object' && addr ? addr.port : port }
}
