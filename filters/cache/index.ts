// Read-through response cache for GraphQL queries with write-through invalidation.
// Request phase: key → L1 (this worker's LRU) → [L2 Redis] → single-flight → upstream.
// Response phase: a miss's body streams to the client through a pass-through Transform that
// keeps a copy (up to maxEntryBytes) and stores it when the response ended well; a mutation's
// body is read the same way for the entities it touched, whose tags are invalidated (in shared
// memory, synchronously for every worker; through Redis for other proxies) before the
// mutation's response ends: read-your-writes.
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream'
import type { Counter } from 'prom-client'
import type { CacheFilterConfig } from '../../config/filters/index.ts'
import { applyAddedHeaders, errorReply, LogWindow, oncePer, type Decision, type Filter, type FilterDeps, type FilterModule, type GraphQLRequest, type LocalReply, type RequestContext, type ResponseInfo } from '../../proxy/filter.ts'
import { claimAt as sharedClaimAt } from '../../proxy/claims.ts'
import { counter, gauge } from '../../proxy/metrics.ts'
import { siteOf } from '../../proxy/router.ts'
import { isJsonType, staleLimits, storeDecision } from './cache-control.ts'
import { acceptClass, admittedScopes, cacheKey, hasInexactNumber, normalizedDocumentHash, requestTarget, tokenScopes, varyNamesPart } from './cache-key.ts'
import { collectEntityTags, entityKeys, rootFieldsOf, unidentifiedRootTypes, withTypenames, type EntityKeys } from './entity-tags.ts'
import { onRemoteInvalidation, RedisLayer, type L2Meta } from './redis-layer.ts'
import { fetchForRevalidation } from './revalidate.ts'
import { ABANDONED, acquireRouteCache, type CacheEntry, type RouteCache } from './route-cache.ts'
import { CACHE_SHARED_BYTES, CacheShared } from './shared-state.ts'
import { sseField } from '../../proxy/sse.ts'

const kState = Symbol('igw.cache')
/**
 * The upstream's headers a hit is served with. CORS grants are among them: a browser refuses a
 * cross-origin hit without its Access-Control-Allow-Origin. A grant the upstream made for one
 * Origin is stored only when its `Vary: Origin` is honoured (origin in vary.headers), else the
 * response is not stored at all (cache-control.ts varyIsKeyed). Expires is the freshness of an
 * upstream that sends no Cache-Control: without it on hits, a CDN or browser in front applied its
 * own default TTL (or a heuristic from Last-Modified) to them. Date is the upstream's (RFC 9110
 * 6.6.1, as Varnish serves it), the one the hit's Age and Expires count from: a hit was sent a
 * new Date beside its Age, so a browser or CDN reckoned its lifetime as Expires less that Date
 * and then took the Age off again (RFC 9111 4.2): an entry half its life old reached them expired.
 */
const STORED_HEADERS = ['content-type', 'cache-control', 'expires', 'date', 'content-language', 'etag', 'last-modified', 'vary', 'access-control-allow-origin', 'access-control-allow-credentials', 'access-control-expose-headers']
/** How long a finished fill keeps late misses in other workers waiting for its broadcast. */
const DONE_GRACE_MS = 250
/**
 * Filters that may follow `cache` on a route without changing response bodies. A background
 * refresh (stale-while-revalidate, refresh-ahead) fetches from the upstream directly and stores
 * what it gets, so the response phase of any other filter after the cache (DLP masking an
 * export, say) would be skipped and the raw body served from the cache.
 */
const BODY_NEUTRAL_FILTERS = new Set(['request-id', 'tenant', 'persisted', 'quota', 'cache', 'subscriptions'])
/** Local replies that mean "the upstream failed" (stale-if-error); any other is a decision to keep. */
const UPSTREAM_FAILURES = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT'])
const RESULTS = ['hit', 'miss', 'stale', 'bypass', 'coalesced'] as const
type Result = (typeof RESULTS)[number]

interface MissState {
  kind: 'miss'
  key: string
  /** Invalidation sequence when the upstream request started. */
  seq: number
  /** Redis's sequence when the L2 lookup ran (undefined: do not store in L2). */
  l2Seq: number | undefined
  ttlSeconds: number
  /** Tags known before the response: per-id cacheTags, Query.<root field>, the route tag. */
  tags: string[]
  /** The document's aliases of id / __typename, for the response's entity tags. */
  keys: EntityKeys | undefined
  statSlot: number
  /** This request leads the fill (local waiters wait for it). */
  leader: boolean
  /** It also holds the process-wide slot (other workers wait for it). */
  sabSlot: number
  sabFp: number
  /** An expired entry still inside its stale-if-error window. */
  fallback: CacheEntry | undefined
  /**
   * The lookup is yet to be counted: with a fallback, whether it was a miss or a stale answer
   * is known only once the upstream answered (or failed). The persisted id it counts under.
   */
  uncounted: { pid: string | undefined } | undefined
  settled: boolean
  /** Its response phase began (the upstream answered, or failed). */
  responded: boolean
}

interface MutationState {
  kind: 'mutation'
  tags: string[]
  keys: EntityKeys | undefined
}

/** A batch (a JSON array) on a GraphQL route: its operations are not visible here. */
interface BatchState {
  kind: 'batch'
}
const BATCH: BatchState = { kind: 'batch' }

interface Policy {
  /**
   * The key's operation part: the id and a digest of its document. A reload that changes the
   * document under the same id keeps the route's entries (same cache settings) and Redis's L2:
   * the old document's results must not answer the new one.
   */
  keyPart: string
  ttlSeconds: number | undefined
  tags: readonly string[]
  statSlot: number
}

function noop(): void {}

function mutationOverGet(): LocalReply {
  return errorReply('METHOD_NOT_ALLOWED', 'mutations cannot be sent with GET; use POST', undefined, { allow: 'POST' })
}
const NONE: never[] = []

/** Remote invalidation messages this thread has counted (or left to the counting thread). */
const countedRemote = new WeakSet<object>()

/** The process's hit ratios per persisted id, read from shared memory at scrape time. */
let ratioSource: { shared: CacheShared; ids: Map<string, number> } | undefined

class CacheFilter implements Filter {
  readonly name = 'cache'
  readonly cfg: CacheFilterConfig
  readonly shared: CacheShared
  readonly rc: RouteCache
  readonly #route: string
  readonly #routeTag: string
  readonly #policies = new Map<string, Policy>()
  readonly #multiWorker: boolean
  readonly #privateHeaders: string[]
  /** Where the route's tenant filter reads its bearer token (authorization unless it says otherwise). */
  readonly #tokenHeader: string
  readonly #allowedScopes: Set<string>
  readonly #l2: RedisLayer | undefined
  readonly #invalidator: RedisLayer | undefined
  readonly #unsubscribe: (() => void) | undefined
  readonly #results: Record<Result, { inc(): void }>
  readonly #refreshes: Record<'ahead' | 'stale', { inc(): void }>
  readonly #refreshAheadMs: number
  /** Background refreshes are safe: no filter after the cache transforms response bodies. */
  readonly #backgroundRefresh: boolean
  readonly #byId: Counter<'persisted_id' | 'result'>
  readonly #notStoredTotal: Counter<'reason'>
  readonly #invalidations: Counter<'origin'>
  readonly #redisErrors: Counter<'op'>
  readonly #log: FilterDeps['logger']
  /**
   * Process-wide single-flight slots are claimed per route-cache generation (route + settings),
   * not per key alone: fills are handed over on that generation's BroadcastChannel, so a
   * follower under other settings (a reload changed maxBytes or vary while a fill ran under the
   * old ones) would wait out the leader's whole lease for a message it never hears.
   */
  readonly #flightPrefix: string
  /** The vary header names and claim paths as a key part (cache-key.ts varyNamesPart). */
  readonly #varyNames: string
  /**
   * The route forwards the client's Host (no hostRewrite): a multi-site backend (virtual hosts)
   * answers per Host, so the Host joins the key (one site's entries never answer another),
   * whatever the route matches on: a route without match.host takes every Host.
   */
  readonly #keyHost: boolean
  /**
   * forwarded.trustIncoming: how a background refresh sends X-Forwarded-* (as the proxy does);
   * a client's X-Forwarded-Host is then relayed, and keyed (backends build their links from it).
   */
  readonly #trustForwarded: boolean
  /** vary.headers plus, when the tenant filter runs first, its forwardHeader (see #keyedHeaders). */
  readonly #tenantKeyed: readonly string[]
  /**
   * APQ hashes whose document this filter saw (a registration: hash and document, the hash
   * checked), by operation type. A later hash-only POST of a known query is then let through as
   * before; only a hash it cannot type (registered through another thread, before a restart) is
   * read as a possible mutation (#unknownOperation).
   */
  readonly #apqTypes = new LRUCache<string, string>({ max: 10_000 })

