// The config document: the contract between the control plane and every proxy. This file is
// the single source of truth; config/schema.json is generated from it (`npm run schema`).
import { z } from 'zod'
import { DEFAULT_TIER, defaultReadinessUpstreams } from './defaults.ts'
import { checkDlpReferences, dlpConfig } from './dlp.ts'
import { filterEntry } from './filters/index.ts'
import { subscriptionsConfig } from './subscriptions.ts'
import { persistedDocumentsConfig } from './persisted-documents.ts'
import { checkQuotaReferences, quotasConfig } from './quotas.ts'
import {
  byteSize,
  durationMs,
  identifier,
  isValidHost,
  listenAddress,
  listenAddressesOverlap,
  originUrl,
  parsedParts,
  splitListenAddress,
  tenantId,
  tierName,
  timeZone,
} from './primitives.ts'

const WORKERS_ERROR = 'expected "auto" or a whole number of worker threads from 1 to 256'

export const upstreamConfig = z.strictObject({
  url: originUrl,
  /** Upper bound of keep-alive connections this proxy (per worker thread) opens to it. */
  connections: z.int().min(1).max(10_000).default(128),
  /** Requests in flight per connection; 1 is plain keep-alive, >1 is HTTP/1.1 pipelining. */
  pipelining: z.int().min(1).max(64).default(1),
  connectTimeoutMs: durationMs.default(2_000),
  /** Idle time after which a pooled connection is closed; keep it below the backend's own. */
  keepAliveTimeoutMs: durationMs.default(4_000),
  healthCheck: z
    .strictObject({
      /** Probed: `igw_upstream_healthy`, listed by /readyz and counted as `admin.readiness.upstreams` says. */
      enabled: z.boolean().default(true),
      /** HTTP GET path to probe; without it a TCP connect is the probe. */
      path: z.string().startsWith('/').optional(),
      intervalMs: durationMs.min(100).default(5_000),
      timeoutMs: durationMs.min(10).default(1_000),
    })
    .prefault({}),
})
export type UpstreamConfig = z.infer<typeof upstreamConfig>

const hostPattern = z
  .string()
  .toLowerCase()
  .regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d+)?$/, {
    error: 'expected a host name such as "api.example.com" or "*.example.com"',
  })

