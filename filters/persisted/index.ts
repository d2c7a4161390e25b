// Persisted queries: Apollo APQ (exact semantics), the persisted-documents manifest with
// per-id policy (cost units, timeout, tier, planner hints sent to the backend), safelisting,
// document limits, and a static cost estimate for everything the manifest does not price.
import { readFileSync } from 'node:fs'
import { GraphQLError, type DocumentNode } from 'graphql'
import { LRUCache } from 'lru-cache'
import type { Counter, Histogram, Registry } from 'prom-client'
import type { PersistedFilterConfig } from '../../config/filters/index.ts'
import type { PersistedDocumentsConfig } from '../../config/persisted-documents.ts'
import { configuredTier } from '../../config/defaults.ts'
import type { GatewayConfig } from '../../config/schema.ts'
import type { Tier } from '../../config/primitives.ts'
import { acceptClass, errorBody, errorReply, oncePer, type Decision, type Filter, type FilterDeps, type FilterModule, type GraphQLRequest, type LocalReply, type RequestContext } from '../../proxy/filter.ts'
import { errorMediaType } from '../../proxy/errors.ts'
import type { GraphQLBatch } from '../../proxy/graphql-request.ts'
import { counter, gauge, histogram } from '../../proxy/metrics.ts'
import { ApqStore } from './apq-store.ts'
import { analyzeDocument, loadCostSchema, selectOperation, type Analysis, type CostSettings, type SchemaCostInfo } from './document-analysis.ts'
import { encodeHints, hintsFor, Manifest, type CostHints, type PersistedOperation } from './manifest.ts'

type Mode = PersistedFilterConfig['safelist']['mode']

const JSON_TYPE = { 'content-type': 'application/json; charset=utf-8' }
// The schema's defaults for hints.extension / hints.header (config/filters/persisted.ts).
const DEFAULT_HINT_EXTENSION = 'costHints'
const DEFAULT_HINT_HEADER = 'x-igw-cost-hints'
/** What an APQ registration is kept under: a sha256 in hex (any case; kept in lower case). */
const APQ_HASH = /^[0-9a-f]{64}$/i
const COST_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000]

// Exactly what Apollo Server / Router answer: clients match on the code (and the message).
// A 200 that must not be cached (Apollo's header too): with useGETForHashedQueries, a CDN or
// browser cache would otherwise answer "not found" for the hash after the client registered it.
// Typed `application/json` without the charset parameter (RFC 8259 defines none), which the proxy
// does not re-type by the client's Accept: a 200 without `data` is only legal in that type (GraphQL
// over HTTP §7.1.2). Re-typed for a client that prefers application/graphql-response+json (Apollo
// Client 3.8+ and 4 send it first, application/json after), it was a spec violation.
const APQ_ERROR_HEADERS = { 'content-type': 'application/json', 'cache-control': 'private, no-cache, must-revalidate' }
const NOT_FOUND: LocalReply = { status: 200, headers: APQ_ERROR_HEADERS, body: errorBody('PERSISTED_QUERY_NOT_FOUND', 'PersistedQueryNotFound'), code: 'PERSISTED_QUERY_NOT_FOUND' }
const NOT_SUPPORTED: LocalReply = { status: 200, headers: APQ_ERROR_HEADERS, body: errorBody('PERSISTED_QUERY_NOT_SUPPORTED', 'PersistedQueryNotSupported'), code: 'PERSISTED_QUERY_NOT_SUPPORTED' }
/**
 * The same to a client that does not take application/json at all: in graphql-response+json a
 * response without `data` MUST be 4xx (404 for an unknown hash or id, as graphql-yoga's APQ plugin
 * and Apollo Router's persisted queries; 400 for hashes refused). Apollo's link retries on the
 * code whatever the status.
 */
const STRICT_APQ_HEADERS = { 'content-type': 'application/graphql-response+json; charset=utf-8', 'cache-control': 'private, no-cache, must-revalidate' }
const STRICT_NOT_FOUND: LocalReply = { ...NOT_FOUND, status: 404, headers: STRICT_APQ_HEADERS }
const STRICT_NOT_SUPPORTED: LocalReply = { ...NOT_SUPPORTED, status: 400, headers: STRICT_APQ_HEADERS }

/**
 * A GraphQL error with the parser's locations at the top level of the error, as the spec puts them.
 * Its status follows GraphQL over HTTP as the backend's own would (§6.4.1, §6.4.2): 400 in
 * application/graphql-response+json, 200 to a client that takes application/json and is answered
 * in it (no Accept, a wildcard, or application/json ranked first). Always 400, the filter answered
 * such a client otherwise than the backend behind it: a transport failure, not a GraphQL error.
 * Still 400 (`http200` false): a batch's refusal (the spec has no batches, their clients await an
 * array), a subscribe on a WebSocket (the status is only logged and counted), and a client that
 * takes neither JSON type (an SSE-only client would read a 200 as its stream).
 */
function parseErrorReply(err: GraphQLError, accept: string | undefined, http200: boolean): LocalReply {
  const e: Record<string, unknown> = { message: err.message }
  if (err.locations?.length) e.locations = err.locations
  e.extensions = { code: 'BAD_REQUEST' }
  const cls = http200 ? acceptClass(accept) : undefined
  const status = (cls === '' || cls === 'j') && errorMediaType(accept) === JSON_TYPE['content-type'] ? 200 : 400
  return { status, headers: JSON_TYPE, body: JSON.stringify({ errors: [e] }), code: 'BAD_REQUEST' }
}

