// The subscription hub's metrics (one set per worker registry; the admin port sums workers).
// Labels are bounded: tier (gold/silver/bronze/none), reason, code, source, upstream (configured upstream names).
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { counter, gauge, histogram, LATENCY_BUCKETS } from '../metrics.ts'

/** Delivery latency buckets (seconds): sub-millisecond fan-out up to multi-second backlogs. */
const DELIVERY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

type GaugeChild = ReturnType<Gauge<string>['labels']>
type CounterChild = ReturnType<Counter<string>['labels']>
type HistogramChild = ReturnType<Histogram<string>['labels']>

export const TIER_LABELS = ['gold', 'silver', 'bronze', 'none'] as const
export type TierLabel = (typeof TIER_LABELS)[number]

export interface TierMetrics {
  connections: GaugeChild
  subscriptions: GaugeChild
  drops: CounterChild
  delivery: HistogramChild
}

export class HubMetrics {
  readonly tiers: Record<TierLabel, TierMetrics>
  readonly upstreams: Gauge
  readonly upstreamConnections: Gauge<'upstream'>
  readonly upstreamReconnects: Counter
  readonly upstreamFinalCloses: Counter<'code'>
  readonly streamEvictions: Counter
  readonly upstreamOversized: Counter
  readonly events: Counter
  readonly gaps: Counter<'reason'>
  readonly replayEvents: Counter<'source'>
  readonly replayRequests: Counter<'result'>
  readonly rejections: Counter<'code'>
  readonly closes: Counter<'code'>
  readonly redisErrors: Counter<'op'>
  readonly queuedBytes: Gauge
  readonly redisUp: Gauge
  readonly redisReconnects: Counter
  /**
   * Operations over terminated sockets, counted as each ends (admitted or refused): kept apart
   * from igw_requests_total / igw_request_duration_seconds, which count HTTP requests (and the
   * upgrade's 101) and feed the availability and read-latency SLOs.
   */
  readonly operations: Counter<'route' | 'op' | 'status' | 'tier'>
  /** Queries and mutations over terminated sockets: subscribe received → result sent (never a subscription's lifetime). */
  readonly operationDuration: Histogram<'route' | 'op'>

  constructor(registry: Registry) {
    const connections = gauge(registry, { name: 'igw_subscription_connections', help: 'Open terminated subscription WebSockets, by delivery tier (none: no subscription yet)', labelNames: ['tier'] })
    const subscriptions = gauge(registry, { name: 'igw_subscriptions_active', help: 'Client subscriptions being delivered, by tier', labelNames: ['tier'] })
    // kind="event" beside the quota filter's kind="request" (shed HTTP requests), same metric.
    const drops = counter(registry, { name: 'igw_qos_drops_total', help: 'QoS drops by tier and kind: request (an HTTP request shed under overload), event (a subscription event dropped for a slow consumer)', labelNames: ['tier', 'kind'] })
    const delivery = histogram(registry, {
      name: 'igw_subscription_delivery_seconds',
      help: 'Event received from the upstream to written to the client socket, by tier',
      labelNames: ['tier'],
      buckets: DELIVERY_BUCKETS,
    })
    const tiers = {} as Record<TierLabel, TierMetrics>
    for (const t of TIER_LABELS) tiers[t] = { connections: connections.labels(t), subscriptions: subscriptions.labels(t), drops: drops.labels(t, 'event'), delivery: delivery.labels(t) }
    this.tiers = tiers
    this.upstreams = gauge(registry, { name: 'igw_subscription_upstreams', help: 'Upstream subscriptions (shared streams); igw_subscriptions_active divided by this is the dedup ratio' })
    // Per socket, open to close (not per pooled connection object: one waiting to reconnect has
    // no socket), so a dead upstream reads 0 beside the others' counts.
    this.upstreamConnections = gauge(registry, {
      name: 'igw_subscription_upstream_connections',
      help: 'Open WebSockets to subscription upstreams (from the socket\'s open to its close, acknowledged or not; 0 while reconnecting), by upstream (its configured name)',
      labelNames: ['upstream'],
    })
    this.upstreamReconnects = counter(registry, { name: 'igw_subscription_upstream_reconnects_total', help: 'Upstream connections re-established after a drop' })
    this.upstreamFinalCloses = counter(registry, {
      name: 'igw_subscription_upstream_final_closes_total',
      help: 'Upstream connections closed for good (44xx but 4408/4499, 4500, 1002/1008/1011…, a handshake refused with an HTTP 4xx but 408/429, or closed before connection_ack on the first connection or 5 reconnects in a row: not reconnected; their operations end with UPSTREAM_UNAVAILABLE), by close code or http_<status>',
      labelNames: ['code'],
    })
    this.streamEvictions = counter(registry, { name: 'igw_subscription_upstream_evictions_total', help: 'Lingering upstream subscriptions (no client left) closed early to stay within subscriptions.upstream.maxStreams' })
    this.upstreamOversized = counter(registry, {
      name: 'igw_subscription_upstream_oversized_total',
      help: 'Upstream operations ended because their connection was dropped for a message over the route\'s websocket.maxMessageBytes on 3 reconnects in a row (instead of reconnecting forever)',
    })
    this.events = counter(registry, { name: 'igw_subscription_events_total', help: 'Events received from upstream subscriptions' })
    this.gaps = counter(registry, { name: 'igw_replay_gaps_total', help: 'Gap notices sent to clients, by reason (trimmed, expired, epoch, invalid, dropped)', labelNames: ['reason'] })
    this.replayEvents = counter(registry, { name: 'igw_replay_events_total', help: 'Events re-sent from a replay log, by source (memory, redis)', labelNames: ['source'] })
    this.replayRequests = counter(registry, { name: 'igw_replay_requests_total', help: 'Subscribes with a cursor, by outcome (resumed, gap)', labelNames: ['result'] })
    this.rejections = counter(registry, { name: 'igw_subscription_rejections_total', help: 'Subscribes refused (by the filter chain or the hub), by error code', labelNames: ['code'] })
    this.closes = counter(registry, { name: 'igw_subscription_closes_total', help: 'Client connections the gateway closed, by close code (keepalive: dropped without a close frame after an unanswered keep-alive ping)', labelNames: ['code'] })
    this.redisErrors = counter(registry, { name: 'igw_subscription_redis_errors_total', help: 'Replay log operations on Redis that failed (delivery continues from memory)', labelNames: ['op'] })
    this.queuedBytes = gauge(registry, { name: 'igw_subscription_queued_bytes', help: 'Bytes waiting in delivery queues' })
    this.redisUp = gauge(registry, { name: 'igw_subscription_redis_up', help: 'Worker threads whose replay-log Redis connection is ready', aggregator: 'sum' })
    this.redisReconnects = counter(registry, { name: 'igw_subscription_redis_reconnects_total', help: 'Times the replay-log Redis connection came back after a loss' })
    this.operations = counter(registry, {
      name: 'igw_subscription_operations_total',
      help: 'Operations sent over terminated WebSockets, counted when each ends (admitted or refused), by route, GraphQL operation type (none: not parsed), status (as its access line: 200, 499 abandoned, the error code\'s HTTP status) and tenant tier ("" without)',
      labelNames: ['route', 'op', 'status', 'tier'],
    })
    this.operationDuration = histogram(registry, {
      name: 'igw_subscription_operation_duration_seconds',
      help: 'Queries and mutations sent over terminated WebSockets: subscribe received to result, error or abandon, by route and operation type (subscriptions are not observed: their duration is their lifetime)',
      labelNames: ['route', 'op'],
      buckets: LATENCY_BUCKETS,
    })
  }
}