export const routeConfig = z.strictObject({
  name: identifier,
  match: z
    .strictObject({
      /** Exact host or "*.suffix"; absent matches any host. Ingress mode routes on it. */
      host: hostPattern.optional(),
      pathPrefix: z.string().startsWith('/', { error: 'expected a path starting with "/"' }).default('/'),
    })
    .prefault({}),
  /** A name under `upstreams:` or an origin URL. */
  upstream: z
    .string()
    .min(1)
    .superRefine((v, ctx) => {
      if (!looksLikeUrl(v)) return
      const parsed = originUrl.safeParse(v)
      if (!parsed.success) ctx.addIssue({ code: 'custom', message: parsed.error.issues[0]?.message ?? 'expected URL', input: v })
    }),
  /**
   * graphql: POST bodies are read (bounded by maxBodyBytes) and parsed once for the filters,
   * malformed JSON is refused with 400. http: bodies stream through untouched.
   */
  type: z.enum(['graphql', 'http']).default('graphql'),
  /**
   * Host header toward the upstream; absent keeps the client's Host. A host[:port], as the proxy
   * demands of clients' Host headers: any text was sent as it was (`https://api.example.com`, a
   * URL where the host was meant, reached the backend as its Host).
   */
  hostRewrite: z
    .string()
    .refine(isHostHeader, { error: 'expected a host[:port] for the Host header, such as "api.example.com" or "api.example.com:8443" (no scheme, path or spaces)' })
    .optional(),
  maxBodyBytes: byteSize.default(1024 * 1024),
  /**
   * Query batching (a JSON array of GraphQL requests in one POST), off by default as in Apollo
   * Router and Hive Gateway: filters see a batch only as a whole (cost = its number of
   * operations; the cache drops the route's entries; DLP inspects the whole response).
   */
  batching: z
    .strictObject({
      enabled: z.boolean().default(false),
      maxOperations: z.int().min(1).max(1000).default(32),
    })
    .prefault({}),
  timeouts: z
    .strictObject({
      /** Waiting for the upstream's response headers (after connect). 0 disables. */
      headersMs: durationMs.default(30_000),
      /** Longest silence between two response body chunks. 0 disables. */
      bodyIdleMs: durationMs.default(30_000),
      /** The whole exchange, headers and body. 0 disables (long exports, SSE). */
      totalMs: durationMs.default(60_000),
    })
    .prefault({}),
  websocket: z
    .strictObject({
      enabled: z.boolean().default(true),
      /**
       * passthrough: frames are relayed to the upstream as they are. terminate: the gateway speaks
       * graphql-transport-ws / graphql-ws / igw-topics itself (shared upstream subscriptions,
       * replay cursors, QoS tiers; see `subscriptions:`).
       */
      mode: z.enum(['passthrough', 'terminate']).default('passthrough'),
      /** Bytes queued toward one side before the other side stops being read. */
      maxBufferedBytes: byteSize.default(1024 * 1024),
      /** At least 1: ws reads a maxPayload of 0 as no limit at all, so 0 took any message whole into memory. */
      maxMessageBytes: byteSize.refine((n) => n > 0, { error: 'expected at least 1 byte (0 would be no limit: messages of any size buffered whole)' }).default(16 * 1024 * 1024),
      /**
       * Passthrough: a connection with no bytes moving either way (a message arriving in pieces
       * counts; checked at this interval, so the close comes one to two timeouts after the last byte)
       * is closed with 1001 on both sides, as Envoy's stream idle timeout and nginx's
       * proxy_read_timeout do. 0 (the default) disables: a quiet subscription is normal, and TCP
       * keepalive (on for both sockets) already finds peers that vanished.
       */
      idleTimeoutMs: durationMs.default(0),
      /**
       * Passthrough: offer permessage-deflate (RFC 7692) to clients. The bridge reads frames on both
       * sides, so a client's offer is not relayed as Envoy and nginx relay it; with this on, the
       * client side is compressed (messages of 1 KiB and more) and the backend side stays plain.
       * maxMessageBytes holds for the inflated size (1009 over it). Costs zlib memory per
       * connection and CPU: off by default.
       */
      perMessageDeflate: z.boolean().default(false),
    })
    .prefault({}),
  /** Ordered filter chain: request phase in this order, response phase in reverse. */
  filters: z.array(filterEntry).default([{ name: 'request-id', failMode: 'closed', header: 'x-request-id', trustIncoming: true, echo: true }]),
})
export type RouteConfig = z.infer<typeof routeConfig>

export const tenantConfig = z.strictObject({
  displayName: z.string().optional(),
  tier: tierName.default(DEFAULT_TIER),
  /** Daily quotas reset at midnight in this zone. */
  timezone: timeZone.default('UTC'),
})
export type TenantConfig = z.infer<typeof tenantConfig>

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