/** A limit a document breaks, and how to say so. */
interface LimitBroken {
  reason: 'too_large' | 'parse_error' | 'too_complex' | 'too_deep'
  message: string
  parseError?: GraphQLError
}

/** How a batch operation from outside the manifest was resolved: its outcome once it passes #batchCheck. */
type OutsideOutcome = 'freeform' | 'apq_registered' | 'apq_hit'

/** Why a request of a batch was not resolved (undefined: it was, or it named nothing). */
type BatchItem = 'apq_not_found' | 'apq_not_supported' | undefined

/**
 * What a batch's operations add up to: their cost, whether any was estimated, and the longest of
 * their manifest timeoutMs (Infinity once one has none: its operation gets the route's deadline).
 */
interface BatchTally {
  cost: number
  estimated: boolean
  timeoutMs: number
  /** The lowest manifest `tier` of its operations (undefined: none names one). */
  tier: Tier | undefined
  /** Some operation has no manifest tier: it runs at the caller's. */
  callerTier: boolean
  /**
   * Its manifest operations' ids and hints, counted once no hash of the batch is unknown: counted
   * as resolved, a batch answered "not found" counted them again when the client resent it (as
   * Apollo's link does), per id and in igw_operation_cost too.
   */
  manifest: { id: string; hints: CostHints }[]
}

/** QoS tiers from the most to the least favoured (config/primitives.ts tierName; zod stays out of the workers). */
const TIER_RANK: Record<Tier, number> = { gold: 0, silver: 1, bronze: 2 }
const lowerTier = (a: Tier | undefined, b: Tier): Tier => (a === undefined || TIER_RANK[b] > TIER_RANK[a] ? b : a)

/**
 * The local answer to a batch with an unresolved hash: one result per operation, in order, as
 * Apollo Server answers a batch (a BatchHttpLink hands each operation its own result): an unknown
 * hash or id PersistedQueryNotFound (PersistedQueryNotSupported with APQ off); every other
 * operation was not run, said with the same code, on which Apollo's persisted-queries link
 * resends it (with its query: a hash it names is registered then).
 */
function batchReply(failed: BatchItem[]): LocalReply {
  const notSupported = failed.includes('apq_not_supported')
  const out: string[] = new Array(failed.length)
  for (let i = 0; i < failed.length; i++) {
    const f = failed[i]
    if (f === 'apq_not_supported') out[i] = NOT_SUPPORTED.body as string
    else if (f === 'apq_not_found') out[i] = NOT_FOUND.body as string
    else {
      const code = notSupported ? 'PERSISTED_QUERY_NOT_SUPPORTED' : 'PERSISTED_QUERY_NOT_FOUND'
      out[i] = errorBody(code, `not run: another operation of this batch named a persisted query the gateway ${notSupported ? 'does not support' : 'does not know'}; send it again`)
    }
  }
  return { status: 200, headers: APQ_ERROR_HEADERS, body: `[${out.join(',')}]`, code: notSupported ? 'PERSISTED_QUERY_NOT_SUPPORTED' : 'PERSISTED_QUERY_NOT_FOUND' }
}

/**
 * The manifest costs each open filter reports as igw_persisted_operation_cost, per registry (a
 * worker's): the gauge shows those of the filters in use. Set once by each new filter, it kept an
 * id a reload removed (or renamed), with its old cost, until the proxy restarted.
 */
const liveCosts = new WeakMap<Registry, Set<ReadonlyMap<string, number>>>()

// Compiled once per config document, shared by every route's filter instance.
const manifests = new WeakMap<PersistedDocumentsConfig, WeakMap<CostSettings, Manifest>>()

interface Metrics {
  requests: Counter<'outcome'>
  rejections: Counter<'reason'>
  byId: Counter<'persisted_id'>
  cost: Histogram<'source'>
  redisErrors: Counter<'op'>
}

class PersistedFilter implements Filter {
  readonly name = 'persisted'
  readonly #cfg: PersistedFilterConfig
  readonly #settings: CostSettings
  readonly #info: SchemaCostInfo | undefined
  readonly #manifest: Manifest
  readonly #apq: ApqStore
  readonly #m: Metrics
  readonly #hintExt: string | false
  readonly #hintHeader: string | false
  /** The names a client's own hints are removed under: the configured ones, the defaults when sending is off. */
  readonly #stripExt: string
  readonly #stripHeader: string
  readonly #tenantModes: Map<string, Mode>
  readonly #tenants: GatewayConfig['tenants']
  readonly #unknownLogged = new LRUCache<string, true>({ max: 1000 })
  readonly #live: Set<ReadonlyMap<string, number>>
  readonly #costs: ReadonlyMap<string, number>
  /**
   * Analyses per parsed document (the proxy caches ASTs by query text, so this hits by identity),
   * per filter instance: the estimate depends on this route's cost settings and schema file. A
   * module-level map let the first route, or config version, to price a document fix its cost
   * for every other route and every later version (a reload changing `cost.*` changed nothing).
   */
  readonly #analyses = new WeakMap<DocumentNode, Map<object, Analysis>>()