  constructor(cfg: CacheFilterConfig, deps: FilterDeps) {
    this.cfg = cfg
    this.#route = deps.routeName
    this.#routeTag = `route:${deps.routeName}`
    this.#log = deps.logger
    const route = deps.config.routes.find((r) => r.name === deps.routeName)
    const after = route === undefined ? [] : route.filters.slice(route.filters.findIndex((f) => f.name === 'cache') + 1).map((f) => f.name)
    const transforming = after.filter((n) => !BODY_NEUTRAL_FILTERS.has(n))
    this.#backgroundRefresh = transforming.length === 0
    if (!this.#backgroundRefresh && (cfg.staleWhileRevalidateSeconds > 0 || cfg.refreshAheadSeconds > 0)) {
      deps.logger.warn(
        { route: deps.routeName, after: transforming },
        'cache: staleWhileRevalidateSeconds / refreshAheadSeconds are not applied on this route: a background refresh would skip the response phase of the filters after the cache; expired entries are refreshed by an ordinary miss',
      )
    }
    if (route !== undefined) {
      const names = route.filters.map((f) => f.name)
      const t = names.indexOf('tenant')
      if (cfg.requireTenant && (t === -1 || t > names.indexOf('cache'))) {
        throw new Error('requireTenant: no tenant filter runs before cache on this route (entries are keyed by tenant); add one, or set requireTenant: false for a single-tenant route')
      }
      // Whatever requireTenant says: a hit is answered before a later filter runs, so a tenant
      // filter after the cache never checked its token (one user's stored answer went to a
      // request with no token at all), and the entries were keyed without the tenant.
      if (t > names.indexOf('cache')) {
        throw new Error('a tenant filter runs after cache on this route: hits would be served without its token check, and entries shared across tenants; put tenant before cache')
      }
    }
    this.shared = new CacheShared(deps.shared, deps.workerId)
    this.#multiWorker = deps.config.workers !== 1
    const settingsId = JSON.stringify([cfg.maxBytes, cfg.vary, cfg.authorization, cfg.requireTenant])
    this.rc = acquireRouteCache(`${deps.routeName}:${settingsId}`, cfg.maxBytes, this.shared, this.#multiWorker)
    this.#flightPrefix = `${this.rc.id}\n`
    this.#varyNames = varyNamesPart(cfg.vary)
    this.#trustForwarded = deps.config.forwarded.trustIncoming
    this.#keyHost = route === undefined || route.hostRewrite === undefined
    // A verified token is a private request whichever header carries it: with the tenant
    // filter's jwt.header (x-auth-token, say), that header is private wherever Authorization
    // is (the default), and it is the one authorization.scopes admits.
    const tenantCfg = route?.filters.find((f) => f.name === 'tenant') as { jwt?: { header?: string }; forwardHeader?: string } | undefined
    const fwd = tenantCfg?.forwardHeader ?? 'x-tenant-id'
    const names = route?.filters.map((f) => f.name) ?? []
    const tenantFirst = names.includes('tenant') && names.indexOf('tenant') < names.indexOf('cache')
    this.#tenantKeyed = !tenantFirst || cfg.vary.headers.includes(fwd) ? cfg.vary.headers : [...cfg.vary.headers, fwd]
    this.#tokenHeader = tenantCfg?.jwt?.header ?? 'authorization'
    const listed = cfg.authorization.privateHeaders
    const priv = listed.includes('authorization') && !listed.includes(this.#tokenHeader) ? [...listed, this.#tokenHeader] : listed
    this.#privateHeaders = priv.filter((h) => !cfg.vary.headers.includes(h))
    this.#allowedScopes = new Set(cfg.authorization.scopes)

    let maxTtl = cfg.ttlSeconds
    for (const [id, op] of Object.entries(deps.config.persistedDocuments.operations)) {
      const doc = createHash('sha256').update(op.document).digest('base64url').slice(0, 22)
      this.#policies.set(id, { keyPart: `p:${id}:${doc}`, ttlSeconds: op.cacheTtlSeconds, tags: op.cacheTags, statSlot: this.shared.statSlot(id) })
      if (op.cacheTtlSeconds !== undefined && op.cacheTtlSeconds > maxTtl) maxTtl = op.cacheTtlSeconds
    }
    ratioSource = { shared: this.shared, ids: new Map([...this.#policies].map(([id, p]) => [id, p.statSlot])) }

    const r = deps.registry
    const requests = counter(r, { name: 'igw_cache_requests_total', help: 'Cache lookups by result (hit, miss, stale, bypass, coalesced = waited for a concurrent miss)', labelNames: ['result'] })
    this.#results = Object.fromEntries(RESULTS.map((x) => [x, requests.labels(x)])) as Record<Result, { inc(): void }>
    const refreshes = counter(r, { name: 'igw_cache_refreshes_total', help: 'Background refreshes started, by trigger (ahead: a hit near the end of the TTL; stale: stale-while-revalidate)', labelNames: ['trigger'] })
    this.#refreshes = { ahead: refreshes.labels('ahead'), stale: refreshes.labels('stale') }
    this.#refreshAheadMs = this.#backgroundRefresh ? cfg.refreshAheadSeconds * 1000 : 0
    this.#byId = counter(r, { name: 'igw_cache_persisted_requests_total', help: 'Cache lookups of manifest operations, by persisted id and result', labelNames: ['persisted_id', 'result'] })
    this.#notStoredTotal = counter(r, { name: 'igw_cache_not_stored_total', help: 'Cacheable misses whose response was not stored, by reason', labelNames: ['reason'] })
    this.#invalidations = counter(r, { name: 'igw_cache_invalidations_total', help: 'Tag invalidations applied, by origin (mutation through this proxy, remote proxy)', labelNames: ['origin'] })
    this.#redisErrors = counter(r, { name: 'igw_cache_redis_errors_total', help: 'Cache operations against Redis that failed or timed out (L1 keeps serving)', labelNames: ['op'] })
    gauge(r, {
      name: 'igw_cache_hit_ratio',
      help: 'Share of cache lookups answered from the cache (hit, stale, coalesced) since start, per persisted id; the same process-wide value in every worker',
      labelNames: ['persisted_id'],
      aggregator: 'max',
      collect() {
        this.reset()
        const src = ratioSource
        if (src === undefined) return
        for (const [id, slot] of src.ids) {
          const v = src.shared.hitRatio(slot)
          if (v !== undefined) this.labels(id).set(v)
        }
      },
    })

    const redis = deps.redis
    if (redis !== undefined && (cfg.redis.l2 || cfg.redis.pubsub)) {
      redis.client() // connect now: commands fail fast until it is ready
      const maxLifeMs = (maxTtl + Math.max(cfg.staleWhileRevalidateSeconds, cfg.staleIfErrorSeconds)) * 1000
      const layer = new RedisLayer(redis, cfg.redis.timeoutMs, maxLifeMs, (op, err) => this.#redisError(op, err))
      this.#l2 = cfg.redis.l2 ? layer : undefined
      // Local entries are invalidated once Redis has purged (and again if the purge lands after
      // the wait for it ran out): see invalidate().
      this.#invalidator = new RedisLayer(redis, cfg.invalidation.redisTimeoutMs, maxLifeMs, (op, err) => this.#redisError(op, err), (tags) => void this.shared.invalidate(tags))
      if (cfg.redis.pubsub) {
        this.#unsubscribe = onRemoteInvalidation(
          redis,
          (m) => {
            if (m === undefined) {
              // Re-subscribed after a drop: what other proxies published meanwhile never
              // arrives, so the route's L1 entries go (their purges of L2 did not depend on us).
              this.shared.invalidate([this.#routeTag])
              return
            }
            if (m.o === this.shared.nonce) return
            this.shared.invalidate(m.t)
            // Every cache route of this thread gets the message (one object), and so does every
            // thread: counted once per process, as a mutation through it is.
            if (countedRemote.has(m)) return
            countedRemote.add(m)
            if (this.shared.countsRemote()) this.#invalidations.labels('remote').inc()
          },
          (err) => this.#redisError('subscribe', err),
        )
      }
    }
  }

  /**
   * The request headers the key holds, which a response's Vary may name. With a tenant set by a
   * tenant filter that runs before the cache (only it sets one), its forwardHeader too:
   * it overwrote the header with the tenant the key holds, so a backend's `Vary: X-Tenant-Id`
   * is already honoured by the key. Such responses were never stored (reason `vary`).
   */
  #keyedHeaders(ctx: RequestContext): readonly string[] {
    return ctx.tenant === undefined ? this.cfg.vary.headers : this.#tenantKeyed
  }

  #redisError(op: string, err: unknown): void {
    this.#redisErrors.labels(op).inc()
    if (this.#logRedisNow()) this.#log.warn({ err: { message: (err as Error).message }, op }, 'cache: redis unavailable')
  }
  readonly #logRedisNow = oncePer(5_000)
  readonly #refreshFailures = new LogWindow(5_000)

  #count(result: Result, statSlot: number, persistedId: string | undefined): void {
    this.#results[result].inc()
    if (persistedId === undefined || statSlot === -2) return
    this.#byId.labels(persistedId, result).inc()
    if (result !== 'bypass') this.shared.countLookup(statSlot, result !== 'miss')
  }

  // --- request phase ----------------------------------------------------------------------

  onRequest(ctx: RequestContext): Decision | Promise<Decision> {
    const gql = ctx.graphql
    // A mutation sent over a terminated WebSocket runs upstream like one over HTTP: its result
    // (onSocketResult, the socket's response phase) invalidates what it touched the same way.
    if (ctx.subscription !== undefined && gql !== undefined && gql.operationType === 'mutation') return this.#mutation(ctx, gql, true)
    // Operations on a WebSocket (the subscription hub runs the chain too) have no HTTP response to cache.
    const head = ctx.method === 'HEAD'
    if (gql === undefined || ctx.subscription !== undefined || (ctx.method !== 'POST' && ctx.method !== 'GET' && !head)) {
      // A HEAD carries its operation in the query string, as a GET does (refused below for GETs).
      if (gql !== undefined && ctx.subscription === undefined && gql.method === 'GET' && gql.operationType === 'mutation') return mutationOverGet()
      // A POST on a GraphQL route without a parsed request is a batch (a JSON array): one that
      // may hold a write (a mutation, an operation whose type is unknown) drops the route's
      // entries when it reaches the upstream. One of queries only writes nothing: dropping the
      // route for it emptied the cache for every client each time an app's BatchHttpLink
      // fetched a page.
      if (gql === undefined && ctx.subscription === undefined && ctx.method === 'POST' && ctx.route.type === 'graphql' && this.cfg.invalidation.writeThrough && !queriesOnly(ctx)) {
        ctx.locals.set(kState, BATCH)
      }
      return this.#bypass(ctx)
    }
    const type = gql.operationType
    if (type === 'mutation') {
      // GraphQL over HTTP: never from a GET (a cross-site link would run it with the user's
      // cookies). Refused here too, for routes that have the cache but no persisted filter.
      if (gql.method === 'GET') return mutationOverGet()
      return this.#mutation(ctx, gql)
    }
    const hash = apqHash(gql)
    if (hash !== undefined && type !== undefined && gql.query !== undefined) this.#learnApq(hash, gql, type)
    // A POST with no document (an APQ hash or a documentId no filter before this one resolved;
    // the backend resolves it) runs what the backend has under that name: maybe a mutation.
    // Apollo's link sends a repeated mutation by hash alone; let through unread, what it wrote
    // stayed cached. Handled as a mutation of unknown document, unless the hash is a query this
    // filter saw registered. (A GET cannot write.)
    if (type === undefined && gql.query === undefined && gql.method === 'POST') {
      return hash !== undefined && this.#apqTypes.get(hash) === 'query' ? this.#bypass(ctx) : this.#unknownOperation(ctx)
    }
    if (type !== 'query') return this.#bypass(ctx)
    // A document sent with its APQ hash must reach the backend byte for byte (it checks the
    // document against the hash: "provided sha does not match query"), so no __typename can be
    // added; one that needs them is not cached, its entities could not be tagged.
    if (hash !== undefined && this.cfg.invalidation.injectTypename && withTypenames(gql.document) !== undefined) return this.#bypass(ctx)
    if (this.cfg.requireTenant && ctx.tenant === undefined) return this.#bypass(ctx)
    const scopes = this.#admit(ctx)
    if (scopes === false) return this.#bypass(ctx)
    const pid = gql.persistedId
    const policy = pid !== undefined ? this.#policies.get(pid) : undefined
    const ttl = policy?.ttlSeconds ?? this.cfg.ttlSeconds
    if (ttl === 0) return this.#bypass(ctx, policy)
    // Content negotiation: a stored copy answers only requests that accept its media type; one
    // that takes neither JSON type (an SSE or multipart client) is never answered from here.
    const media = acceptClass(ctx.req.headers.accept)
    if (media === undefined) return this.#bypass(ctx, policy)
    // Variables hold an integer beyond 2^53 (or 1e400): after JSON.parse the key cannot tell it
    // from its neighbours, while the backend reads the exact digits it is sent. Not cached.
    if (hasInexactNumber(gql.variables)) return this.#inexactBypass(ctx, policy, 'variables')
    if (hasInexactNumber(gql.extensions)) return this.#inexactBypass(ctx, policy, 'extensions')
    const vary = this.cfg.vary
    let headers: (string | undefined)[] = NONE
    if (vary.headers.length) {
      headers = []
      for (const h of vary.headers) {
        const v = ctx.req.headers[h]
        headers.push(Array.isArray(v) ? v.join(', ') : v)
      }
    }
    let claims: unknown[] = NONE
    if (vary.claims.length) {
      claims = []
      for (const c of vary.claims) {
        const v = claimAt(ctx.claims, c)
        // A numeric `sub` beyond 2^53 would let two users share per-user entries.
        if (hasInexactNumber(v)) return this.#inexactBypass(ctx, policy, 'claims')
        claims.push(v)
      }
    }
    // What the upstream is asked beside the operation: the path (one route reaches every path
    // of its upstream: /v1/graphql and /v2/graphql answer one query differently), the Host
    // when it is the client's, and the client's X-Forwarded-Host when it is relayed.
    const forwardedHost = this.#trustForwarded ? relayedForwardedHost(ctx.req.rawHeaders) : undefined
    const key = cacheKey({
      route: this.#route,
      target: requestTarget(ctx.url, gql.method === 'GET'),
      host: this.#keyHost ? siteOf(ctx.host) : undefined,
      forwardedHost: forwardedHost === undefined ? undefined : siteOf(forwardedHost),
      operation: policy !== undefined ? policy.keyPart : `d:${normalizedDocumentHash(gql.document)}`,
      operationName: gql.opName,
      tenant: ctx.tenant,
      variables: gql.variables,
      extensions: gql.extensions,
      headers,
      claims,
      scopes: scopes === true ? undefined : scopes,
      varyNames: this.#varyNames,
      media,
    })
    const now = Date.now()
    const e = this.rc.get(key, now)
    if (e !== undefined) {
      if (now < e.freshUntil) {
        // Refresh ahead: renew a hot entry in its last seconds instead of letting it expire into a miss.
        if (this.#refreshAheadMs > 0 && e.freshUntil - now < Math.min(this.#refreshAheadMs, (e.freshUntil - (e.stored ?? e.created)) / 2)) this.#revalidate(ctx, gql, key, ttl, policy, e, 'ahead')
        return this.#reply(ctx, e, now, 'hit', policy)
      }
      if (now < e.staleUntil && this.#backgroundRefresh) {
        this.#revalidate(ctx, gql, key, ttl, policy, e, 'stale')
        return this.#reply(ctx, e, now, 'stale', policy)
      }
    }
    // A HEAD is answered from a stored GET (its head, as nginx and Varnish do: a refresh it
    // starts is a GET), but its own answer has no body to store: a miss goes upstream uncached.
    if (head) return this.#l2 === undefined ? this.#bypass(ctx, policy) : this.#headL2(ctx, gql, key, ttl, policy)
    return this.#miss(ctx, gql, key, ttl, policy, e)
  }

  /** Private requests: false = bypass, true = cacheable, string = cacheable under these scopes. */
  #admit(ctx: RequestContext): string | boolean {
    const h = ctx.req.headers
    let scopes: string | boolean = true
    for (const name of this.#privateHeaders) {
      if (h[name] === undefined) continue
      if (name !== this.#tokenHeader || this.#allowedScopes.size === 0 || ctx.claims === undefined) return false
      const granted = tokenScopes(claimAt(ctx.claims, this.cfg.authorization.scopeClaim))
      const admitted = granted === undefined ? undefined : admittedScopes(granted, this.#allowedScopes)
      if (admitted === undefined) return false
      scopes = admitted
    }
    return scopes
  }

  #bypass(ctx: RequestContext, policy?: Policy): undefined {
    ctx.addResponseHeader('x-cache', 'BYPASS')
    this.#count('bypass', policy?.statSlot ?? -2, policy !== undefined ? ctx.graphql?.persistedId : undefined)
    return undefined
  }

  #inexactBypass(ctx: RequestContext, policy: Policy | undefined, where: 'variables' | 'extensions' | 'claims'): undefined {
    ctx.log.debug({ reason: 'inexact_number', where }, 'cache: bypassed, a number beyond 2^53 cannot be keyed exactly')
    return this.#bypass(ctx, policy)
  }

  #reply(ctx: RequestContext, e: CacheEntry, now: number, result: Result, policy: Policy | undefined): LocalReply {
    ctx.addResponseHeader('x-cache', result === 'stale' ? 'STALE' : 'HIT')
    ctx.addResponseHeader('age', String(Math.max(0, Math.floor((now - e.created) / 1000))))
    this.#count(result, policy?.statSlot ?? -2, policy !== undefined ? ctx.graphql?.persistedId : undefined)
    if ((ctx.method === 'GET' || ctx.method === 'HEAD') && notModified(ctx.req.headers, e.headers)) return { status: 304, headers: notModifiedHeaders(e.headers), body: EMPTY_BODY }
    return { status: e.status, headers: e.headers, body: e.body }
  }

  #miss(ctx: RequestContext, gql: GraphQLRequest, key: string, ttl: number, policy: Policy | undefined, old: CacheEntry | undefined): Decision | Promise<Decision> {
    const st: MissState = {
      kind: 'miss',
      key,
      seq: this.shared.seq(),
      l2Seq: undefined,
      ttlSeconds: ttl,
      tags: this.#queryTags(gql, policy),
      keys: entityKeys(gql.document),
      statSlot: policy?.statSlot ?? -2,
      leader: false,
      sabSlot: -1,
      sabFp: 0,
      fallback: old !== undefined && Date.now() < old.errorUntil ? old : undefined,
      uncounted: undefined,
      settled: false,
      responded: false,
    }
    ctx.locals.set(kState, st)
    const rc = this.rc
    if (this.cfg.singleFlight) {
      if (rc.inFlight(key)) return this.#follow(ctx, gql, st, policy)
      if (this.#multiWorker) {
        const { slot, fp } = this.shared.flightSlot(this.#flightPrefix + key)
        const leaseMs = Math.min(Number.isFinite(ctx.deadline) ? Math.max(1, Math.ceil(ctx.deadline - performance.now())) : 60_000, 120_000) + 50
        const claim = this.shared.claim(slot, fp, leaseMs)
        if (claim === 'follower' || claim === 'done') {
          if (claim === 'done') rc.begin(key, DONE_GRACE_MS)
          else rc.begin(key, this.shared.leaseLeft(slot) + 50, { slot, fp })
          return this.#follow(ctx, gql, st, policy)
        }
        if (claim === 'leader') {
          st.sabSlot = slot
          st.sabFp = fp
        }
      }
      st.leader = true
      rc.begin(key)
      // Over before any response (the client went away, its upstream request with it): the
      // waiters elect a new leader. They all went upstream at once: one impatient client turned
      // a coalesced miss on a hot key into a stampede.
      ctx.addCleanup(() => this.finishFill(st, undefined, !st.responded))
    }
    if (this.#l2 !== undefined) return this.#lookupL2(ctx, gql, st, policy)
    return this.#goUpstream(ctx, gql, st, policy)
  }

  #follow(ctx: RequestContext, gql: GraphQLRequest, st: MissState, policy: Policy | undefined): Promise<Decision> {
    return this.rc.wait(st.key).then((e) => {
      // The leader gave up before it had an answer: coalesce again (one of us leads now).
      if (e === ABANDONED) return this.#miss(ctx, gql, st.key, st.ttlSeconds, policy, st.fallback)
      const now = Date.now()
      // A stale copy handed over (an L2 copy inside its stale-while-revalidate window) is served as STALE.
      if (e !== undefined && this.shared.valid(e.slots, e.seq)) return this.#reply(ctx, e, now, now < e.freshUntil ? 'coalesced' : 'stale', policy)
      // The fill produced nothing to share (not cacheable, failed, timed out): go ourselves,
      // falling back on failure to a stale copy the leader found in L2 while we waited.
      if (st.fallback === undefined) {
        const old = this.rc.get(st.key, now)
        if (old !== undefined && now < old.errorUntil) st.fallback = old
      }
      return this.#goUpstream(ctx, gql, st, policy)
    })
  }

  async #lookupL2(ctx: RequestContext, gql: GraphQLRequest, st: MissState, policy: Policy | undefined): Promise<Decision> {
    const seq = this.shared.seq()
    const r = await this.#l2!.get(st.key)
    if (r === undefined) return this.#goUpstream(ctx, gql, st, policy)
    const m = r.meta
    if (m !== undefined) {
      const now = Date.now()
      if (now < m.f) {
        const entry = this.#fromL2(st.key, m, r.body, seq, st.statSlot)
        if (entry !== undefined) {
          this.rc.set(entry)
          this.finishFill(st, entry)
          return this.#reply(ctx, entry, now, 'hit', policy)
        }
      } else if (now < m.w && this.#backgroundRefresh) {
        // Inside its stale-while-revalidate window (what L2 keeps it for): served stale while
        // one background request refreshes it, as an L1 copy is. A proxy with a cold L1 (a new
        // pod, a restarted one) made every client wait for the upstream instead.
        const entry = this.#fromL2(st.key, m, r.body, seq, st.statSlot)
        if (entry !== undefined) {
          this.rc.set(entry)
          // The waiters take the stale copy; the flight (with its process-wide slot) passes to the refresh.
          st.settled = true
          if (st.leader) {
            this.rc.settle(st.key, entry)
            this.rc.publish(st.key, entry)
          }
          this.#revalidate(ctx, gql, st.key, st.ttlSeconds, policy, entry, 'stale', st.sabSlot === -1 ? undefined : { slot: st.sabSlot, fp: st.sabFp })
          return this.#reply(ctx, entry, now, 'stale', policy)
        }
      } else if (now < m.e && st.fallback === undefined) {
        // Past its freshness but inside its stale-if-error window (what L2 keeps it for): the
        // answer if the upstream fails. Without it a proxy with a cold L1 (a new pod, a
        // restarted one) answered the upstream's failure while the shared copy sat in Redis.
        // Kept in L1 too: the misses waiting for this one (#follow) fall back to it as well.
        st.fallback = this.#fromL2(st.key, m, r.body, seq, st.statSlot)
        if (st.fallback !== undefined) this.rc.set(st.fallback)
      }
    }
    // Absent, or past its freshness (it lingers for stale-if-error / -while-revalidate): this
    // miss's response replaces it. Without the sequence it would not be stored, and every proxy
    // with a cold L1 would go upstream until the stale copy's last window ran out.
    st.l2Seq = r.seq
    return this.#goUpstream(ctx, gql, st, policy)
  }

  /**
   * A HEAD that L1 cannot answer: an L2 copy answers it (and fills L1, as a GET's L2 hit does),
   * so a proxy with a cold L1 does not send it upstream while Redis holds the entry; one inside
   * its stale-while-revalidate window is served STALE while a background GET refreshes it, as
   * an L1 copy is (and as a GET's L2 lookup does). Otherwise it goes upstream uncached: no
   * single-flight, nothing of its own stored in L1 or L2.
   */
  async #headL2(ctx: RequestContext, gql: GraphQLRequest, key: string, ttl: number, policy: Policy | undefined): Promise<Decision> {
    const seq = this.shared.seq()
    const r = await this.#l2!.get(key)
    const m = r?.meta
    const now = Date.now()
    const fresh = m !== undefined && now < m.f
    const usable = fresh || (m !== undefined && now < m.w && this.#backgroundRefresh)
    const entry = usable ? this.#fromL2(key, m, r!.body, seq, policy?.statSlot ?? -2) : undefined
    if (entry === undefined) return this.#bypass(ctx, policy)
    this.rc.set(entry)
    if (fresh) return this.#reply(ctx, entry, now, 'hit', policy)
    this.#revalidate(ctx, gql, key, ttl, policy, entry, 'stale')
    return this.#reply(ctx, entry, now, 'stale', policy)
  }

  /** An L2 copy as an entry of this proxy's, or undefined when an invalidation since `seq` voids it. */
  #fromL2(key: string, m: L2Meta, body: Buffer, seq: number, statSlot: number): CacheEntry | undefined {
    const entry = this.#entry(key, m.h, body, m.c, m.f, m.w, m.e, seq, m.t, statSlot, m.a)
    return this.shared.valid(entry.slots, entry.seq) ? entry : undefined
  }

  #goUpstream(ctx: RequestContext, gql: GraphQLRequest, st: MissState, policy: Policy | undefined): undefined {
    identityBody(ctx)
    unconditional(ctx)
    if (this.cfg.invalidation.injectTypename) {
      const text = withTypenames(gql.document)
      if (text !== undefined) gql.setQuery(text)
    }
    ctx.addResponseHeader('x-cache', 'MISS')
    const pid = policy !== undefined ? gql.persistedId : undefined
    if (st.fallback === undefined) this.#count('miss', st.statSlot, pid)
    else {
      // Served stale if the upstream fails: one lookup, counted once, as what it was answered with.
      st.uncounted = { pid }
      ctx.addCleanup(() => this.#countOnce(st, 'miss'))
    }
    return undefined
  }

  #countOnce(st: MissState, result: 'miss' | 'stale'): void {
    const u = st.uncounted
    if (u === undefined) return
    st.uncounted = undefined
    this.#count(result, st.statSlot, u.pid)
  }

  #queryTags(gql: GraphQLRequest, policy: Policy | undefined): string[] {
    const tags = [this.#routeTag]
    if (policy !== undefined) tags.push(...policy.tags)
    for (const f of rootFieldsOf(gql.document, gql.operationName)) tags.push(`Query.${f}`)
    return tags
  }

  #mutation(ctx: RequestContext, gql: GraphQLRequest, socket = false): undefined {
    const inv = this.cfg.invalidation
    if (!inv.writeThrough) return this.#bypass(ctx)
    const tags: string[] = []
    const policy = gql.persistedId !== undefined ? this.#policies.get(gql.persistedId) : undefined
    if (policy !== undefined) tags.push(...policy.tags)
    for (const f of rootFieldsOf(gql.document, gql.operationName)) {
      const mapped = inv.mutationTags[f]
      if (mapped !== undefined) tags.push(...mapped)
    }
    ctx.locals.set(kState, { kind: 'mutation', tags, keys: entityKeys(gql.document) } satisfies MutationState)
    // Its body is read for the entities it returned. Not over a socket: its result is a message
    // (never compressed), and a header edit there would become the upstream connection's.
    if (!socket) identityBody(ctx)
    // Not into a document sent with its APQ hash (see onRequest): its untyped entities make the
    // result drop the route's entries instead (unidentifiedRootTypes).
    if (inv.injectTypename && apqHash(gql) === undefined) {
      const text = withTypenames(gql.document)
      if (text !== undefined) gql.setQuery(text)
    }
    return this.#bypass(ctx)
  }

