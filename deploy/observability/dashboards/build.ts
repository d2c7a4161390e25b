// Builds the Grafana dashboards (dashboards/*.json) from this one file, so every panel follows
// the same conventions (datasource variable, units, 24-column grid) and PromQL lives in one
// place. `node deploy/observability/dashboards/build.ts` rewrites the JSON; `--check` fails
// when a committed file is stale (test/deploy/dashboards.test.ts runs it).
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

interface Target {
  expr: string
  legend?: string
}
interface PanelSpec {
  title: string
  type: 'timeseries' | 'stat' | 'table' | 'bargauge' | 'gauge'
  targets: Target[]
  unit?: string
  w?: number
  h?: number
  description?: string
  thresholds?: { color: string; value: number | null }[]
  min?: number
  max?: number
}
interface RowSpec {
  row: string
  panels: PanelSpec[]
}
interface DashboardSpec {
  uid: string
  title: string
  description: string
  variables: { name: string; query: string; label: string; multi?: boolean }[]
  rows: RowSpec[]
}

const DS = { type: 'prometheus', uid: '${datasource}' }
const R = '$__rate_interval'

function variable(v: DashboardSpec['variables'][number]) {
  return {
    name: v.name,
    label: v.label,
    type: 'query',
    datasource: DS,
    query: { query: v.query, refId: `${v.name}-values` },
    definition: v.query,
    refresh: 2,
    includeAll: true,
    allValue: '.*',
    multi: v.multi ?? true,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
  }
}

function build(spec: DashboardSpec): unknown {
  const panels: unknown[] = []
  let id = 1
  let y = 0
  for (const row of spec.rows) {
    panels.push({ id: id++, type: 'row', title: row.row, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] })
    y += 1
    let x = 0
    let rowHeight = 0
    for (const p of row.panels) {
      const w = p.w ?? 12
      const h = p.h ?? 8
      if (x + w > 24) {
        x = 0
        y += rowHeight
        rowHeight = 0
      }
      const defaults: Record<string, unknown> = { unit: p.unit ?? 'short' }
      if (p.min !== undefined) defaults.min = p.min
      if (p.max !== undefined) defaults.max = p.max
      if (p.thresholds) defaults.thresholds = { mode: 'absolute', steps: p.thresholds }
      panels.push({
        id: id++,
        type: p.type,
        title: p.title,
        ...(p.description ? { description: p.description } : {}),
        datasource: DS,
        gridPos: { h, w, x, y },
        fieldConfig: { defaults, overrides: [] },
        options: p.type === 'table' ? { showHeader: true } : p.type === 'timeseries' ? { legend: { displayMode: 'table', placement: 'bottom', calcs: ['lastNotNull', 'max'] }, tooltip: { mode: 'multi' } } : { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false } },
        targets: p.targets.map((t, i) => ({
          refId: String.fromCharCode(65 + i),
          datasource: DS,
          expr: t.expr,
          legendFormat: t.legend ?? '__auto',
          ...(p.type === 'table' ? { format: 'table', instant: true } : {}),
        })),
      })
      x += w
      rowHeight = Math.max(rowHeight, h)
    }
    y += rowHeight
  }
  return {
    uid: spec.uid,
    title: spec.title,
    description: spec.description,
    tags: ['igw', 'intelgraph-gateway'],
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-6h', to: 'now' },
    timezone: 'browser',
    annotations: { list: [] },
    links: [{ title: 'igw dashboards', type: 'dashboards', tags: ['igw'], asDropdown: true }],
    templating: {
      list: [
        { name: 'datasource', label: 'Prometheus', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
        ...spec.variables.map(variable),
      ],
    },
    panels,
  }
}

const PCT_THRESHOLDS = (bad: number, warn: number) => [
  { color: 'red', value: null },
  { color: 'orange', value: bad },
  { color: 'green', value: warn },
]