  constructor(cfg: PersistedFilterConfig, deps: FilterDeps) {
    this.#cfg = cfg
    this.#settings = cfg.cost
    this.#info = cfg.cost.schemaFile ? loadSchemaFile(cfg.cost.schemaFile) : undefined
    this.#manifest = manifestFor(deps.config.persistedDocuments, cfg.cost, this.#info)
    this.#hintExt = cfg.hints.extension
    this.#hintHeader = cfg.hints.header
    // With hints off, a backend built to trust the gateway's hints under their default names
    // would read a client's own claim of its cost: the gateway never relays one.
    this.#stripExt = cfg.hints.extension === false ? DEFAULT_HINT_EXTENSION : cfg.hints.extension
    this.#stripHeader = cfg.hints.header === false ? DEFAULT_HINT_HEADER : cfg.hints.header
    this.#tenantModes = new Map(Object.entries(cfg.safelist.tenants))
    this.#tenants = deps.config.tenants
    const r = deps.registry
    this.#m = {
      requests: counter(r, { name: 'igw_persisted_requests_total', help: 'GraphQL requests by how the persisted filter identified them', labelNames: ['outcome'] }),
      rejections: counter(r, { name: 'igw_persisted_rejections_total', help: 'Requests refused by the persisted filter, by reason', labelNames: ['reason'] }),
      byId: counter(r, { name: 'igw_persisted_operation_requests_total', help: 'Requests per manifest operation id', labelNames: ['persisted_id'] }),
      cost: histogram(r, { name: 'igw_operation_cost', help: 'Cost units per GraphQL request, by source (hint from the manifest, or static estimate)', labelNames: ['source'], buckets: COST_BUCKETS }),
      redisErrors: counter(r, { name: 'igw_apq_redis_errors_total', help: 'APQ reads/writes that failed against Redis (the LRU keeps serving)', labelNames: ['op'] }),
    }
    let live = liveCosts.get(r)
    if (live === undefined) {
      const costs = (live = new Set())
      liveCosts.set(r, costs)
      gauge(r, {
        name: 'igw_persisted_operation_cost',
        help: 'Cost units of each manifest operation (its costUnits, else the static estimate)',
        labelNames: ['persisted_id'],
        aggregator: 'max',
        collect() {
          this.reset()
          const max = new Map<string, number>()
          for (const c of costs) for (const [id, cost] of c) max.set(id, Math.max(cost, max.get(id) ?? 0))
          for (const [id, cost] of max) this.labels(id).set(cost)
        },
      })
    }
    this.#costs = new Map(Array.from(this.#manifest.byId.values(), (op) => [op.id, op.costUnits ?? op.analysis.cost]))
    this.#live = live
    live.add(this.#costs)
    const log = deps.logger
    const logNow = oncePer(5_000)
    this.#apq = new ApqStore(cfg.apq.maxEntries, deps.redis, cfg.apq.redisTtlSeconds, cfg.apq.redisTimeoutMs, (op, err) => {
      this.#m.redisErrors.labels(op).inc()
      if (logNow()) log.warn({ err: { message: (err as Error).message }, op }, 'APQ store: redis unavailable')
    })
  }

  close(): void {
    this.#live.delete(this.#costs)
  }

  onRequest(ctx: RequestContext): Decision | Promise<Decision> {
    const gql = ctx.graphql
    // Hints are ours to give: whatever a client put there does not reach the backend — the
    // header on every request, batches and GETs without a query included (a batch's extensions
    // are edited per request in #batch, once the proxy hands the batch over as ctx.batch).
    if (ctx.req.headers[this.#stripHeader] !== undefined) ctx.setUpstreamHeader(this.#stripHeader, null)
    if (gql === undefined) {
      const batch = ctx.batch
      return batch === undefined ? this.#opaque(ctx) : this.#batch(ctx, batch)
    }
    const hintExt = this.#stripExt
    if (gql.extensions !== undefined && hintExt in gql.extensions) gql.deleteExtension(hintExt)

    // GraphQL-over-HTTP persisted documents: `documentId` ("sha256:<hex>" or a bare id) names a
    // manifest entry; the backend gets the document itself.
    if (gql.documentId !== undefined) {
      const id = gql.documentId.startsWith('sha256:') ? gql.documentId.slice(7) : gql.documentId
      const op = this.#manifest.lookup(id)
      // Two names for one operation must name the same document: otherwise the checks, the
      // price and the cache key would follow one while the backend (which gets both) may run
      // the other — or refuse the pair, as Apollo Server does a hash that does not match.
      if (gql.query !== undefined) {
        if (op === undefined || op.document !== gql.query) return this.#reject('hash_mismatch', 'documentId and query name different documents')
        gql.clearDocumentId() // the query stays, and is matched to the manifest below
      } else {
        if (op === undefined) return this.#notFound(ctx)
        const named = gql.extensions?.persistedQuery
        if (named !== undefined) {
          const hash = typeof named === 'object' && named !== null ? (named as { sha256Hash?: unknown }).sha256Hash : undefined
          if (typeof hash !== 'string' || (this.#manifest.lookup(hash) !== op && hash.toLowerCase() !== op.docHash)) {
            return this.#reject('hash_mismatch', 'documentId and extensions.persistedQuery name different documents')
          }
          gql.deleteExtension('persistedQuery')
        }
        gql.setQuery(op.document)
        gql.clearDocumentId()
        return this.#admit(ctx, gql, op, 'manifest')
      }
    }
    const pq = gql.extensions?.persistedQuery
    if (pq === undefined) return this.#admit(ctx, gql, this.#byText(gql), 'freeform')
    if (typeof pq !== 'object' || pq === null || Array.isArray(pq)) return this.#reject('bad_extension', 'extensions.persistedQuery must be an object')
    const { version, sha256Hash } = pq as { version?: unknown; sha256Hash?: unknown }
    if (version !== 1) return this.#reject('bad_extension', 'Unsupported persisted query version')
    if (typeof sha256Hash !== 'string' || sha256Hash === '') return this.#reject('bad_extension', 'extensions.persistedQuery.sha256Hash must be a non-empty string')

    if (gql.query === undefined) {
      const op = this.#manifest.lookup(sha256Hash)
      if (op !== undefined) {
        gql.setQuery(op.document)
        gql.deleteExtension('persistedQuery')
        return this.#admit(ctx, gql, op, 'manifest')
      }
      if (!this.#cfg.apq.enabled) return this.#notSupported(ctx)
      // Registrations are kept under the lower-case hex digest (the hash check accepts either case).
      // Anything else was never registered: looked up, any string a client sent (up to the body
      // limit) became a Redis key read, and a wait of up to redisTimeoutMs, per request.
      if (!APQ_HASH.test(sha256Hash)) return this.#notFound(ctx)
      const hash = sha256Hash.toLowerCase()
      const known = this.#apq.local(hash)
      if (known !== undefined) return this.#fromApq(ctx, gql, hash, known)
      if (!this.#apq.hasRedis) return this.#notFound(ctx)
      return this.#apq.remote(hash).then((r) => (r.query === undefined ? this.#notFound(ctx) : this.#fromApq(ctx, gql, hash, r.query)))
    }

    // Document and hash together: a registration (APQ) or a manifest id with its text.
    const op = this.#manifest.byId.get(sha256Hash)
    if (op !== undefined && op.document === gql.query) {
      gql.deleteExtension('persistedQuery')
      return this.#admit(ctx, gql, op, 'manifest')
    }
    const byText = this.#byText(gql)
    // APQ off: a hash beside a query is refused as Apollo Server and Router refuse it
    // (PersistedQueryNotSupported, 200), unless the text is a manifest document. Run as sent, the
    // client never learnt that hashing is off and kept sending hashes; Apollo Client's persisted-queries link, on this answer, resends the query
    // without the hash and stops hashing.
    if (!this.#cfg.apq.enabled && byText === undefined) return this.#notSupported(ctx)
    if (gql.docHash !== sha256Hash.toLowerCase()) return this.#reject('hash_mismatch', 'provided sha does not match query')
    gql.deleteExtension('persistedQuery')
    if (byText !== undefined) {
      const hash = gql.docHash
      const text = gql.query
      const decision = this.#admit(ctx, gql, byText, 'manifest')
      if (decision === undefined) this.#registerShape(hash, text, byText)
      return decision
    }
    const decision = this.#admit(ctx, gql, undefined, 'apq_registered')
    // Only documents that passed the checks are remembered (and not in enforce mode, where
    // registering an operation outside the manifest would be a way around the safelist).
    if (decision === undefined && this.#mode(ctx) !== 'enforce') this.#apq.register(gql.docHash, gql.query)
    // Named by its hash, as its later hits are: the registration's access line joins them.
    if (decision === undefined) gql.persistedId = gql.docHash
    return decision
  }

  /**
   * A batch (routes[].batching): each request's APQ hash or persisted id is resolved as for a
   * lone request and a client's own cost hints dropped, so a backend without APQ support runs an
   * Apollo BatchHttpLink + PersistedQueryLink batch; APQ registrations in it are kept. The batch
   * costs what its operations cost alone, and is due when the last of them would be (#batchPolicy):
   * it cost one unit per operation, so a query the quota refuses alone as too expensive ran in a
   * batch of one, and no manifest timeoutMs applied. A hash the gateway does not know answers the
   * batch with one result per operation, 200 (batchReply). Once every operation is resolved, those not
   * from the manifest are held to a lone request's rules (#batchCheck): the first one that breaks
   * them refuses the batch. Batching was a way around maxDepth, maxQueryBytes and the safelist:
   * a batch's documents went upstream unchecked, and `enforce` refused even a batch made only of
   * manifest operations.
   */
  #batch(ctx: RequestContext, batch: GraphQLBatch): Decision | Promise<Decision> {
    const reqs = batch.requests
    const mode = this.#mode(ctx)
    const enforce = mode === 'enforce'
    let failed: BatchItem[] | undefined
    let remote: Promise<void>[] | undefined
    let outside: [number, OutsideOutcome][] | undefined // operations not resolved from the manifest, to check
    let items: unknown[] | undefined
    const tally: BatchTally = { cost: 0, estimated: false, timeoutMs: 0, tier: undefined, callerTier: false, manifest: [] }
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i]
      if (r === undefined) {
        // Not a request the filter can read. An object may still carry a query a backend runs
        // (Apollo Server ignores a numeric "documentId"): forwarded unchecked, it went past the
        // safelist and the limits, while the same request alone is refused. A non-object carries
        // none, and goes as sent for the backend to answer.
        items ??= JSON.parse(batch.raw.toString('utf8')) as unknown[]
        const item = items[i]
        if (item === null || typeof item !== 'object' || Array.isArray(item)) {
          // Not a request at all (the backend answers it with an error): the proxy's one unit.
          tally.cost += 1
          tally.timeoutMs = Infinity
          tally.callerTier = true
          continue
        }
        if (enforce) {
          this.#m.requests.labels('not_allowed').inc()
          return errorReply('PERSISTED_QUERY_NOT_ALLOWED', `batch operation ${i} is not a GraphQL request that can be checked against the persisted-documents safelist`)
        }
        return this.#reject('malformed', `batch operation ${i} is not a GraphQL request (a string "query", "operationName" and "documentId"; "variables" and "extensions" objects)`)
      }
      const outcome = this.#batchItem(r, enforce, tally)
      if (typeof outcome === 'object') return outcome
      if (outcome === 'manifest') continue
      if (outcome === 'remote') {
        const hash = (r.extensions!.persistedQuery as { sha256Hash: string }).sha256Hash.toLowerCase()
        ;(remote ??= []).push(
          this.#apq.remote(hash).then((found) => {
            if (found.query !== undefined) {
              if (this.#batchApqHit(r, found.query, tally) === 'apq_hit') (outside ??= []).push([i, 'apq_hit'])
            } else (failed ??= new Array<BatchItem>(reqs.length).fill(undefined))[i] = this.#batchMiss('apq_not_found')
          }),
        )
        continue
      }
      if (outcome === 'freeform' || outcome === 'apq_registered' || outcome === 'apq_hit') (outside ??= []).push([i, outcome])
      else (failed ??= new Array<BatchItem>(reqs.length).fill(undefined))[i] = this.#batchMiss(outcome)
    }
    const finish = (): Decision => {
      if (failed !== undefined) return batchReply(failed)
      for (const { id, hints } of tally.manifest) {
        this.#m.requests.labels('manifest').inc()
        this.#m.byId.labels(id).inc()
        this.#m.cost.labels(hints.costSource).observe(hints.cost)
      }
      if (remote !== undefined) outside?.sort((a, b) => a[0] - b[0]) // the first refused is the first in the batch
      for (const [i, outcome] of outside ?? []) {
        const refusal = this.#batchCheck(ctx, reqs[i]!, i, mode, tally, outcome)
        if (refusal !== undefined) return refusal
      }
      this.#batchPolicy(ctx, tally)
      return undefined
    }
    return remote === undefined ? finish() : Promise.all(remote).then(finish)
  }

  /**
   * A batch operation from outside the manifest, held to a lone request's rules: the safelist
   * mode, size, parse, fragment expansion, depth; and counted as one (`outcome` once it passes,
   * unknown_logged under log-unknown). Counted as freeform before its checks, an unknown
   * operation in a batch never showed in unknown_logged, the count that says when `enforce` is safe.
   */
  #batchCheck(ctx: RequestContext, r: GraphQLRequest, i: number, mode: Mode, tally: BatchTally, outcome: OutsideOutcome): LocalReply | undefined {
    const which = `batch operation ${i}`
    if (mode === 'enforce') {
      this.#m.requests.labels('not_allowed').inc()
      return errorReply('PERSISTED_QUERY_NOT_ALLOWED', `${which} is not in the persisted-documents manifest`)
    }
    const query = r.query
    if (query === undefined) return this.#reject('no_query', `${which} carries no query (and no persisted query id this gateway knows)`)
    const c = this.#checkLimits(r, query)
    if ('reason' in c) return this.#limitRefusal(ctx, c, `${which}: `)
    if (mode === 'log-unknown') this.#noteUnknown(ctx, r)
    this.#m.requests.labels(mode === 'log-unknown' ? 'unknown_logged' : outcome).inc()
    const cost = c.a.variableDependent ? analyzeDocument(c.doc, r.operationName, r.variables, this.#settings, this.#info).cost : c.a.cost
    this.#m.cost.labels('estimate').observe(cost)
    tally.cost += cost
    tally.estimated = true
    tally.timeoutMs = Infinity
    tally.callerTier = true
    return undefined
  }

  /**
   * A resolved batch's price, deadline and tier, as its operations have them alone (the quota
   * filter charges ctx.cost and sheds by ctx.tier). The batch runs as one request, at the least
   * favoured tier of its operations (a manifest `tier`, else the caller's): the manifest tier was
   * ignored in a batch, so an operation demoted to bronze ran at the caller's gold beside others.
   */
  #batchPolicy(ctx: RequestContext, tally: BatchTally): void {
    ctx.cost = tally.cost
    ctx.costSource = tally.estimated ? 'estimate' : 'hint'
    if (tally.timeoutMs !== Infinity) {
      const d = ctx.startTime + tally.timeoutMs
      if (d < ctx.deadline) ctx.deadline = d
    }
    if (tally.tier !== undefined) ctx.tier = tally.callerTier ? lowerTier(tally.tier, this.#callerTier(ctx)) : tally.tier
  }

  /** The tier of who asks, as the quota filter resolves it. */
  #callerTier(ctx: RequestContext): Tier {
    return ctx.tier ?? configuredTier(this.#tenants, ctx.tenant)
  }

  #batchMiss(outcome: 'apq_not_found' | 'apq_not_supported'): BatchItem {
    this.#m.requests.labels(outcome).inc()
    return outcome
  }

  /** One request of a batch, resolved in place: from the manifest, from outside it (to check), a miss, 'remote' (ask Redis), or a reply refusing the batch (a malformed or mismatched id, as for a lone request). */
  #batchItem(r: GraphQLRequest, enforce: boolean, tally: BatchTally): 'manifest' | OutsideOutcome | 'remote' | 'apq_not_found' | 'apq_not_supported' | LocalReply {
    const hintExt = this.#stripExt
    if (r.extensions !== undefined && hintExt in r.extensions) r.deleteExtension(hintExt)
    if (r.documentId !== undefined) {
      const op = this.#manifest.lookup(r.documentId.startsWith('sha256:') ? r.documentId.slice(7) : r.documentId)
      if (r.query !== undefined) {
        if (op === undefined || op.document !== r.query) return this.#reject('hash_mismatch', 'documentId and query name different documents')
        r.clearDocumentId()
      } else {
        if (op === undefined) return 'apq_not_found'
        const named = r.extensions?.persistedQuery
        if (named !== undefined) {
          const hash = typeof named === 'object' && named !== null ? (named as { sha256Hash?: unknown }).sha256Hash : undefined
          if (typeof hash !== 'string' || (this.#manifest.lookup(hash) !== op && hash.toLowerCase() !== op.docHash)) {
            return this.#reject('hash_mismatch', 'documentId and extensions.persistedQuery name different documents')
          }
        }
        return this.#batchManifest(r, op, tally)
      }
    }
    const pq = r.extensions?.persistedQuery
    if (pq === undefined) {
      const op = this.#byText(r)
      if (op !== undefined) return this.#batchManifest(r, op, tally)
      return 'freeform'
    }
    if (typeof pq !== 'object' || pq === null || Array.isArray(pq)) return this.#reject('bad_extension', 'extensions.persistedQuery must be an object')
    const { version, sha256Hash } = pq as { version?: unknown; sha256Hash?: unknown }
    if (version !== 1) return this.#reject('bad_extension', 'Unsupported persisted query version')
    if (typeof sha256Hash !== 'string' || sha256Hash === '') return this.#reject('bad_extension', 'extensions.persistedQuery.sha256Hash must be a non-empty string')
    if (r.query === undefined) {
      const op = this.#manifest.lookup(sha256Hash)
      if (op !== undefined) return this.#batchManifest(r, op, tally)
      if (!this.#cfg.apq.enabled) return 'apq_not_supported'
      if (!APQ_HASH.test(sha256Hash)) return 'apq_not_found'
      const known = this.#apq.local(sha256Hash.toLowerCase())
      if (known !== undefined) return this.#batchApqHit(r, known, tally)
      return this.#apq.hasRedis ? 'remote' : 'apq_not_found'
    }
    const op = this.#manifest.byId.get(sha256Hash)
    if (op !== undefined && op.document === r.query) return this.#batchManifest(r, op, tally)
    const byText = this.#byText(r)
    if (!this.#cfg.apq.enabled && byText === undefined) return 'apq_not_supported'
    if (r.docHash !== sha256Hash.toLowerCase()) return this.#reject('hash_mismatch', 'provided sha does not match query')
    if (byText !== undefined) {
      this.#registerShape(r.docHash, r.query, byText)
      return this.#batchManifest(r, byText, tally)
    }
    r.deleteExtension('persistedQuery')
    // As for a lone request: only a document within the limits is remembered, and none under
    // enforce (registering an operation outside the manifest would be a way around the safelist).
    if (!enforce && this.#registrable(r)) this.#apq.register(r.docHash!, r.query)
    return 'apq_registered'
  }

  #batchApqHit(r: GraphQLRequest, query: string, tally: BatchTally): 'apq_hit' | 'manifest' {
    r.setQuery(query)
    r.deleteExtension('persistedQuery')
    const op = this.#byText(r) // a manifest document in the client's text (#registerShape)
    return op === undefined ? 'apq_hit' : this.#batchManifest(r, op, tally)
  }

  #batchManifest(r: GraphQLRequest, op: PersistedOperation, tally: BatchTally): 'manifest' {
    if (r.query !== op.document) r.setQuery(op.document)
    r.deleteExtension('persistedQuery')
    r.clearDocumentId()
    const hints = op.hints ?? hintsFor(op, analyzeDocument(op.ast, r.operationName, r.variables, this.#settings, this.#info).cost)
    tally.manifest.push({ id: op.id, hints })
    tally.cost += hints.cost
    if (hints.costSource === 'estimate') tally.estimated = true
    tally.timeoutMs = Math.max(tally.timeoutMs, op.timeoutMs ?? Infinity)
    if (op.tier !== undefined) tally.tier = lowerTier(tally.tier, op.tier)
    else tally.callerTier = true
    if (this.#hintExt !== false) r.setExtension(this.#hintExt, hints)
    return 'manifest'
  }

  /**
   * The manifest operation a request's text is: that document exactly, or but for whitespace,
   * commas, comments and the order of its definitions, as Apollo Router's safelist matches (a
   * client printing its fragments in another order than the manifest was refused under enforce,
   * logged as unknown, and not priced as its id). Only text within maxQueryBytes is parsed for it.
   */
  #byText(r: GraphQLRequest): PersistedOperation | undefined {
    const m = this.#manifest
    const query = r.query
    if (m.byHash.size === 0 || query === undefined) return undefined
    const exact = m.byHash.get(r.docHash!)
    if (exact !== undefined) return exact
    const max = this.#cfg.limits.maxQueryBytes
    if (query.length > max || (query.length * 3 > max && Buffer.byteLength(query) > max)) return undefined
    let doc: DocumentNode
    try {
      doc = r.document
    } catch {
      return undefined // refused by the limits, as any document that does not parse
    }
    return m.byShape(doc)
  }

  /** The limits a lone request is held to (size, parse, fragment expansion, depth), for an APQ registration from a batch. */
  #registrable(r: GraphQLRequest): boolean {
    return !('reason' in this.#checkLimits(r, r.query!))
  }

  /** What a document from outside the manifest is held to: size, parse, fragment expansion, depth (one place for lone requests, batch operations and batch registrations). */
  #checkLimits(r: GraphQLRequest, query: string): { doc: DocumentNode; a: Analysis } | LimitBroken {
    const max = this.#cfg.limits.maxQueryBytes
    // UTF-8 takes one to three bytes per UTF-16 unit: only a text of max/3 to max units needs
    // counting (testing `length > max` first let a text of multi-byte characters past the limit).
    if (query.length > max || (query.length * 3 > max && Buffer.byteLength(query) > max)) return { reason: 'too_large', message: `query of ${Buffer.byteLength(query)} bytes exceeds the limit of ${max}` }
    let doc: DocumentNode
    try {
      doc = r.document
    } catch (err) {
      const e = err instanceof GraphQLError ? err : new GraphQLError(String(err))
      return { reason: 'parse_error', message: e.message, parseError: e }
    }
    const a = this.#analysis(doc, r)
    if (a.tooComplex) return { reason: 'too_complex', message: 'document is too complex to analyse (fragments expand beyond the limit)' }
    const maxDepth = this.#cfg.limits.maxDepth
    if (maxDepth > 0 && a.depth > maxDepth) return { reason: 'too_deep', message: `query depth ${a.depth} exceeds the limit of ${maxDepth}` }
    return { doc, a }
  }

  /** The refusal for a broken limit (400; a lone HTTP request's parse error: parseErrorReply), its message after `prefix` ("batch operation 1: "); a parse error keeps its locations. */
  #limitRefusal(ctx: RequestContext, c: LimitBroken, prefix: string): LocalReply {
    if (c.parseError === undefined) return this.#reject(c.reason, prefix + c.message)
    this.#m.rejections.labels('parse_error').inc()
    const e = c.parseError
    if (prefix === '') return parseErrorReply(e, ctx.req.headers.accept, ctx.subscription === undefined)
    return parseErrorReply(new GraphQLError(prefix + e.message, { source: e.source, positions: e.positions }), ctx.req.headers.accept, false)
  }

  /** log-unknown: each document outside the manifest logged once per worker. */
  #noteUnknown(ctx: RequestContext, r: GraphQLRequest): void {
    const h = r.docHash!
    if (this.#unknownLogged.has(h)) return
    this.#unknownLogged.set(h, true)
    ctx.log.warn({ docHash: h, op: r.opName }, 'operation not in the persisted-documents manifest (safelist log-unknown)')
  }

  #fromApq(ctx: RequestContext, gql: GraphQLRequest, hash: string, query: string): Decision {
    gql.setQuery(query)
    gql.deleteExtension('persistedQuery')
    // A manifest document in the client's own text (#registerShape): run, priced and safelisted as its id.
    const op = this.#byText(gql)
    const decision = this.#admit(ctx, gql, op, op === undefined ? 'apq_hit' : 'manifest')
    if (decision === undefined && op === undefined) gql.persistedId = hash
    return decision
  }

  /**
   * A registration whose text is a manifest document but for formatting and definition order
   * (#byText) is kept under the client's hash, in every safelist mode (a hit is matched to the
   * manifest again, #fromApq). Not kept, every later hash-only request of that client was answered
   * PersistedQueryNotFound and resent with its text: two round trips per operation, for good.
   */
  #registerShape(hash: string, text: string, op: PersistedOperation): void {
    if (this.#cfg.apq.enabled && hash !== op.docHash) this.#apq.register(hash, text)
  }

  #notFound(ctx: RequestContext): LocalReply {
    this.#m.requests.labels('apq_not_found').inc()
    return acceptClass(ctx.req.headers.accept) === 'g' ? STRICT_NOT_FOUND : NOT_FOUND
  }

  #notSupported(ctx: RequestContext): LocalReply {
    this.#m.requests.labels('apq_not_supported').inc()
    return acceptClass(ctx.req.headers.accept) === 'g' ? STRICT_NOT_SUPPORTED : NOT_SUPPORTED
  }

  #reject(reason: string, message: string): LocalReply {
    this.#m.rejections.labels(reason).inc()
    return errorReply('BAD_REQUEST', message)
  }

  #mode(ctx: RequestContext): Mode {
    return (ctx.tenant !== undefined ? this.#tenantModes.get(ctx.tenant) : undefined) ?? this.#cfg.safelist.mode
  }

  /** Batches and non-JSON bodies: nothing to identify; enforce mode refuses what it cannot verify. */
  #opaque(ctx: RequestContext): Decision {
    if (ctx.method === 'GET' || ctx.method === 'HEAD' || ctx.method === 'OPTIONS') return undefined
    // graphql-sse's single connection mode: a graphql route relays PUT (the reservation) and
    // DELETE (stop an operation) bodiless and without GraphQL parameters (exchange.ts): they run
    // nothing, as a GET without a query; its operations come by POST and are checked.
    if ((ctx.method === 'PUT' || ctx.method === 'DELETE') && ctx.route.type === 'graphql') return undefined
    if (this.#mode(ctx) !== 'enforce') return undefined
    this.#m.requests.labels('not_allowed').inc()
    return errorReply('PERSISTED_QUERY_NOT_ALLOWED', 'batched or non-JSON GraphQL requests cannot be checked against the persisted-documents safelist')
  }

  #admit(ctx: RequestContext, gql: GraphQLRequest, op: PersistedOperation | undefined, outcome: string): Decision {
    // GraphQL over HTTP: a mutation never runs from a GET (a link or an <img> in another site's
    // page would make one with the user's cookies, with no CORS preflight). Checked on GETs only.
    if (gql.method === 'GET' && gql.operationType === 'mutation') {
      this.#m.rejections.labels('mutation_over_get').inc()
      return errorReply('METHOD_NOT_ALLOWED', 'mutations cannot be sent with GET; use POST', undefined, { allow: 'POST' })
    }
    if (op !== undefined) {
      // Matched but for formatting (#byText): the backend runs the manifest's text, as for an id.
      if (gql.query !== op.document) gql.setQuery(op.document)
      gql.persistedId = op.id
      this.#m.requests.labels('manifest').inc()
      this.#m.byId.labels(op.id).inc()
      this.#applyPolicy(ctx, gql, op)
      return undefined
    }
    const mode = this.#mode(ctx)
    if (mode === 'enforce') {
      this.#m.requests.labels('not_allowed').inc()
      return errorReply('PERSISTED_QUERY_NOT_ALLOWED', 'operation is not in the persisted-documents manifest')
    }
    const query = gql.query
    // Nothing to run: no document, no hash we know (a subscribe payload with only `documentId`,
    // which this gateway does not resolve, or with nothing). It threw here: a 500 counted as the
    // filter's error and logged for every such message.
    if (query === undefined) return this.#reject('no_query', 'the request carries no query (and no persisted query id this gateway knows)')
    const c = this.#checkLimits(gql, query)
    if ('reason' in c) return this.#limitRefusal(ctx, c, '')
    const { doc, a } = c
    if (mode === 'log-unknown') {
      this.#noteUnknown(ctx, gql)
      outcome = 'unknown_logged'
    }
    this.#m.requests.labels(outcome).inc()
    const cost = a.variableDependent ? analyzeDocument(doc, gql.operationName, gql.variables, this.#settings, this.#info).cost : a.cost
    ctx.cost = cost
    ctx.costSource = 'estimate'
    this.#m.cost.labels('estimate').observe(cost)
    return undefined
  }

  #analysis(doc: DocumentNode, gql: GraphQLRequest): Analysis {
    let byOp = this.#analyses.get(doc)
    if (byOp === undefined) this.#analyses.set(doc, (byOp = new Map()))
    // Keyed by the operation the name selects (the document itself when it selects none), not by
    // the name: made-up operation names, each a new key, grew the map without bound.
    const key = selectOperation(doc, gql.operationName) ?? doc
    let a = byOp.get(key)
    if (a === undefined) {
      a = analyzeDocument(doc, gql.operationName, gql.variables, this.#settings, this.#info)
      byOp.set(key, a)
    }
    return a
  }

  #applyPolicy(ctx: RequestContext, gql: GraphQLRequest, op: PersistedOperation): void {
    let hints = op.hints
    let header = op.hintsHeader
    if (hints === undefined) {
      hints = hintsFor(op, analyzeDocument(op.ast, gql.operationName, gql.variables, this.#settings, this.#info).cost)
      header = encodeHints(hints)
    }
    ctx.cost = hints.cost
    ctx.costSource = hints.costSource
    this.#m.cost.labels(hints.costSource).observe(hints.cost)
    if (op.timeoutMs !== undefined) {
      const d = ctx.startTime + op.timeoutMs
      if (d < ctx.deadline) ctx.deadline = d
    }
    if (op.tier !== undefined) ctx.tier = op.tier
    if (this.#hintExt !== false) gql.setExtension(this.#hintExt, hints)
    if (this.#hintHeader !== false) ctx.setUpstreamHeader(this.#hintHeader, header!)
  }
}

function loadSchemaFile(path: string): SchemaCostInfo {
  let sdl: string
  try {
    sdl = readFileSync(path, 'utf8')
  } catch (err) {
    throw new Error(`cost.schemaFile: cannot read ${path}: ${(err as Error).message}`)
  }
  try {
    return loadCostSchema(sdl)
  } catch (err) {
    throw new Error(`cost.schemaFile ${path}: ${(err as Error).message}`)
  }
}

function manifestFor(cfg: PersistedDocumentsConfig, settings: CostSettings, info: SchemaCostInfo | undefined): Manifest {
  // A schema file changes the estimates: only share compiled manifests built without one.
  if (info !== undefined) return new Manifest(cfg, settings, info)
  let bySettings = manifests.get(cfg)
  if (bySettings === undefined) manifests.set(cfg, (bySettings = new WeakMap()))
  let m = bySettings.get(settings)
  if (m === undefined) bySettings.set(settings, (m = new Manifest(cfg, settings, undefined)))
  return m
}

export const persistedFilter: FilterModule<PersistedFilterConfig> = {
  create: (cfg, deps) => new PersistedFilter(cfg, deps),
}