  /** Remembers a registration's operation type, once its document is checked against the hash (a client cannot name a mutation's hash a query). */
  #learnApq(hash: string, gql: GraphQLRequest, type: string): void {
    if (this.#apqTypes.get(hash) === type) return
    // docHash: the request's own memoized sha256 of its query (the persisted filter checks with it too).
    if (gql.docHash === hash) this.#apqTypes.set(hash, type)
  }

  /**
   * An operation the cache cannot see: its result is read as a mutation's, so the entities it
   * returns are invalidated (errors beside data: the route's entries). An answer without data
   * (PersistedQueryNotFound, a validation error) ran nothing and drops nothing.
   */
  #unknownOperation(ctx: RequestContext): undefined {
    if (!this.cfg.invalidation.writeThrough) return this.#bypass(ctx)
    ctx.locals.set(kState, { kind: 'mutation', tags: [], keys: undefined } satisfies MutationState)
    identityBody(ctx)
    return this.#bypass(ctx)
  }

  // --- background refresh (stale-while-revalidate, refresh-ahead) ---------------------------

  /** `claimed`: the process-wide flight slot a miss already holds for key, handed to this refresh. */
  #revalidate(ctx: RequestContext, gql: GraphQLRequest, key: string, ttl: number, policy: Policy | undefined, e: CacheEntry, trigger: 'ahead' | 'stale', claimed?: { slot: number; fp: number }): void {
    if (e.revalidating || this.rc.inFlight(key)) {
      if (claimed !== undefined) this.shared.finish(claimed.slot, claimed.fp, false, 0)
      return
    }
    const st: MissState = { kind: 'miss', key, seq: this.shared.seq(), l2Seq: undefined, ttlSeconds: ttl, tags: this.#queryTags(gql, policy), keys: entityKeys(gql.document), statSlot: policy?.statSlot ?? -2, leader: true, sabSlot: -1, sabFp: 0, fallback: undefined, uncounted: undefined, settled: false, responded: true }
    if (claimed !== undefined) {
      st.sabSlot = claimed.slot
      st.sabFp = claimed.fp
    } else if (this.#multiWorker) {
      const { slot, fp } = this.shared.flightSlot(this.#flightPrefix + key)
      if (this.shared.claim(slot, fp, 30_000) !== 'leader') return
      st.sabSlot = slot
      st.sabFp = fp
    }
    e.revalidating = true
    this.#refreshes[trigger].inc()
    this.rc.begin(key)
    identityBody(ctx)
    unconditional(ctx)
    if (this.cfg.invalidation.injectTypename) {
      const text = withTypenames(gql.document)
      if (text !== undefined) gql.setQuery(text)
    }
    // With L2, Redis's sequence is taken before the upstream request starts, so the refreshed
    // entry is written to L2 too (refused there if a purge of one of its tags ran meanwhile):
    // without it the refresh renewed only this process's L1, and every other proxy kept serving
    // the old L2 copy and missed when it expired.
    const l2 = this.#l2
    const l2Seq = l2 === undefined ? undefined : l2.seq().then((s) => void (st.l2Seq = s))
    const refresh = async (): Promise<void> => {
      const r = await fetchForRevalidation(ctx, this.entryLimit(key), this.#trustForwarded, l2Seq)
      // Decided at the head, as a miss is: a stream (multipart @defer, SSE, NDJSON) or an
      // uncacheable answer is dropped unread. Read to its end first, it held the key (its misses
      // waiting on this refresh) for up to the route's whole timeout, or a live stream's life.
      const d = storeDecision(r.status, r.headers, ttl, Date.now(), this.#keyedHeaders(ctx))
      if (d.reason !== undefined) {
        r.discard()
        e.revalidating = false
        this.#notStored(d.reason)
        this.finishFill(st, undefined)
        return
      }
      const body = await r.read()
      e.revalidating = false
      if (body === undefined) {
        this.#notStored('too_large')
        this.finishFill(st, undefined)
        return
      }
      this.fill(st, body, d.ttlSeconds, pickHeaders(r.headers), d.ageSeconds)
    }
    refresh().catch((err: unknown) => {
      e.revalidating = false
      // While the upstream is down every hit on a stale entry tries again: one line per 5 s.
      const held = this.#refreshFailures.take()
      if (held !== undefined) ctx.log.warn({ err: { message: (err as Error).message }, held }, 'cache: background revalidation failed; the stale entry stays')
      this.finishFill(st, undefined)
    })
  }

  // --- response phase ---------------------------------------------------------------------

  onResponse(ctx: RequestContext, res: ResponseInfo): void | Promise<void> {
    const st = ctx.locals.get(kState) as MissState | MutationState | BatchState | undefined
    if (st === undefined) return
    if (st.kind === 'mutation') return this.#mutationResponse(ctx, res, st)
    // A local reply that is not an upstream failure: a filter's decision (quota 429, DLP 403…).
    const decided = res.local && !UPSTREAM_FAILURES.has(ctx.errorCode ?? '')
    if (st.kind === 'batch') {
      // Refused before the upstream (quota, safelist…): nothing ran. Otherwise it may have
      // written anything: the route's entries go before the response does (read-your-writes).
      if (decided) return
      return this.invalidate([this.#routeTag])
    }
    st.responded = true
    // So is a refusal in the response phase (DLP's 403, a filter's fail-closed 500 or missed
    // deadline's 504, all after the upstream answered): igw's own reply, which a stale copy
    // would undo — a fail-closed 500 would then serve the content it withheld.
    if (decided || res.refused) {
      // A decision of a filter after the cache (quota 429, DLP 403…), not an upstream failure:
      // it stands; stale-if-error is no way around it. It says nothing of the key: the waiters
      // elect a new leader rather than all going upstream at once.
      this.#countOnce(st, 'miss')
      this.finishFill(st, undefined, true)
      return
    }
    if (res.local || res.status >= 500) {
      const stale = st.fallback
      if (stale !== undefined && Date.now() < stale.errorUntil && this.shared.valid(stale.slots, stale.seq)) {
        // stale-if-error: the upstream failed, the old answer is better than none.
        res.status = stale.status
        const headers: Record<string, string> = { ...stale.headers }
        const added = ctx.responseHeaders // x-request-id and the like still belong on it
        if (added !== undefined) applyAddedHeaders(headers, added) // (every Set-Cookie a filter added)
        headers['x-cache'] = 'STALE'
        headers.age = String(Math.max(0, Math.floor((Date.now() - stale.created) / 1000)))
        res.headers = headers
        res.body = stale.body
        this.#countOnce(st, 'stale')
        // The waiters coalesced on this upstream request: its failure is theirs. Handed the
        // stale copy, they do not each go upstream in turn (a stampede on a failing backend).
        this.finishFill(st, stale)
        return
      }
      this.#countOnce(st, 'miss')
      this.finishFill(st, undefined)
      return
    }
    this.#countOnce(st, 'miss')
    const d = storeDecision(res.status, res.headers, st.ttlSeconds, Date.now(), this.#keyedHeaders(ctx))
    if (d.reason !== undefined) {
      this.#notStored(d.reason)
      this.finishFill(st, undefined)
      return
    }
    const body = res.body
    if (Buffer.isBuffer(body)) {
      // An earlier response filter (DLP on a small JSON export) already produced the final bytes.
      if (body.length > this.entryLimit(st.key)) {
        this.#notStored('too_large')
        this.finishFill(st, undefined)
      } else this.fill(st, body, d.ttlSeconds, pickHeaders(res.headers), d.ageSeconds)
      return
    }
    res.observeBody(pipeline(body, new FillCapture(this, st, d.ttlSeconds, pickHeaders(res.headers), d.ageSeconds), noop))
  }

  /**
   * A mutation sent over a terminated WebSocket got its result (the hub calls this before the
   * client gets it), or ended without one: the same invalidation as its HTTP response's — the
   * entities in its result and its tags; when it may have run but its result is unknown (the
   * upstream connection was lost, the client stopped it) the route's entries too; refused by
   * the upstream (errors, nothing ran) its own tags only.
   */
  onSocketResult(ctx: RequestContext, result: string | undefined, mayHaveRun: boolean): void | Promise<void> {
    const st = ctx.locals.get(kState) as MissState | MutationState | BatchState | undefined
    if (st === undefined || st.kind !== 'mutation') return
    if (result === undefined) return this.invalidate(mayHaveRun ? [...st.tags, this.#routeTag] : st.tags)
    const tags = new Set(st.tags)
    try {
      // result.length bounds its UTF-8 size from below: a cheap first check before measuring.
      if (result.length > this.cfg.invalidation.maxMutationBodyBytes || Buffer.byteLength(result) > this.cfg.invalidation.maxMutationBodyBytes) tags.add(this.#routeTag)
      else mutationResultTags(JSON.parse(result) as unknown, tags, this.#routeTag, st.keys)
    } catch {
      tags.add(this.#routeTag)
    }
    return this.invalidate(tags)
  }

  #mutationResponse(ctx: RequestContext, res: ResponseInfo, st: MutationState): void | Promise<void> {
    if (res.local || res.refused || res.status !== 200) {
      // The gateway gave up waiting (504) or the upstream failed (5xx): the write may well have
      // been made — a slow mutation usually commits after we stop waiting — and what it touched
      // is unknown, so the route's entries go, as for a body cut short. A refusal by a filter
      // ran nothing; an unreachable upstream most likely neither (and dropping the route then
      // would take every stale-if-error fallback with it): its own tags only, unless the whole
      // request had reached it (a backend that commits and dies, or answers with a broken head).
      // So does a 502 or 503 from upstream (a load balancer with no backend, a backend shedding
      // before it runs).
      // Refused after the upstream answered (DLP's 403, a filter's 500): it ran, and its result,
      // which named what it touched, is gone.
      const mayHaveRun = res.refused
        ? true
        : res.local
        ? ctx.errorCode === 'UPSTREAM_TIMEOUT' || (ctx.errorCode === 'UPSTREAM_UNAVAILABLE' && ctx.upstreamRequestSent)
        : res.status >= 500 && res.status !== 502 && res.status !== 503
      if (mayHaveRun) return this.invalidate([...st.tags, this.routeTag])
      if (st.tags.length) return this.invalidate(st.tags)
      return
    }
    const body = res.body
    const type = res.headers['content-type']
    const contentType = Array.isArray(type) ? type[0] : type
    if (Buffer.isBuffer(body)) {
      const tags = new Set(st.tags)
      if (body.length <= this.cfg.invalidation.maxMutationBodyBytes) readMutationResult(body, contentType, tags, this.routeTag, st.keys)
      else tags.add(this.routeTag)
      return this.invalidate(tags)
    }
    res.observeBody(pipeline(body, new MutationCapture(this, st, contentType), noop))
  }

  #notStored(reason: string): void {
    this.#notStoredTotal.labels(reason).inc()
  }

  #entry(key: string, headers: Record<string, string>, body: Buffer, created: number, fresh: number, stale: number, error: number, seq: number, tags: readonly string[], statSlot: number, stored?: number): CacheEntry {
    return { key, status: 200, headers, body, created, freshUntil: fresh, staleUntil: stale, errorUntil: error, seq, slots: this.shared.slots(tags), statSlot, tags, revalidating: false, stored }
  }

  /** A miss's complete body: store it if it is a clean GraphQL result. */
  fill(st: MissState, body: Buffer, ttlSeconds: number, headers: Record<string, string>, ageSeconds = 0): void {
    let json: unknown
    try {
      json = JSON.parse(body.toString('utf8'))
    } catch {
      this.#notStored('not_json')
      this.finishFill(st, undefined)
      return
    }
    if (json === null || typeof json !== 'object' || 'errors' in json || !('data' in json)) {
      this.#notStored('errors')
      this.finishFill(st, undefined)
      return
    }
    const tags = new Set(st.tags)
    if (!collectEntityTags((json as { data: unknown }).data, tags, true, undefined, st.keys)) {
      // More objects than the walk visits: the entities beyond it would carry no tag, and a
      // mutation of one of them would leave this copy stale.
      this.#notStored('too_large')
      this.finishFill(st, undefined)
      return
    }
    const now = Date.now()
    const fresh = now + ttlSeconds * 1000
    const cfg = this.cfg
    const limits = staleLimits(headers['cache-control'])
    const stale = fresh + (limits === undefined ? cfg.staleWhileRevalidateSeconds : Math.min(cfg.staleWhileRevalidateSeconds, limits.whileRevalidate)) * 1000
    const onError = fresh + (limits === undefined ? cfg.staleIfErrorSeconds : Math.min(cfg.staleIfErrorSeconds, limits.ifError)) * 1000
    // Created when the upstream (or a cache in front of it) made it: the Age we serve counts from there.
    const entry = this.#entry(st.key, headers, body, now - ageSeconds * 1000, fresh, stale, onError, st.seq, [...tags], st.statSlot, now)
    if (!this.rc.fits(entry)) {
      // The body fitted, but with its tags the entry is larger than the whole L1.
      this.#notStored('too_large')
      this.finishFill(st, undefined)
      return
    }
    if (!this.shared.valid(entry.slots, entry.seq)) {
      this.#notStored('invalidated')
      this.finishFill(st, undefined)
      return
    }
    this.rc.set(entry)
    this.finishFill(st, entry)
    if (this.#l2 !== undefined && st.l2Seq !== undefined) {
      // c: the upstream's creation (as the entry's), so an L2 hit serves the same Age as this one.
      const meta: L2Meta = { s: 200, h: headers, c: entry.created, a: now, f: fresh, w: entry.staleUntil, e: entry.errorUntil, t: entry.tags as string[] }
      this.#l2.store(st.key, meta, body, st.l2Seq, Math.max(entry.staleUntil, entry.errorUntil) - now)
    }
  }

  notStored(reason: string): void {
    this.#notStored(reason)
  }

  /** Largest body stored under key: maxEntryBytes, or less when the route's maxBytes is smaller. */
  entryLimit(key: string): number {
    const budget = this.rc.bodyBudget(key)
    return budget < this.cfg.maxEntryBytes ? budget : this.cfg.maxEntryBytes
  }

  /**
   * End a fill: wake local waiters, hand the entry (or "none") to other workers, free the slot.
   * `abandoned`: the leader stopped before any response; its waiters coalesce anew.
   */
  finishFill(st: MissState, entry: CacheEntry | undefined, abandoned = false): void {
    if (st.settled) return
    st.settled = true
    if (!st.leader) return
    const outcome = abandoned && entry === undefined ? ABANDONED : entry
    // A stale copy handed over (stale-if-error) goes to this fill's waiters only (other workers'
    // too when it holds the process-wide slot): it is no fill later misses should wait for.
    const fresh = entry !== undefined && Date.now() < entry.freshUntil
    this.rc.settle(st.key, outcome)
    if (fresh || st.sabSlot !== -1) this.rc.publish(st.key, outcome)
    if (st.sabSlot !== -1) this.shared.finish(st.sabSlot, st.sabFp, fresh, DONE_GRACE_MS)
  }

  /** Invalidate tags everywhere; resolves once Redis (when configured) has purged and published. */
  invalidate(tags: Iterable<string>): Promise<void> | undefined {
    const list = [...new Set(tags)]
    if (list.length === 0) return undefined
    this.#invalidations.labels('mutation').inc()
    const inv = this.#invalidator
    if (inv === undefined) {
      this.shared.invalidate(list)
      return undefined
    }
    // Redis purges first, then this process's entries go (onPurged, before the promise
    // resolves). The other order let another worker of this process, whose L1 the local
    // invalidation had just emptied, read the not-yet-purged L2 copy in between and store it in
    // L1 as valid (it read the sequence after the invalidation), where it stayed for its whole
    // TTL after the mutation's response: read-your-writes broken. Every read that starts now
    // records a sequence below the local invalidation that follows the purge, so what it fills
    // from the old L2 copy dies with it. When Redis does not answer in time (or failed) the
    // local invalidation happens now, and again whenever the purge does land (also on replay).
    return inv.invalidate(list, this.shared.nonce).then((purged) => {
      if (!purged) this.shared.invalidate(list)
    })
  }

  get routeTag(): string {
    return this.#routeTag
  }

  /** Invalidations wait for Redis (see invalidate()). */
  get purgesRedis(): boolean {
    return this.#invalidator !== undefined
  }

  close(): void {
    this.#unsubscribe?.()
    this.rc.release()
  }
}

/**
 * The request is a batch whose every operation is a query: its document parses, the operation it
 * names is a query, and no documentId beside it lets a backend run another document (the persisted
 * filter, ahead of the cache, has filled in and checked the ones it resolves).
 */
function queriesOnly(ctx: RequestContext): boolean {
  const batch = ctx.batch
  if (batch === undefined) return false
  for (const r of batch.requests) if (r === undefined || r.documentId !== undefined || r.operationType !== 'query') return false
  return true
}

/**
 * The tags a mutation's result invalidates: the entities it returned; and, when it ran and
 * failed (errors beside `data`: execution began), the route's entries too. A resolver that
 * wrote and then failed (`Cannot return null for non-nullable field`, a timeout inside the
 * backend) returns `data: null`: the entities it touched are not in it. Errors without `data`
 * are request errors (parse, validation): nothing ran.
 */
function mutationResultTags(json: unknown, tags: Set<string>, routeTag: string, keys: EntityKeys | undefined): void {
  if (json === null || typeof json !== 'object') {
    tags.add(routeTag)
    return
  }
  const r = json as { data?: unknown; errors?: unknown }
  // Too many objects to read them all: what it touched is not fully known.
  if (!collectEntityTags(r.data, tags, false, undefined, keys) || !unidentifiedRootTypes(r.data, tags, undefined, keys)) tags.add(routeTag)
  if ('data' in r && Array.isArray(r.errors) && r.errors.length > 0) tags.add(routeTag)
}

/**
 * A mutation's whole body, read for the tags it invalidates (added to `tags`): a JSON result, or
 * the parts of a `multipart/mixed` incremental delivery (`@defer` in a mutation; its root fields,
 * the writes, all ran before the first part: graphql-js refuses @defer on them), or the `next`
 * events of a `text/event-stream` answer (GraphQL over SSE, one result or an incremental
 * delivery). The entities of every part count; errors in a later part (a deferred resolver failed
 * after execution began), or a stream that never said `hasNext: false` (SSE: whose last result
 * said `hasNext: true`), drop the route's entries, as anything unreadable. Read as JSON, a
 * multipart or SSE result dropped the route's whole cache on every such mutation.
 */
function readMutationResult(body: Buffer, contentType: string | undefined, tags: Set<string>, routeTag: string, keys: EntityKeys | undefined): void {
  try {
    const delimiter = multipartDelimiter(contentType)
    const sse = delimiter === undefined && isEventStream(contentType)
    if (delimiter === undefined && !sse) return mutationResultTags(JSON.parse(body.toString('utf8')) as unknown, tags, routeTag, keys)
    const results: string[] = []
    let closed = false
    if (sse) {
      // A stream that ended (not cut: see _destroy) ended its answer, whether `complete` came or not.
      closed = true
      // What follows the last blank line is no event (cut short).
      const events = body.toString('utf8').replace(/^\uFEFF/, '').split(SSE_EVENT_END).slice(0, -1)
      for (const text of events) {
        const e = sseEvent(text)
        if (e.type === 'complete') break
        if ((e.type === 'next' || e.type === 'message') && e.data !== undefined) results.push(e.data)
      }
    } else {
      const sections = `\r\n${body.toString('utf8')}`.split(delimiter!)
      for (let i = 1; i < sections.length; i++) {
        const s = sections[i]!
        if (s.startsWith('--')) {
          closed = true
          break
        }
        results.push(partJson(s))
      }
    }
    let first = true
    let done = false
    for (const r of results) {
      const p = JSON.parse(r) as { data?: unknown; errors?: unknown; incremental?: unknown; completed?: unknown; hasNext?: unknown } | null
      if (p === null || typeof p !== 'object' || Array.isArray(p)) return void tags.add(routeTag)
      if (first && 'data' in p) {
        mutationResultTags(p, tags, routeTag, keys)
        first = false
      } else {
        // A later part (or an empty heartbeat `{}`): what it holds, and whether anything failed.
        const items = [p, ...(Array.isArray(p.incremental) ? (p.incremental as unknown[]) : []), ...(Array.isArray(p.completed) ? (p.completed as unknown[]) : [])]
        for (const it of items) {
          if (it === null || typeof it !== 'object') return void tags.add(routeTag)
          const o = it as { data?: unknown; items?: unknown; errors?: unknown }
          if (!collectEntityTags(o.data, tags, false, undefined, keys) || !collectEntityTags(o.items, tags, false, undefined, keys)) return void tags.add(routeTag)
          if (Array.isArray(o.errors) && o.errors.length > 0) return void tags.add(routeTag)
        }
      }
      if (p.hasNext === false || (sse && p.hasNext === undefined)) done = true
    }
    if (first || !done || !closed) tags.add(routeTag)
  } catch {
    tags.add(routeTag)
  }
}

/** A `multipart/mixed` type's delimiter line (CRLF, `--`, its boundary); undefined for any other type. */
function multipartDelimiter(contentType: string | undefined): string | undefined {
  const boundary = contentType !== undefined && /^\s*multipart\/mixed\s*(?:;|$)/i.test(contentType) ? /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType) : null
  return boundary === null ? undefined : `\r\n--${boundary[1] ?? boundary[2]}`
}

/** A `text/event-stream` type (GraphQL over SSE). */
function isEventStream(contentType: string | undefined): boolean {
  return contentType !== undefined && /^\s*text\/event-stream\s*(?:;|$)/i.test(contentType)
}

/** The blank line that ends an event: two line ends (CRLF, LF or CR; a CR before a LF is no line end of its own). */
const SSE_EVENT_END = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)/

/** An event's text (its lines, up to its blank line): its type and data; comments and other fields skipped. */
function sseEvent(text: string): { type: string; data: string | undefined } {
  let type = ''
  let data: string | undefined
  for (const line of text.split(/\r\n|\r|\n/)) {
    const f = line === '' ? undefined : sseField(line)
    if (f === undefined) continue
    const [field, value] = f
    if (field === 'event') type = value
    else if (field === 'data') data = data === undefined ? value : `${data}\n${value}`
  }
  return { type: type || 'message', data }
}

/** A multipart section (what follows a delimiter up to the next one) as its JSON text: after the boundary line, the part's headers and a blank line. */
function partJson(section: string): string {
  const part = section.slice(section.indexOf('\r\n') + 2)
  return part.startsWith('\r\n') ? part.slice(2) : part.slice(part.indexOf('\r\n\r\n') + 4)
}

/**
 * Ask the upstream for an identity body. A compressed response is never stored (the cache reads
 * and serves plain JSON) and a mutation's compressed body cannot be read for its entities, so it
 * dropped the route's whole cache: behind a backend that compresses when asked (Apollo Router,
 * an Express `compression()` app), every browser (which always sends Accept-Encoding) made the
 * cache useless. The gateway-to-backend hop is the cheap one; clients of hits get the stored copy.
 */
function identityBody(ctx: RequestContext): void {
  const ae = ctx.req.headers['accept-encoding']
  if (ae !== undefined && ae !== 'identity') ctx.setUpstreamHeader('accept-encoding', 'identity')
}

/**
 * A cacheable miss or a background refresh asks for the whole response: the client's validators
 * stay here (a hit answers them). Forwarded, the upstream's 304 was not storable: a client that
 * revalidates (a browser's GET with If-None-Match) never filled the cache, and the concurrent
 * misses waiting for its fill each went upstream (a stampede). Clients get 200, as from Varnish.
 */
function unconditional(ctx: RequestContext): void {
  const h = ctx.req.headers
  if (h['if-none-match'] !== undefined) ctx.setUpstreamHeader('if-none-match', null)
  if (h['if-modified-since'] !== undefined) ctx.setUpstreamHeader('if-modified-since', null)
}

const EMPTY_BODY = Buffer.alloc(0)
const ENTITY_TAG = /(?:W\/)?"[^"]*"/g

/**
 * A GET's validators match the stored response (RFC 9110 13.1.2, 13.1.3; weak comparison):
 * If-None-Match when present (`*` or one of its tags equals the ETag), else If-Modified-Since
 * at or after its Last-Modified.
 */
function notModified(req: Record<string, string | string[] | undefined>, stored: Record<string, string>): boolean {
  const inm = req['if-none-match']
  if (inm !== undefined) {
    const etag = stored.etag
    if (etag === undefined) return false
    const text = Array.isArray(inm) ? inm.join(',') : inm
    if (text.trim() === '*') return true
    const mine = etag.startsWith('W/') ? etag.slice(2) : etag
    for (const m of text.matchAll(ENTITY_TAG)) {
      const t = m[0].startsWith('W/') ? m[0].slice(2) : m[0]
      if (t === mine) return true
    }
    return false
  }
  const ims = req['if-modified-since']
  const lm = stored['last-modified']
  if (typeof ims !== 'string' || lm === undefined) return false
  const since = Date.parse(ims)
  const modified = Date.parse(lm)
  return !Number.isNaN(since) && !Number.isNaN(modified) && modified <= since
}

/** A 304's head (RFC 9110 15.4.5): the stored headers but the content's own (type, language). */
function notModifiedHeaders(stored: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const k in stored) if (k !== 'content-type' && k !== 'content-language') out[k] = stored[k]!
  return out
}

function pickHeaders(h: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of STORED_HEADERS) {
    const v = h[name]
    if (v !== undefined) out[name] = Array.isArray(v) ? v.join(', ') : v
  }
  // An upstream without a clock: the time it was received stands for it (RFC 9110 6.6.1).
  out.date ??= new Date().toUTCString()
  return out
}

/** The client's X-Forwarded-Host as the proxy relays it when it trusts it: its first non-blank line. */
function relayedForwardedHost(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 16 && raw[i]!.toLowerCase() === 'x-forwarded-host' && raw[i + 1]!.trim() !== '') return raw[i + 1]!
  }
  return undefined
}