export const gatewayConfigObject = z.strictObject({
  /** sidecar: one upstream next to one service. ingress: many routes by host and path. */
  mode: z.enum(['sidecar', 'ingress']).default('sidecar'),
  listen: listenAddress.prefault(':8080'),
  admin: z
    .strictObject({
      listen: listenAddress.prefault(':9901'),
      readiness: z
        .strictObject({
          /**
           * What /readyz asks of the health-checked upstreams: all of them reachable, any one of
           * them, or none (readiness is the proxy's own: workers listening, not draining; the
           * body still lists each upstream). Absent: "all" in sidecar mode (the pod is its one
           * app), "none" in ingress mode: one dead backend must not take every gateway pod out
           * of its Service and every other route down with it (Envoy and Apollo Router do not
           * tie readiness to upstream health either). Reloadable.
           */
          upstreams: z.enum(['all', 'any', 'none']).optional(),
        })
        .prefault({}),
    })
    .prefault({}),
  /** Worker threads, each with its own listener on the same port; "auto" = available cores. */
  // The range's own words too: zod's "Too small: expected number to be >=1" named neither the unit nor "auto".
  workers: z.union([z.literal('auto'), z.int().min(1, { error: WORKERS_ERROR }).max(256, { error: WORKERS_ERROR })], { error: WORKERS_ERROR }).default('auto'),
  workerHeap: z
    .strictObject({
      /**
       * V8 young generation per worker thread (MB): three semi-spaces, a third each rounded up to
       * a power of two (24 = 3 × 8 exactly). Scavenges on small requests cost ~2.7× less than
       * at 6 (decision 0004); streaming RSS stays bounded by streamedMbPerGc.
       */
      youngGenerationMb: z.int().min(1).max(1024).default(24),
      /**
       * A worker runs a young-generation GC after relaying this many MB of bodies (both ways), so
       * the dead read buffers of a long stream are freed at a bounded pace (0 = leave it to V8).
       */
      streamedMbPerGc: z.int().min(0).max(4096).default(8),
      /** Old-generation cap per worker thread (MB); absent = V8's default. */
      maxOldGenerationMb: z.int().min(16).optional(),
    })
    .prefault({}),
  workerWatchdog: z
    .strictObject({
      /**
       * A worker thread whose event loop has not turned for this long (a runaway regular
       * expression, a pathological input) is terminated and restarted; every request on it was
       * stuck anyway. 0 disables. Like Envoy's watchdog kill_timeout.
       */
      killAfterMs: durationMs.default(10_000),
    })
    .prefault({}),
  listener: z
    .strictObject({
      /** Keep this above the idle timeout of whatever load balancer sits in front. */
      keepAliveTimeoutMs: durationMs.default(65_000),
      /** Time a client has to send the request headers (slowloris guard). */
      headersTimeoutMs: durationMs.min(1).default(10_000),
      maxHeaderBytes: z.int().min(1024).max(1024 * 1024).default(16 * 1024),
      /**
       * Request paths are normalized before routing and forwarded normalized, as Envoy's
       * normalize_path: escapes of unreserved characters decoded, `.`/`..` segments resolved
       * (RFC 3986), so `/public/../admin` is routed as `/admin`, not by the `/public` prefix. A raw
       * `\` is read as `/` first, as WHATWG URL parsers (graphql-yoga, Hono, Node's URL) read it.
       */
      normalizePath: z.boolean().default(true),
      /** `//` → `/` before routing (Envoy's merge_slashes). */
      mergeSlashes: z.boolean().default(false),
      /** `%2F` / `%5C` in a path: kept as they are, refused with 400, or decoded (both to `/` when normalizing). */
      escapedSlashes: z.enum(['keep', 'reject', 'unescape']).default('keep'),
    })
    .prefault({}),
  forwarded: z
    .strictObject({
      /**
       * true: keep and append to incoming X-Forwarded-* (behind a trusted load balancer).
       * false: the gateway is the edge; incoming X-Forwarded-For/Proto/Host are replaced and a
       * client's Forwarded, X-Real-IP and other X-Forwarded-* are removed.
       */
      trustIncoming: z.boolean().default(true),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: logLevel.default('info'),
      access: z
        .strictObject({
          enabled: z.boolean().default(true),
          /** Fraction of successful requests logged; errors (status >= 500) are always logged. */
          sampleRate: z.number().min(0).max(1).default(1),
        })
        .prefault({}),
      /**
       * Log output waiting for a slow or stuck stdout (an unread pipe) is held up to this size;
       * beyond it lines are dropped and counted (igw_log_dropped_bytes_total) instead of
       * growing the process until it is OOM-killed. 0: unbounded. Takes a restart.
       */
      maxBufferedBytes: byteSize.default(16 * 1024 * 1024),
    })
    .prefault({}),
  shutdown: z
    .strictObject({
      /**
       * In-flight requests get this long to finish after SIGTERM; then connections are cut. At
       * most a day: the supervisor's own deadline runs 2 s past it, and one past a timer's
       * bound fired at once, stopping the workers with their requests.
       */
      drainTimeoutMs: z.int({ error: 'expected a whole number of milliseconds' }).min(0).max(86_400_000, { error: 'expected at most 86400000 milliseconds (24 hours)' }).default(10_000),
      /**
       * After SIGTERM, keep serving normally this long with /readyz failing, then drain: a load
       * balancer that follows /readyz stops sending first (Envoy's drain time, a preStop sleep
       * in Kubernetes). 0: drain at once.
       */
      delayMs: durationMs.default(0),
      /**
       * Idle keep-alive connections stay open this long into the drain (at most a quarter of
       * drainTimeoutMs), so a request already on its way on one is answered with `Connection:
       * close` rather than reset (Envoy's drain_timeout). 0: close them at once.
       */
      idleGraceMs: durationMs.default(1_000),
    })
    .prefault({}),
  redis: z
    .strictObject({
      // ioredis reads a URL's query parameters as client options that override igw's own
      // (`?enableOfflineQueue=1` undid "fail fast while Redis is down"), and takes a path that is
      // no number (`/abc`) as db 0: refused here, naming them.
      url: z
        // abort: the refinements parse the URL; after a failed .url() they threw ("Invalid URL", a
        // stack trace and exit 1 for `--redis notredis`) instead of reporting the path.
        .url({ protocol: /^rediss?$/, hostname: /./, error: 'expected a redis:// or rediss:// URL with a host', abort: true })
        .refine((u) => !u.includes('?'), { error: 'query parameters are not taken (ioredis would read them as client options over igw\'s own); write the URL as redis[s]://[user:password@]host:port[/db]' })
        .refine((u) => /^\/?(\d{1,5})?$/.test(new URL(u).pathname), { error: 'the path must be a database number (redis://host:6379/2), or nothing' }),
      keyPrefix: z.string().default('igw:'),
    })
    .optional(),
  /** Named upstreams. Validation adds routes' inline URLs here, named by the URL itself. */
  upstreams: z.record(z.union([identifier, originUrl], { error: 'expected an upstream name of letters, digits, "_", "." or "-"' }), upstreamConfig).default({}),
  routes: z.array(routeConfig).min(1, { error: 'expected at least one route' }),
  tenants: z.record(tenantId, tenantConfig).default({}),
  /** Subscriptions the gateway terminates (routes with websocket.mode: terminate). */
  subscriptions: subscriptionsConfig.prefault({}),
  /** Persisted-documents manifest: id → document + per-id policy (persisted and cache filters). */
  persistedDocuments: persistedDocumentsConfig.prefault({}),
  /** Cost controls per tenant and kind (quota filter): buckets, daily quotas, budgets, QoS, events. */
  quotas: quotasConfig.prefault({}),
  /** DLP on exports: presets, per-tenant preset, rule pack, keyring location, export policy (dlp filter). */
  dlp: dlpConfig.prefault({}),
})