// Read objectives match alerts.yaml: availability 99.9 %, read and delivery 95 % within 250 ms.
const route = 'route=~"$route"'
const errorRatio30d = `sum by (route) (increase(igw_requests_total{${route},status=~"5.."}[30d])) / sum by (route) (increase(igw_requests_total{${route}}[30d]))`
// Requests, not streams: a subscription relayed over SSE or multipart is observed for as long as
// its client listens (op="subscription", typed or a persisted id's), an hour-long one in +Inf.
const requestsOnly = `${route},op!="subscription"`
const REQUESTS_ONLY = 'Requests only: subscription streams (op="subscription") last as long as their client listens and are excluded.'
const slowRatio30d = `1 - sum by (route) (increase(igw_request_duration_seconds_bucket{${requestsOnly},le="0.25"}[30d])) / sum by (route) (increase(igw_request_duration_seconds_count{${requestsOnly}}[30d]))`

export const dashboards: DashboardSpec[] = [
  {
    uid: 'igw-sla',
    title: 'igw — SLA',
    description: 'Availability, read p95, error budget remaining and burn rate per route; subscription delivery per tier; budgets per tenant.',
    variables: [
      { name: 'route', label: 'Route', query: 'label_values(igw_requests_total, route)' },
      { name: 'tier', label: 'Tier', query: 'label_values(igw_subscriptions_active, tier)' },
      { name: 'tenant', label: 'Tenant', query: 'label_values(igw_budget_used_ratio, tenant)' },
    ],
    rows: [
      {
        row: 'Availability (SLO 99.9 % non-5xx over 30 days)',
        panels: [
          { title: 'Availability, 30 days', type: 'stat', unit: 'percentunit', w: 6, targets: [{ expr: `1 - (${errorRatio30d})`, legend: '{{route}}' }], thresholds: PCT_THRESHOLDS(0.995, 0.999), min: 0.99, max: 1 },
          { title: 'Error budget remaining, 30 days', type: 'bargauge', unit: 'percentunit', w: 6, targets: [{ expr: `1 - (${errorRatio30d}) / 0.001`, legend: '{{route}}' }], thresholds: PCT_THRESHOLDS(0, 0.25), min: 0, max: 1 },
          {
            title: 'Burn rate (1 = budget lasts exactly 30 days)',
            type: 'timeseries',
            w: 12,
            description: 'Pages at 14.4 (1h and 5m) and at 6 (6h and 30m).',
            targets: [
              { expr: `igw:request_error_ratio:rate1h{${route}} / 0.001`, legend: '1h {{route}}' },
              { expr: `igw:request_error_ratio:rate6h{${route}} / 0.001`, legend: '6h {{route}}' },
            ],
          },
          { title: 'Requests per second by status', type: 'timeseries', unit: 'reqps', w: 12, targets: [{ expr: `sum by (route, status) (rate(igw_requests_total{${route}}[${R}]))`, legend: '{{route}} {{status}}' }] },
          { title: 'Proxy errors by code', type: 'timeseries', unit: 'reqps', w: 12, targets: [{ expr: `sum by (route, code) (rate(igw_proxy_errors_total{${route}}[${R}]))`, legend: '{{route}} {{code}}' }, { expr: `sum by (route) (rate(igw_upstream_retries_total{${route}}[${R}]))`, legend: '{{route}} retried (upstream closed before answering)' }] },
        ],
      },
      {
        row: 'Read latency (SLO p95 ≤ 250 ms)',
        panels: [
          { title: 'p95 latency', type: 'timeseries', unit: 's', w: 12, description: REQUESTS_ONLY, targets: [{ expr: `histogram_quantile(0.95, sum by (route, le) (rate(igw_request_duration_seconds_bucket{${requestsOnly}}[${R}])))`, legend: 'p95 {{route}}' }, { expr: `histogram_quantile(0.50, sum by (route, le) (rate(igw_request_duration_seconds_bucket{${requestsOnly}}[${R}])))`, legend: 'p50 {{route}}' }] },
          { title: 'Latency budget remaining, 30 days', type: 'bargauge', unit: 'percentunit', w: 6, description: REQUESTS_ONLY, targets: [{ expr: `1 - (${slowRatio30d}) / 0.05`, legend: '{{route}}' }], thresholds: PCT_THRESHOLDS(0, 0.25), min: 0, max: 1 },
          {
            title: 'Latency burn rate',
            type: 'timeseries',
            w: 6,
            targets: [
              { expr: `igw:read_slow_ratio:rate1h{${route}} / 0.05`, legend: '1h {{route}}' },
              { expr: `igw:read_slow_ratio:rate6h{${route}} / 0.05`, legend: '6h {{route}}' },
            ],
          },
        ],
      },
      {
        row: 'Per tier and tenant',
        panels: [
          { title: 'Subscription delivery p95 by tier (SLO ≤ 250 ms)', type: 'timeseries', unit: 's', w: 8, targets: [{ expr: `igw:subscription_delivery_p95:rate5m{tier=~"$tier"}`, legend: '{{tier}}' }] },
          { title: 'Delivery burn rate by tier', type: 'timeseries', w: 8, targets: [{ expr: `igw:subscription_delivery_slow_ratio:rate1h{tier=~"$tier"} / 0.05`, legend: '1h {{tier}}' }, { expr: `igw:subscription_delivery_slow_ratio:rate6h{tier=~"$tier"} / 0.05`, legend: '6h {{tier}}' }] },
          { title: 'QoS drops by tier (request: shed, event: slow subscriber)', type: 'timeseries', unit: 'ops', w: 8, targets: [{ expr: `sum by (tier, kind) (rate(igw_qos_drops_total{tier=~"$tier"}[${R}]))`, legend: '{{tier}} {{kind}}' }] },
          { title: 'Budget used by tenant', type: 'bargauge', unit: 'percentunit', w: 24, targets: [{ expr: `max by (tenant) (igw_budget_used_ratio{tenant=~"$tenant"})`, legend: '{{tenant}}' }], thresholds: [{ color: 'green', value: null }, { color: 'orange', value: 0.8 }, { color: 'red', value: 1 }], min: 0, max: 1 },
        ],
      },
    ],
  },
  {
    uid: 'igw-cost-controls',
    title: 'igw — cost controls',
    description: 'Quota rejections, rolling budgets, QoS shedding and the shared-state Redis.',
    variables: [
      { name: 'kind', label: 'Kind', query: 'label_values(igw_quota_rejections_total, kind)' },
      { name: 'tenant', label: 'Tenant', query: 'label_values(igw_budget_used_ratio, tenant)' },
    ],
    rows: [
      {
        row: 'Quotas',
        panels: [
          { title: 'Rejections by kind and reason', type: 'timeseries', unit: 'reqps', w: 12, targets: [{ expr: `sum by (kind, reason) (rate(igw_quota_rejections_total{kind=~"$kind"}[${R}]))`, legend: '{{kind}} {{reason}}' }] },
          { title: 'Rejected share of requests', type: 'timeseries', unit: 'percentunit', w: 12, targets: [{ expr: `sum(rate(igw_quota_rejections_total{kind=~"$kind"}[${R}])) / sum(rate(igw_requests_total[${R}]))`, legend: 'rejected' }] },
          { title: 'Rejection spike ratio (alert at 3)', type: 'timeseries', w: 12, targets: [{ expr: `igw:quota_rejections:rate5m{kind=~"$kind"} / igw:quota_rejections:rate1h{kind=~"$kind"}`, legend: '{{kind}} {{reason}}' }] },
          { title: 'Redis errors during quota decisions', type: 'timeseries', unit: 'ops', w: 12, targets: [{ expr: `sum(rate(igw_quota_redis_errors_total[${R}]))`, legend: 'errors' }, { expr: 'sum(igw_redis_up)', legend: 'worker connections up' }] },
        ],
      },
      {
        row: 'Budgets and QoS',
        panels: [
          { title: 'Budget used by tenant (events at 80 % and 100 %)', type: 'bargauge', unit: 'percentunit', w: 12, targets: [{ expr: `max by (tenant) (igw_budget_used_ratio{tenant=~"$tenant"})`, legend: '{{tenant}}' }], thresholds: [{ color: 'green', value: null }, { color: 'orange', value: 0.8 }, { color: 'red', value: 1 }], min: 0, max: 1 },
          { title: 'Requests shed by tier (bronze first, then silver)', type: 'timeseries', unit: 'ops', w: 12, targets: [{ expr: `sum by (tier) (rate(igw_qos_drops_total{kind="request"}[${R}]))`, legend: '{{tier}}' }] },
        ],
      },
    ],
  },
  {
    uid: 'igw-cache',
    title: 'igw — cache',
    description: 'Read-through cache: hit ratio per persisted operation, results, and the latency it saves.',
    variables: [
      { name: 'persisted_id', label: 'Persisted operation', query: 'label_values(igw_cache_persisted_requests_total, persisted_id)' },
      { name: 'route', label: 'Route', query: 'label_values(igw_requests_total, route)' },
    ],
    rows: [
      {
        row: 'Hit ratio (alert below 85 % on hot operations)',
        panels: [
          // hit, stale and coalesced are answered from the cache; bypass is not cacheable.
          { title: 'Hit ratio', type: 'stat', unit: 'percentunit', w: 6, targets: [{ expr: `sum(rate(igw_cache_requests_total{result=~"hit|stale|coalesced"}[${R}])) / sum(rate(igw_cache_requests_total{result=~"hit|stale|coalesced|miss"}[${R}]))`, legend: 'hit ratio' }], thresholds: PCT_THRESHOLDS(0.7, 0.85), min: 0, max: 1 },
          { title: 'Results', type: 'timeseries', unit: 'reqps', w: 18, targets: [{ expr: `sum by (result) (rate(igw_cache_requests_total[${R}]))`, legend: '{{result}}' }] },
          { title: 'Hit ratio per persisted operation (15 min)', type: 'table', unit: 'percentunit', w: 12, h: 10, targets: [{ expr: 'sort(igw:cache_hit_ratio:rate15m{persisted_id=~"$persisted_id"})', legend: '{{persisted_id}}' }] },
          { title: 'Lookups per persisted operation (hot ≥ 1/s)', type: 'table', unit: 'reqps', w: 12, h: 10, targets: [{ expr: 'sort_desc(igw:cache_lookups:rate15m{persisted_id=~"$persisted_id"})', legend: '{{persisted_id}}' }] },
        ],
      },
      {
        row: 'Latency saved',
        panels: [
          {
            title: 'p95: all requests vs the upstream (uncached) path',
            type: 'timeseries',
            unit: 's',
            w: 12,
            targets: [
              { expr: `igw:read_latency_p95:rate5m{${route}}`, legend: 'all requests {{route}}' },
              { expr: `igw:upstream_latency_p95:rate5m{${route}}`, legend: 'upstream {{route}}' },
            ],
          },
          { title: 'p95 delta vs uncached', type: 'timeseries', unit: 's', w: 12, description: 'Negative: with the cache, p95 is faster than the upstream alone.', targets: [{ expr: `igw:read_latency_p95:rate5m{${route}} - igw:upstream_latency_p95:rate5m{${route}}`, legend: '{{route}}' }] },
        ],
      },
    ],
  },
  {
    uid: 'igw-subscriptions',
    title: 'igw — subscriptions',
    description: 'Active subscriptions and connections, delivery p95 per tier, replay gaps and QoS drops.',
    variables: [{ name: 'tier', label: 'Tier', query: 'label_values(igw_subscriptions_active, tier)' }],
    rows: [
      {
        row: 'Streams',
        panels: [
          { title: 'Active subscriptions by tier', type: 'timeseries', w: 12, targets: [{ expr: `sum by (tier) (igw_subscriptions_active{tier=~"$tier"})`, legend: '{{tier}}' }] },
          { title: 'WebSocket connections by route', type: 'timeseries', w: 12, targets: [{ expr: 'sum by (route) (igw_websocket_connections)', legend: '{{route}}' }] },
          { title: 'Delivery p95 by tier (SLO ≤ 250 ms)', type: 'timeseries', unit: 's', w: 12, targets: [{ expr: `histogram_quantile(0.95, sum by (tier, le) (rate(igw_subscription_delivery_seconds_bucket{tier=~"$tier"}[${R}])))`, legend: '{{tier}}' }], thresholds: [{ color: 'green', value: null }, { color: 'red', value: 0.25 }] },
          { title: 'Messages relayed', type: 'timeseries', unit: 'ops', w: 12, targets: [{ expr: `sum by (direction) (rate(igw_websocket_messages_total[${R}]))`, legend: '{{direction}}' }] },
        ],
      },
      {
        row: 'Operations over terminated sockets',
        panels: [
          { title: 'Socket operations by kind and status', type: 'timeseries', unit: 'ops', w: 12, targets: [{ expr: `sum by (op, status) (rate(igw_subscription_operations_total{tier=~"$tier|"}[${R}]))`, legend: '{{op}} {{status}}' }] },
          { title: 'Socket query and mutation p95 (not in the HTTP read-latency SLO)', type: 'timeseries', unit: 's', w: 12, targets: [{ expr: `histogram_quantile(0.95, sum by (op, le) (rate(igw_subscription_operation_duration_seconds_bucket[${R}])))`, legend: '{{op}}' }] },
        ],
      },
      {
        row: 'Loss',
        panels: [
          { title: 'Replay gaps by reason (alert above 10 in 10 min)', type: 'timeseries', w: 12, targets: [{ expr: 'sum by (reason) (increase(igw_replay_gaps_total[10m]))', legend: '{{reason}}' }] },
          { title: 'Events dropped for slow consumers by tier', type: 'timeseries', unit: 'ops', w: 12, targets: [{ expr: `sum by (tier) (rate(igw_qos_drops_total{kind="event",tier=~"$tier"}[${R}]))`, legend: '{{tier}}' }] },
          {
            title: 'Upstream connections closed for good, per hour, by code',
            type: 'timeseries',
            w: 12,
            description: 'Not reconnected: the operations on them ended with UPSTREAM_UNAVAILABLE. A close code meant for good (44xx but 4408/4499, 4500, 1002/1008/1011…), http_<status> for a handshake refused with a 4xx, or a close before connection_ack (on a first connection, or 5 reconnects in a row).',
            targets: [
              { expr: 'sum by (code) (increase(igw_subscription_upstream_final_closes_total[1h]))', legend: '{{code}}' },
              { expr: 'sum(increase(igw_subscription_upstream_oversized_total[1h]))', legend: 'ended: message over maxMessageBytes on every resubscribe' },
            ],
          },
          {
            title: 'Replay-log Redis: failed operations by op, connections up',
            type: 'timeseries',
            w: 12,
            description: 'Delivery goes on from memory; op="pending_dropped": events that never reached the replay log (a client resuming on another pod gets a gap for them).',
            targets: [
              { expr: `sum by (op) (rate(igw_subscription_redis_errors_total[${R}]))`, legend: '{{op}}' },
              { expr: 'sum by (instance) (igw_subscription_redis_up)', legend: 'up {{instance}}' },
            ],
          },
        ],
      },
    ],
  },
  {
    uid: 'igw-dlp',
    title: 'igw — DLP',
    description: 'DLP actions on export responses by data type and action; exports by outcome; keyring reload failures.',
    variables: [{ name: 'type', label: 'Data type', query: 'label_values(igw_dlp_actions_total, type)' }],
    rows: [
      {
        row: 'Actions',
        panels: [
          { title: 'Actions per second by type and action', type: 'timeseries', unit: 'ops', w: 16, targets: [{ expr: `sum by (type, action) (rate(igw_dlp_actions_total{type=~"$type"}[${R}]))`, legend: '{{type}} {{action}}' }] },
          { title: 'Blocked exports, 24 h', type: 'stat', w: 8, targets: [{ expr: `sum(increase(igw_dlp_actions_total{type=~"$type",action="block"}[24h]))`, legend: 'blocked' }], thresholds: [{ color: 'green', value: null }, { color: 'orange', value: 1 }] },
          { title: 'Actions by type, 24 h', type: 'bargauge', w: 12, targets: [{ expr: `sum by (type) (increase(igw_dlp_actions_total{type=~"$type"}[24h]))`, legend: '{{type}}' }] },
          { title: 'Actions by action, 24 h', type: 'bargauge', w: 12, targets: [{ expr: `sum by (action) (increase(igw_dlp_actions_total{type=~"$type"}[24h]))`, legend: '{{action}}' }] },
        ],
      },
      {
        row: 'Exports',
        panels: [
          { title: 'Exports per second by outcome', type: 'timeseries', unit: 'ops', w: 16, targets: [{ expr: `sum by (outcome) (rate(igw_dlp_exports_total[${R}]))`, legend: '{{outcome}}' }] },
          { title: 'Exports not allowed, 24 h (blocked, denied, malformed, uninspectable)', type: 'stat', w: 8, targets: [{ expr: 'sum(increase(igw_dlp_exports_total{outcome=~"blocked|denied|malformed|uninspectable"}[24h]))', legend: 'refused' }], thresholds: [{ color: 'green', value: null }, { color: 'orange', value: 1 }] },
          { title: 'Export policy failures per second by cause (runaway: over 250 ms or the memory cap)', type: 'timeseries', unit: 'ops', w: 16, targets: [{ expr: `sum by (cause) (rate(igw_dlp_policy_failures_total[${R}]))`, legend: '{{cause}}' }] },
          { title: 'Export policy failures, 24 h', type: 'stat', w: 8, targets: [{ expr: 'sum(increase(igw_dlp_policy_failures_total[24h]))', legend: 'failures' }], thresholds: [{ color: 'green', value: null }, { color: 'orange', value: 1 }] },
        ],
      },
      {
        row: 'Keyring',
        panels: [
          { title: 'Keyring reload failures by instance (alert at any in 1 h)', type: 'timeseries', w: 16, targets: [{ expr: `sum by (instance) (increase(igw_dlp_keyring_reload_failures_total[${R}]))`, legend: '{{instance}}' }] },
          { title: 'Keyring reload failures, 24 h', type: 'stat', w: 8, targets: [{ expr: 'sum(increase(igw_dlp_keyring_reload_failures_total[24h]))', legend: 'failures' }], thresholds: [{ color: 'green', value: null }, { color: 'orange', value: 1 }] },
        ],
      },
    ],
  },
  {
    uid: 'igw-proxy',
    title: 'igw — proxy',
    description: 'The proxy itself: workers, config versions and reloads, upstream health, Redis, memory and CPU.',
    variables: [],
    rows: [
      {
        row: 'Process',
        panels: [
          { title: 'Config version per instance', type: 'timeseries', w: 8, targets: [{ expr: 'igw_config_version', legend: '{{instance}}' }] },
          {
            title: 'Config reloads rejected (and applied), per hour',
            type: 'timeseries',
            w: 8,
            targets: [
              { expr: 'sum by (instance) (increase(igw_config_reload_failures_total[1h]))', legend: '{{instance}} rejected' },
              { expr: 'sum by (instance) (increase(igw_config_reloads_total[1h]))', legend: '{{instance}} applied' },
            ],
          },
          { title: 'Workers listening / restarts / stalls', type: 'timeseries', w: 8, targets: [{ expr: 'sum by (instance) (igw_workers)', legend: 'workers {{instance}}' }, { expr: 'sum by (instance) (increase(igw_worker_restarts_total[1h]))', legend: 'restarts/h {{instance}}' }, { expr: 'sum by (instance) (increase(igw_worker_stalls_total[1h]))', legend: 'stalls/h {{instance}}' }, { expr: 'sum by (instance) (increase(igw_log_dropped_bytes_total[1h]))', legend: 'log bytes dropped/h {{instance}}' }] },
          { title: 'Upstream health', type: 'timeseries', w: 8, min: 0, max: 1, targets: [{ expr: 'min by (upstream) (igw_upstream_healthy)', legend: '{{upstream}}' }] },
          { title: 'Redis connections up', type: 'timeseries', w: 8, targets: [{ expr: 'sum by (instance) (igw_redis_up)', legend: '{{instance}}' }] },
          { title: 'Filter errors', type: 'timeseries', unit: 'ops', w: 8, targets: [{ expr: `sum by (filter) (rate(igw_filter_errors_total[${R}]))`, legend: '{{filter}}' }] },
          {
            title: 'JWT verifications by route and result',
            type: 'timeseries',
            unit: 'ops',
            w: 8,
            description: 'ok | missing | invalid_request | invalid (forged, malformed, no matching key) | expired | refused_claim (iss, aud, nbf, a required exp or the tenant claim). A rise of invalid after a key rotation: see IgwJwtKeyFilesStale.',
            targets: [{ expr: `sum by (route, result) (rate(igw_jwt_verifications_total[${R}]))`, legend: '{{route}} {{result}}' }],
          },
          { title: 'Resident memory', type: 'timeseries', unit: 'bytes', w: 8, targets: [{ expr: 'igw_process_resident_memory_bytes', legend: '{{instance}}' }] },
          { title: 'CPU (cores)', type: 'timeseries', w: 8, targets: [{ expr: `rate(igw_process_cpu_seconds_total[${R}])`, legend: '{{instance}}' }] },
          { title: 'Supervisor event-loop lag p99', type: 'timeseries', unit: 's', w: 8, targets: [{ expr: 'igw_nodejs_eventloop_lag_p99_seconds', legend: '{{instance}}' }] },
          { title: 'Worker heap used / limit', type: 'timeseries', unit: 'bytes', w: 8, targets: [{ expr: 'max by (instance, worker) (igw_worker_heap_used_bytes)', legend: 'used {{instance}} w{{worker}}' }, { expr: 'max by (instance, worker) (igw_worker_heap_size_limit_bytes)', legend: 'limit {{instance}} w{{worker}}' }] },
          { title: 'Client aborts', type: 'timeseries', unit: 'reqps', w: 8, targets: [{ expr: `sum by (route) (rate(igw_client_aborts_total[${R}]))`, legend: '{{route}}' }] },
          { title: 'Metrics scrapes: stale worker threads / age of their numbers / metrics left out', type: 'timeseries', w: 8, targets: [{ expr: 'max by (instance) (igw_metrics_stale_workers)', legend: 'stale {{instance}}' }, { expr: 'max by (instance, worker) (igw_worker_metrics_age_seconds)', legend: 'age s {{instance}} w{{worker}}' }, { expr: 'sum by (instance, metric) (increase(igw_metrics_collect_errors_total[1h]))', legend: 'left out/h {{instance}} {{metric}}' }] },
        ],
      },
    ],
  },
  {
    uid: 'igw-control-plane',
    title: 'igw — control plane',
    description: 'The control plane: admin API traffic, config pushes with ACK/NACK, the audit log and signed plugin uploads (scraped from its --metrics-listen port).',
    variables: [],
    rows: [
      {
        row: 'Admin API',
        panels: [
          { title: 'Requests per second by route and status', type: 'timeseries', unit: 'reqps', w: 12, targets: [{ expr: `sum by (route, status) (rate(igw_control_plane_requests_total[${R}]))`, legend: '{{route}} {{status}}' }] },
          { title: 'p95 latency by route', type: 'timeseries', unit: 's', w: 12, targets: [{ expr: `histogram_quantile(0.95, sum by (route, le) (rate(igw_control_plane_request_duration_seconds_bucket[${R}])))`, legend: '{{route}}' }] },
          { title: 'Server errors (5xx share)', type: 'stat', unit: 'percentunit', w: 12, targets: [{ expr: `sum(rate(igw_control_plane_requests_total{status=~"5.."}[${R}])) / sum(rate(igw_control_plane_requests_total[${R}]))`, legend: '5xx' }], thresholds: [{ color: 'green', value: null }, { color: 'red', value: 0.01 }] },
          { title: 'Requests within 250 ms', type: 'stat', unit: 'percentunit', w: 12, targets: [{ expr: `sum(rate(igw_control_plane_request_duration_seconds_bucket{le="0.25"}[${R}])) / sum(rate(igw_control_plane_request_duration_seconds_count[${R}]))`, legend: 'within 250 ms' }], thresholds: PCT_THRESHOLDS(0.9, 0.99), min: 0, max: 1 },
          { title: 'Writes refused, database out of disk space (503 STORAGE_FULL), per hour (alert at any)', type: 'timeseries', w: 24, targets: [{ expr: 'sum by (instance) (increase(igw_control_plane_storage_full_total[1h]))', legend: '{{instance}}' }] },
        ],
      },
      {
        row: 'Config push',
        panels: [
          { title: 'Proxies connected', type: 'timeseries', w: 8, targets: [{ expr: 'sum by (instance) (igw_control_plane_proxies_connected)', legend: '{{instance}}' }] },
          { title: 'Config version: head vs proxies', type: 'timeseries', w: 8, description: 'A proxy below the head for long: it NACKed or lost its stream (IgwConfigVersionSkew).', targets: [{ expr: 'max(igw_control_plane_config_head_version)', legend: 'head' }, { expr: 'igw_config_version', legend: '{{instance}}' }] },
          { title: 'Versions committed per hour', type: 'timeseries', w: 8, targets: [{ expr: 'sum(increase(igw_control_plane_config_commits_total[1h]))', legend: 'committed' }] },
          { title: 'Snapshot pushes and answers', type: 'timeseries', unit: 'ops', w: 12, targets: [{ expr: `sum(rate(igw_control_plane_snapshot_pushes_total[${R}]))`, legend: 'pushed' }, { expr: `sum by (result) (rate(igw_control_plane_acks_total[${R}]))`, legend: '{{result}}' }] },
          { title: 'Audit entries by action, per hour', type: 'timeseries', w: 12, targets: [{ expr: 'sum by (action) (increase(igw_control_plane_audit_appends_total[1h]))', legend: '{{action}}' }] },
          { title: 'Config streams: unread bytes, stalled streams closed per hour', type: 'timeseries', w: 12, targets: [{ expr: 'sum by (instance) (igw_control_plane_stream_buffered_bytes)', legend: 'unread bytes {{instance}}' }, { expr: 'sum by (reason) (increase(igw_control_plane_stream_drops_total[1h]))', legend: 'closed: {{reason}}' }, { expr: 'sum(increase(igw_control_plane_stream_digest_mismatches_total[1h]))', legend: 'proxies on another document at their version' }] },
          { title: 'GraphQL admin: refused by limit, unexpected errors, per hour', type: 'timeseries', w: 12, targets: [{ expr: 'sum by (limit) (increase(igw_control_plane_graphql_refusals_total[1h]))', legend: 'refused: {{limit}}' }, { expr: 'sum(increase(igw_control_plane_graphql_unexpected_errors_total[1h]))', legend: 'unexpected errors' }] },
        ],
      },
      {
        row: 'Signed plugins (stored, not executed)',
        panels: [
          { title: 'Uploads refused without a trusted signature, 24 h (alert at any)', type: 'stat', w: 8, targets: [{ expr: 'sum(increase(igw_plugin_upload_rejections_total{reason=~"unsigned|bad_signature|untrusted_publisher"}[24h]))', legend: 'refused' }], thresholds: [{ color: 'green', value: null }, { color: 'red', value: 1 }] },
          { title: 'Uploads refused by reason, per hour', type: 'timeseries', w: 8, targets: [{ expr: 'sum by (reason) (increase(igw_plugin_upload_rejections_total[1h]))', legend: '{{reason}}' }] },
          { title: 'Uploads accepted by publisher, 24 h', type: 'bargauge', w: 8, targets: [{ expr: 'sum by (publisher) (increase(igw_plugin_uploads_total[24h]))', legend: '{{publisher}}' }] },
        ],
      },
    ],
  },
]

export function renderDashboards(): Map<string, string> {
  return new Map(dashboards.map((d) => [`${d.uid}.json`, `${JSON.stringify(build(d), null, 2)}\n`]))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = new URL('.', import.meta.url)
  const check = process.argv.includes('--check')
  let stale = 0
  for (const [file, text] of renderDashboards()) {
    const target = new URL(file, dir)
    let current = ''
    try {
      current = readFileSync(target, 'utf8')
    } catch {}
    if (current === text) continue
    if (check) {
      console.error(`${file} is stale: run node deploy/observability/dashboards/build.ts`)
      stale++
    } else writeFileSync(target, text)
  }
  if (stale) process.exit(1)
}