/** A verified claim (proxy/claims.ts: the tenant filter's reading, URL-named claims included). */
function claimAt(claims: Record<string, unknown> | undefined, path: string): unknown {
  return claims === undefined ? undefined : sharedClaimAt(claims, path)
}

/** Passes every chunk on at once and keeps a copy for the cache, up to maxEntryBytes. */
class FillCapture extends Transform {
  readonly #owner: CacheFilter
  readonly #st: MissState
  readonly #ttl: number
  readonly #headers: Record<string, string>
  readonly #age: number
  readonly #max: number
  #chunks: Buffer[] | undefined = []
  #size = 0

  constructor(owner: CacheFilter, st: MissState, ttl: number, headers: Record<string, string>, ageSeconds: number) {
    super()
    this.#owner = owner
    this.#st = st
    this.#ttl = ttl
    this.#headers = headers
    this.#age = ageSeconds
    this.#max = owner.entryLimit(st.key)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const chunks = this.#chunks
    if (chunks !== undefined) {
      this.#size += chunk.length
      if (this.#size > this.#max) {
        // Too big to keep: stop copying, let it stream, and let waiters go upstream now.
        this.#chunks = undefined
        this.#owner.notStored('too_large')
        this.#owner.finishFill(this.#st, undefined)
      } else {
        chunks.push(chunk)
      }
    }
    cb(null, chunk)
  }