/**
 * Cross-field rules zod cannot express per field; each names the exact path. They run on a
 * document with problems in its fields too, reading only the parts that parsed (see parsedParts).
 */
const checkedConfig = gatewayConfigObject.superRefine(
  (cfg, ctx) => {
    const parsed = parsedParts(ctx.issues)
    const seen = new Set<string>()
    const usedUpstreams = new Set<string>()
    const routes = parsed(['routes']) ? cfg.routes : []
    routes.forEach((route, i) => {
      const at = (...path: PropertyKey[]) => parsed(['routes', i, ...path])
      if (at('name')) {
        if (seen.has(route.name)) {
          ctx.addIssue({ code: 'custom', path: ['routes', i, 'name'], message: `duplicate route name "${route.name}"` })
        }
        seen.add(route.name)
      }
      if (!at('upstream')) {
        // reported as it is
      } else if (looksLikeUrl(route.upstream)) {
        usedUpstreams.add(route.upstream)
      } else if (!parsed(['upstreams', route.upstream])) {
        // the entry it names has a problem of its own (an invalid name, or no map of upstreams)
      } else if (!Object.hasOwn(cfg.upstreams, route.upstream)) {
        const known = Object.keys(cfg.upstreams)
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'upstream'],
          message: `expected URL or an upstream name${known.length ? ` (${known.join(', ')})` : ''}`,
          input: route.upstream,
        })
      } else if (parsed(['upstreams', route.upstream, 'url'])) {
        usedUpstreams.add(cfg.upstreams[route.upstream]!.url)
      }
      const names = new Set<string>()
      const filters = at('filters') ? route.filters : []
      filters.forEach((f, j) => {
        if (!at('filters', j, 'name')) return
        if (names.has(f.name)) {
          ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', j, 'name'], message: `filter "${f.name}" appears twice in this chain` })
        }
        names.add(f.name)
        // Anonymous and unknown-tenant traffic went on as a tenant no config lists: its quotas,
        // tier and DLP preset the defaults, under a typo of the one meant. (allowUnlisted admits
        // unlisted ids anyway.)
        if (
          f.name === 'tenant' &&
          f.defaultTenant !== undefined &&
          at('filters', j, 'defaultTenant') &&
          at('filters', j, 'allowUnlisted') &&
          !f.allowUnlisted &&
          parsed(['tenants', f.defaultTenant]) &&
          !Object.hasOwn(cfg.tenants, f.defaultTenant)
        ) {
          const known = Object.keys(cfg.tenants)
          ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', j, 'defaultTenant'], message: `expected a tenant listed under tenants${known.length ? ` (${known.slice(0, 10).join(', ')}${known.length > 10 ? ', …' : ''})` : ' (none is)'}, or allowUnlisted: true`, input: f.defaultTenant })
        }
      })
      // The cache filter refuses these chains when it is built: checked here too, so `igw config
      // validate` and the control plane refuse them naming the path, instead of a proxy exiting 1
      // at start (or NACKing a pushed version and retrying it as if a file were missing).
      const chain = filters.map((f, j) => (at('filters', j, 'name') ? f.name : undefined))
      const c = chain.indexOf('cache')
      const t = chain.indexOf('tenant')
      const cache = c === -1 ? undefined : filters[c]
      if (cache?.name === 'cache' && t > c) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', t], message: `a tenant filter runs after cache (routes[${i}].filters[${c}]): hits would be served without its token check, and entries shared across tenants; put tenant before cache` })
      } else if (cache?.name === 'cache' && t === -1 && at('filters', c, 'requireTenant') && cache.requireTenant) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', c, 'requireTenant'], message: 'no tenant filter runs before cache on this route (entries are keyed by tenant): add one before it, or set requireTenant: false for a single-tenant route' })
      }
    })
    // Both on one port: the worker threads listen with reusePort, and the admin listener's
    // EADDRINUSE then read "another process listens there" (exit 69) of the proxy's own listener.
    if (parsed(['listen']) && parsed(['admin', 'listen']) && listenAddressesOverlap(splitListenAddress(cfg.listen), splitListenAddress(cfg.admin.listen))) {
      ctx.addIssue({ code: 'custom', path: ['admin', 'listen'], message: `takes the port of listen (${cfg.listen}): give the admin port another one`, input: cfg.admin.listen })
    }
    checkQuotaReferences(cfg, ctx, parsed)
    checkDlpReferences(cfg, ctx, parsed)
    if (parsed(['mode']) && cfg.mode === 'sidecar' && usedUpstreams.size > 1) {
      ctx.addIssue({ code: 'custom', path: ['mode'], message: 'sidecar mode fronts one upstream; use mode: ingress for several' })
    }
  },
  { when: () => true },
)

