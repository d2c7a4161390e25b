// The quota filter's metrics, created once per worker registry. Figures that live in shared
// memory (usedToday, budget ratio, in-flight, live proxies) are gauges read at scrape time,
// identical in every thread, so they aggregate with "max", not "sum".
import type { Counter, Registry } from 'prom-client'
import { counter, gauge, PlainHistogram, type PlainHistogramSeries } from '../../proxy/metrics.ts'

/** Decision latency: the budget (5 ms by default) must sit between two buckets. */
export const DECISION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5]

const DECISION_HELP = 'Time to decide a request (path: local, redis, fallback)'

/** One (kind, path) series of the decision histogram: plain numbers, nothing allocated per observation. */
export type LatencySeries = PlainHistogramSeries

/**
 * igw_quota_decision_seconds. Every Redis decision is timed, tens of thousands a second per
 * worker; a PlainHistogram keeps each series in plain numbers (prom-client's observe() builds a
 * label object and hashes it on each call) and prints and aggregates like a prom-client Histogram.
 */
export class DecisionHistogram extends PlainHistogram<'kind' | 'path'> {
  static readonly NAME = 'igw_quota_decision_seconds'

  constructor(registry: Registry) {
    super(registry, { name: DecisionHistogram.NAME, help: DECISION_HELP, labelNames: ['kind', 'path'], buckets: DECISION_BUCKETS })
  }
}

function decisionHistogram(registry: Registry): DecisionHistogram {
  const existing = registry.getSingleMetric(DecisionHistogram.NAME)
  if (existing instanceof DecisionHistogram) return existing
  return new DecisionHistogram(registry)
}

export interface QuotaMetrics {
  rejections: Counter<'kind' | 'reason'>
  wouldReject: Counter<'kind' | 'reason'>
  decisions: DecisionHistogram
  redisErrors: Counter<'error'>
  fallbacks: Counter<'policy'>
  recoveries: Counter
  qosDrops: Counter<'tier' | 'kind'>
  events: Counter<'type'>
  deliveries: Counter<'result'>
  stateFileErrors: Counter<'op'>
  outageUnitsUnsaved: Counter
}

export interface GaugeSources {
  usedToday(): Promise<{ tenant: string; kind: string; value: number }[]>
  budgetRatio(): Promise<{ tenant: string; value: number }[]>
  inflight(): number
  liveProxies(): number
  overflows(): number
  breakerOpen(): number
}

export function createQuotaMetrics(registry: Registry, sources: GaugeSources): QuotaMetrics {
  gauge(registry, {
    name: 'igw_quota_used_today',
    help: 'Cost units used today per tenant and kind (tenant local day; listed tenants only)',
    labelNames: ['tenant', 'kind'],
    aggregator: 'max',
    async collect() {
      this.reset()
      for (const r of await sources.usedToday()) this.labels(r.tenant, r.kind).set(r.value)
    },
  })
  gauge(registry, {
    name: 'igw_budget_used_ratio',
    help: 'Rolling budget used ÷ budget units per tenant (listed tenants only)',
    labelNames: ['tenant'],
    aggregator: 'max',
    async collect() {
      this.reset()
      for (const r of await sources.budgetRatio()) this.labels(r.tenant).set(r.value)
    },
  })
  gauge(registry, {
    name: 'igw_quota_inflight',
    help: 'Requests in flight on quota routes, all worker threads (QoS input)',
    aggregator: 'max',
    collect() {
      this.set(sources.inflight())
    },
  })
  gauge(registry, {
    name: 'igw_quota_live_proxies',
    help: 'Proxies sharing Redis that announced themselves recently (local-share divisor)',
    aggregator: 'max',
    collect() {
      this.set(sources.liveProxies())
    },
  })
  gauge(registry, {
    name: 'igw_quota_table_overflows',
    help: 'Tenants that found the shared quota table (slots or budget rings) full and share the overflow slot or ring',
    aggregator: 'max',
    collect() {
      this.set(sources.overflows())
    },
  })
  gauge(registry, {
    name: 'igw_quota_redis_breaker_open',
    help: 'Worker threads whose Redis circuit breaker is open (quota decisions follow the outage policy)',
    aggregator: 'sum',
    collect() {
      this.set(sources.breakerOpen())
    },
  })
  return {
    rejections: counter(registry, { name: 'igw_quota_rejections_total', help: 'Requests refused by the quota filter, by kind and reason', labelNames: ['kind', 'reason'] }),
    wouldReject: counter(registry, { name: 'igw_quota_would_reject_total', help: 'Requests a shadow rule would have refused (let through)', labelNames: ['kind', 'reason'] }),
    decisions: decisionHistogram(registry),
    redisErrors: counter(registry, { name: 'igw_quota_redis_errors_total', help: 'Quota calls Redis did not answer in time or at all (timeout, unavailable, error), and groups of one tenant whose keys it refused (key)', labelNames: ['error'] }),
    fallbacks: counter(registry, { name: 'igw_quota_redis_fallbacks_total', help: 'Decisions made by the Redis outage policy', labelNames: ['policy'] }),
    recoveries: counter(registry, { name: 'igw_quota_redis_recoveries_total', help: 'Times the Redis circuit breaker closed again after an outage' }),
    // kind="request": shed HTTP requests; the subscription hub counts dropped events under the
    // same name with kind="event" (one was read as the other: a slow subscriber looked like shedding).
    qosDrops: counter(registry, { name: 'igw_qos_drops_total', help: 'QoS drops by tier and kind: request (an HTTP request shed under overload), event (a subscription event dropped for a slow consumer)', labelNames: ['tier', 'kind'] }),
    events: counter(registry, { name: 'igw_quota_events_total', help: 'Budget and anomaly events emitted', labelNames: ['type'] }),
    deliveries: counter(registry, { name: 'igw_quota_webhook_deliveries_total', help: 'Event webhook attempts by outcome (delivered, retry, failed, dropped: backlog full or given up at shutdown)', labelNames: ['result'] }),
    stateFileErrors: counter(registry, { name: 'igw_quota_state_file_errors_total', help: 'Quota state file reads (at start) and writes that failed', labelNames: ['op'] }),
    outageUnitsUnsaved: counter(registry, {
      name: 'igw_quota_outage_units_unsaved_total',
      help: 'Cost units admitted during a Redis outage that a closing quota filter could neither report to Redis nor save for the next start (no quotas.stateFile, or it could not be written)',
    }),
  }
}