  override _flush(cb: TransformCallback): void {
    const chunks = this.#chunks
    if (chunks !== undefined) {
      this.#chunks = undefined
      this.#owner.fill(this.#st, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#size), this.#ttl, this.#headers, this.#age)
    }
    cb()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#owner.finishFill(this.#st, undefined)
    cb(err)
  }
}

/** Reads a mutation's response (passing it on) for entity tags; invalidates before it ends. */
class MutationCapture extends Transform {
  readonly #owner: CacheFilter
  readonly #st: MutationState
  readonly #max: number
  #chunks: Buffer[] | undefined = []
  #size = 0
  readonly #contentType: string | undefined
  #flushed = false
  /**
   * With Redis, a JSON answer's latest chunk is held back until the next one (or the purge)
   * comes: a sized answer is complete for the client with its last byte, which otherwise left
   * before the purge and this process's invalidation had landed, and the client's next query
   * got the entity as it was (from L1, or from the unpurged L2 copy).
   */
  readonly #hold: boolean
  #held: Buffer | undefined
  /**
   * With Redis, an incremental delivery (`multipart/mixed`): its delimiter. Each part passes on
   * once the delimiter that ends it has come (what a client waits for to read it), but the final
   * one (`hasNext: false`) and the closing delimiter are held for the purge, as a JSON answer's
   * last chunk is: the client that read them and queried at once got the entity as it was.
   * Held one by one, every part would have waited for the next.
   */
  readonly #delimiter: Buffer | undefined
  /** Multipart: what has not been passed on (from the start of the part in progress, or of the final one). */
  #tail: Buffer
  /** Leading bytes of the tail that are not the upstream's (the CRLF put before its body). */
  #virtual = CRLF.length
  /** The tail starts right after a delimiter (a part, or `--` closing the stream). */
  #atPart = false
  /** The final part or the closing delimiter came: everything from there on waits for the purge. */
  #final = false
  /**
   * With Redis, a `text/event-stream` answer (GraphQL over SSE), held as an incremental delivery
   * is: each event passes on once its blank line has come, but the last result (one without
   * `hasNext: true`; a client may take it as the answer, as graphql-sse's iterate() does) or
   * `complete`, and all after it, wait for the purge (in #tail, #final as for multipart).
   */
  readonly #sse: boolean
  /** SSE: bytes of the tail already scanned for line ends. */
  #scanned = 0
  /** SSE: the scan is at the start of a line (a line end there ends the event). */
  #lineStart = true
  /** SSE: the last byte scanned was a CR (a LF right after it ends no line). */
  #cr = false
  /** SSE: the event in progress was too large to be read: it goes on as it comes, unread. */
  #unread = false