/**
 * The validated document, normalized: a route's inline upstream URL becomes an entry of
 * `upstreams` named by the URL, with every default applied, so runtime code (worker threads,
 * which never load zod) resolves every route by name.
 */
export const gatewayConfig = checkedConfig.transform((cfg) => {
  let upstreams = cfg.upstreams
  for (const route of cfg.routes) {
    if (looksLikeUrl(route.upstream) && !Object.hasOwn(upstreams, route.upstream)) {
      upstreams = { ...upstreams, [route.upstream]: upstreamConfig.parse({ url: route.upstream }) }
    }
  }
  // The readiness policy's default follows the mode (see admin.readiness.upstreams).
  const readiness = cfg.admin.readiness.upstreams ?? defaultReadinessUpstreams(cfg.mode)
  const admin = readiness === cfg.admin.readiness.upstreams ? cfg.admin : { ...cfg.admin, readiness: { ...cfg.admin.readiness, upstreams: readiness } }
  return upstreams === cfg.upstreams && admin === cfg.admin ? cfg : { ...cfg, upstreams, admin }
})

export type GatewayConfig = z.infer<typeof gatewayConfig>
export type GatewayConfigInput = z.input<typeof gatewayConfig>

/** A Host header value: a non-empty host[:port] as RFC 3986 spells it, the port at most 65535. */
function isHostHeader(v: string): boolean {
  const port = /^(?:\[[^\]]*\]|[^:]+)(?::(\d{1,5}))?$/.exec(v)
  return port !== null && isValidHost(v) && (port[1] === undefined || Number(port[1]) <= 65535)
}

export function looksLikeUrl(s: string): boolean {
  return s.includes('://') || s.includes(':/')
}

export { resolveRouteUpstream } from './resolve.ts'