  constructor(owner: CacheFilter, st: MutationState, contentType: string | undefined) {
    super()
    this.#owner = owner
    this.#st = st
    this.#contentType = contentType
    this.#max = owner.cfg.invalidation.maxMutationBodyBytes
    const delimiter = owner.purgesRedis ? multipartDelimiter(contentType) : undefined
    this.#delimiter = delimiter === undefined ? undefined : Buffer.from(delimiter)
    this.#sse = owner.purgesRedis && delimiter === undefined && isEventStream(contentType)
    this.#hold = owner.purgesRedis && delimiter === undefined && (contentType === undefined || isJsonType(contentType))
    // A body that opens with its first delimiter (no CRLF before it) is scanned as if it had one.
    this.#tail = this.#sse ? EMPTY : CRLF
    if (this.#sse) this.#virtual = 0
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#chunks !== undefined) {
      this.#size += chunk.length
      if (this.#size > this.#max) this.#chunks = undefined
      else this.#chunks.push(chunk)
    }
    if (this.#delimiter !== undefined) return cb(null, this.#passParts(chunk))
    if (this.#sse) return cb(null, this.#passEvents(chunk))
    if (!this.#hold) return cb(null, chunk)
    const previous = this.#held
    this.#held = chunk
    cb(null, previous)
  }

  /** Multipart: the bytes that can go on now (undefined: none). */
  #passParts(chunk: Buffer): Buffer | undefined {
    const d = this.#delimiter!
    const tail = Buffer.concat([this.#tail, chunk])
    if (this.#final) {
      this.#tail = tail
      return undefined
    }
    let pass = 0
    for (;;) {
      if (this.#atPart && tail.length - pass >= 2 && tail[pass] === DASH && tail[pass + 1] === DASH) {
        this.#final = true // the closing delimiter
        break
      }
      const next = tail.indexOf(d, pass)
      if (next === -1) {
        // A part larger than can be read for its entities goes on as it comes (it cannot be told
        // final); the end of it that may begin a delimiter stays.
        if (tail.length - pass > this.#max) {
          pass = Math.max(pass, tail.length - d.length + 1)
          this.#atPart = false
        }
        break
      }
      if (this.#atPart && finalPart(tail.subarray(pass, next))) {
        this.#final = true
        break
      }
      pass = next + d.length
      this.#atPart = true
    }
    const from = this.#virtual
    if (pass <= from) {
      this.#tail = tail
      return undefined
    }
    this.#virtual = 0
    this.#tail = tail.subarray(pass)
    return tail.subarray(from, pass)
  }

  /** SSE: the bytes that can go on now (undefined: none). */
  #passEvents(chunk: Buffer): Buffer | undefined {
    const tail = this.#tail.length === 0 ? chunk : Buffer.concat([this.#tail, chunk])
    this.#tail = tail
    if (this.#final) return undefined
    let pass = 0
    for (let i = this.#scanned; i < tail.length; i++) {
      const c = tail[i]
      if (c === LF && this.#cr) {
        this.#cr = false // the CR before it ended the line
        continue
      }
      this.#cr = c === CR
      if (c !== CR && c !== LF) {
        this.#lineStart = false
        continue
      }
      if (!this.#lineStart) {
        this.#lineStart = true
        continue
      }
      // A blank line: the event is complete (with the LF of a CRLF, when it is here already).
      let end = i + 1
      if (c === CR && tail[end] === LF) {
        end++
        i++
        this.#cr = false
      }
      if (!this.#unread && finalEvent(tail.subarray(pass, end))) {
        this.#final = true
        break
      }
      this.#unread = false
      pass = end
    }
    if (this.#final) {
      this.#tail = tail.subarray(pass)
      return pass === 0 ? undefined : tail.subarray(0, pass)
    }
    // An event larger than can be read for its entities goes on as it comes (it cannot be told final).
    if (tail.length - pass > this.#max) {
      pass = tail.length
      this.#unread = true
    }
    this.#scanned = tail.length - pass
    this.#tail = tail.subarray(pass)
    return pass === 0 ? undefined : tail.subarray(0, pass)
  }

  override _flush(cb: TransformCallback): void {
    this.#flushed = true
    const tags = new Set(this.#st.tags)
    const chunks = this.#chunks
    if (chunks === undefined) {
      // Too large to read: we cannot know what it touched, so the route's entries all go.
      tags.add(this.#owner.routeTag)
    } else {
      readMutationResult(Buffer.concat(chunks, this.#size), this.#contentType, tags, this.#owner.routeTag, this.#st.keys)
    }
    // What is held leaves once Redis has purged, or its wait (redisTimeoutMs) ran out.
    const held = this.#delimiter === undefined && !this.#sse ? this.#held : this.#tail.subarray(this.#virtual)
    const p = this.#owner.invalidate(tags)
    if (p === undefined) cb(null, held)
    else p.then(() => cb(null, held), () => cb(null, held))
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Cut before its end (upstream failed mid-body, client gone): the mutation ran upstream
    // but what it touched is unknown, so the route's entries all go (as for one too large to read).
    if (!this.#flushed) {
      this.#flushed = true
      void this.#owner.invalidate([...this.#st.tags, this.#owner.routeTag])
    }
    cb(err)
  }
}

const CRLF = Buffer.from('\r\n')
const EMPTY = Buffer.alloc(0)
const DASH = 0x2d
const CR = 0x0d
const LF = 0x0a

/** An SSE event (its bytes, up to its blank line) ends the answer for a client: `complete`, or a result without `hasNext: true`. */
function finalEvent(event: Buffer): boolean {
  const e = sseEvent(event.toString('utf8'))
  if (e.type === 'complete') return true
  if ((e.type !== 'next' && e.type !== 'message') || e.data === undefined) return false
  try {
    const p = JSON.parse(e.data) as { hasNext?: unknown } | null
    return p !== null && typeof p === 'object' && p.hasNext !== true
  } catch {
    return false
  }
}

/** A multipart section (from after its delimiter to the next one) is the final part: `hasNext: false`. */
function finalPart(section: Buffer): boolean {
  try {
    const p = JSON.parse(partJson(section.toString('utf8'))) as { hasNext?: unknown } | null
    return p !== null && typeof p === 'object' && p.hasNext === false
  } catch {
    return false
  }
}

export const cacheFilter: FilterModule<CacheFilterConfig> = {
  create: (cfg, deps) => new CacheFilter(cfg, deps),
  sharedBytes: CACHE_SHARED_BYTES,
  /** The supervisor saw worker thread `workerId` exit: free the fills it led (they never finish). */
  workerExited: (shared, workerId) => new CacheShared(shared).releaseWorker(workerId),
}

/** The APQ hash a request names (`extensions.persistedQuery.sha256Hash`, lower-case hex), if any. */
function apqHash(gql: GraphQLRequest): string | undefined {
  const pq = gql.extensions?.persistedQuery
  if (pq === null || typeof pq !== 'object') return undefined
  const h = (pq as { sha256Hash?: unknown }).sha256Hash
  return typeof h === 'string' && /^[0-9a-f]{64}$/.test(h) ? h : undefined
}
