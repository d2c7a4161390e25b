// The GraphQL admin endpoint with the seed's schema. `@auth(abac: "...")` on a field is enforced
// by wrapping its resolver: the admin policy decides with the caller's subject, and a denial is
// a GraphQL error with code FORBIDDEN and the policy's reason.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { GraphQLScalarType, Kind, Source, type GraphQLError, type GraphQLObjectType, type GraphQLSchema } from 'graphql'
import { createGraphQLError, createSchema, createYoga, maskError, type Plugin, type YogaServerInstance } from 'graphql-yoga'
import type { Logger } from 'pino'
import { etagOf } from '../config/canonical-json.ts'
import { checkIfMatch, quotaViews, requireTenant, setQuotaAndView, type ApiDeps } from './api.ts'
import type { Action, Subject } from './auth.ts'
import { setDlpPreset } from './dlp-section.ts'
import { HttpError, requestIdFor } from './http-kit.ts'
import { ADMIN_GRAPHQL_LIMITS, bodyTooLarge, checkDocument, scanDocument, type GraphQLLimits, type LimitRefusal } from './graphql-limits.ts'
import type { ControlPlaneMetrics } from './metrics.ts'
import { isQuotaKind } from './quota-section.ts'
import { DatabaseUnavailable, NulInText, StorageFull } from './db.ts'
import { NotFound, PreconditionFailed, ValidationFailed } from './store.ts'

export const ADMIN_SDL = /* GraphQL */ `
  "Guards a field with the admin ABAC policy: the caller needs this attribute."
  directive @auth(abac: String!) on FIELD_DEFINITION

  "An integer from -(2^53-1) to 2^53-1, as a JSON number: daily limits and counters outgrow Int's 32 bits."
  scalar SafeInt

  type Quota {
    kind: String!
    limitPerDay: SafeInt!
    "Units used today (the tenant's day), from the proxies' usage reports."
    usedToday: SafeInt!
    tenant: String!
    "The quota's ETag, as REST's GET /v1/tenants/{id}/quotas/{kind} sends it: what setQuota's ifMatch takes."
    etag: String!
  }

  type Query {
    "Daily quotas of a tenant (default: the caller's tenant claim)."
    quotas(tenant: String): [Quota!]! @auth(abac: "admin.read")
  }

  type Mutation {
    "ifMatch: as REST's If-Match header (the quota's etag, or *): when the quota changed since, nothing is written and the error's extensions.code is PRECONDITION_FAILED."
    setQuota(kind: String!, limitPerDay: Int!, tenant: String, ifMatch: String): Quota! @auth(abac: "admin.write")
    "Sets a tenant's DLP preset (mask_basic, tokenize_strict, …): the caller's tenant or the tenant argument; without either, the default preset. Returns the new config version. ifMatch: the ETag of GET /v1/dlp-tenants/{tenant} (without a tenant, of GET /v1/dlp), or *, as REST's If-Match."
    setDlpPreset(preset: String!, tenant: String, ifMatch: String): Int! @auth(abac: "admin.write")
  }
`

/**
 * Quota values are what the REST API and the document allow (up to 9007199254740991), and
 * counters reach past 2^31 on a busy day: as `Int` (32 bits), one such quota made the whole
 * `quotas` list fail with a masked "Unexpected error.". Output only: `setQuota` keeps taking an
 * `Int!`, so clients declaring `$limit: Int!` keep validating.
 */
const SafeInt = new GraphQLScalarType<number, number>({
  name: 'SafeInt',
  description: 'An integer from -(2^53-1) to 2^53-1, as a JSON number',
  serialize(v) {
    if (typeof v === 'number' && Number.isSafeInteger(v)) return v
    throw createGraphQLError(`SafeInt cannot represent ${String(v)}`)
  },
  parseValue(v) {
    if (typeof v === 'number' && Number.isSafeInteger(v)) return v
    throw createGraphQLError(`SafeInt cannot represent ${JSON.stringify(v)}`)
  },
  parseLiteral(ast) {
    const n = ast.kind === Kind.INT ? Number(ast.value) : Number.NaN
    if (Number.isSafeInteger(n)) return n
    throw createGraphQLError('SafeInt: expected an integer literal from -(2^53-1) to 2^53-1')
  },
})

export interface GraphQLContext {
  subject: Subject
}

/**
 * A refused argument, shaped as every other BAD_USER_INPUT here (the store's validation errors) and
 * as REST refuses the same value: `problems` naming the argument. Without them a client reading
 * `extensions.problems` showed nothing for setQuota's refusals.
 */
function badArgument(message: string, problem: string): GraphQLError {
  return createGraphQLError(message, { extensions: { code: 'BAD_USER_INPUT', problems: [problem] } })
}

function tenantArg(ctx: GraphQLContext, arg: unknown): string {
  const t = typeof arg === 'string' && arg !== '' ? arg : ctx.subject.tenant
  if (t === undefined) throw badArgument('no tenant: pass `tenant:` or use a token with a tenant claim', 'tenant: required (the token has no tenant claim)')
  return t
}

/** GraphQL codes of the statuses the REST helpers throw (HttpError). */
const HTTP_ERROR_CODES: Record<number, string> = { 400: 'BAD_USER_INPUT', 404: 'NOT_FOUND', 409: 'CONFLICT', 412: 'PRECONDITION_FAILED', 503: 'SERVICE_UNAVAILABLE' }

/** The driver's error behind each SERVICE_UNAVAILABLE error (as `originalError` it would get the error masked), for the log. */
const unavailableCauses = new WeakMap<object, unknown>()

function asGraphQLError(err: unknown): never {
  if (err instanceof Error && err.name === 'GraphQLError') throw err
  if (err instanceof ValidationFailed) throw createGraphQLError(err.message, { extensions: { code: 'BAD_USER_INPUT', problems: err.problems } })
  if (err instanceof NotFound) throw createGraphQLError(err.message, { extensions: { code: 'NOT_FOUND' } })
  // REST's 412, with the current ETag (`current`, as in its problem body) to read and retry with.
  if (err instanceof PreconditionFailed) throw createGraphQLError(err.message, { extensions: { code: 'PRECONDITION_FAILED', ...(err.current === undefined ? {} : { current: err.current }) } })
  if (err instanceof NulInText) throw createGraphQLError(err.message, { extensions: { code: 'BAD_USER_INPUT' } })
  // What the shared REST code answers itself (a 503 "no config yet: PUT /v1/config first" before
  // the first document): the same message and status here. Masked as "Unexpected error." it was
  // logged and counted as a bug, and the caller never learned what to do.
  if (err instanceof HttpError) {
    throw createGraphQLError(err.message, {
      extensions: {
        code: HTTP_ERROR_CODES[err.status] ?? (err.status >= 500 ? 'SERVICE_UNAVAILABLE' : 'BAD_USER_INPUT'),
        ...(err.problems === undefined ? {} : { problems: err.problems }),
        ...(err.status >= 500 ? { http: { status: err.status, headers: err.headers, spec: false } } : {}),
      },
    })
  }
  // What REST answers 503 + Retry-After: the request was fine and may be retried. Masked as an
  // "Unexpected error." it read as a bug (and was logged and counted as one).
  if (err instanceof DatabaseUnavailable || err instanceof StorageFull) {
    const full = err instanceof StorageFull
    const e = createGraphQLError(full ? 'the database is out of disk space; nothing was changed, try again once space is freed' : 'the database is unavailable; try again shortly', {
      extensions: { code: full ? 'STORAGE_FULL' : 'SERVICE_UNAVAILABLE', http: { status: 503, headers: { 'retry-after': full ? '30' : '5' }, spec: false } },
    })
    unavailableCauses.set(e, err.cause ?? err)
    throw e
  }
  throw err
}

/** Runs a resolver's work with the store's errors as GraphQL errors (REST maps the same ones to statuses). */
async function mapped<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    return asGraphQLError(err)
  }
}

/**
 * The mutations' `ifMatch`: REST's If-Match, checked inside the commit against the same value
 * (so two admins editing through GraphQL no longer overwrite each other in silence). Absent or
 * null: last writer wins, as a REST write without the header.
 */
function ifMatchOf(ifMatch: string | null | undefined): ((current: unknown) => void) | undefined {
  return ifMatch === undefined || ifMatch === null ? undefined : (current) => checkIfMatch(ifMatch, current, 'ifMatch')
}

type PolicyResource = { type: string; id?: string; tenant?: string }

/**
 * What the policy decides on for each guarded field, given the tenant it acts on: the resource the
 * REST route doing the same read or write names (`PUT /v1/tenants/{t}/quotas/{kind}`,
 * `PUT /v1/dlp-tenants/{t}`, `PUT /v1/dlp`), so a policy keyed by resource type or id rules both
 * APIs alike. With a GraphQL-only type (`graphql.Mutation.setDlpPreset`), a policy that kept DLP
 * presets from operators was bypassed through GraphQL, and one granting quota writes refused them.
 */
const FIELD_RESOURCES: Record<string, (args: Record<string, unknown>, tenant: string | undefined) => PolicyResource> = {
  'Query.quotas': (_args, tenant) => ({ type: 'quotas', ...(tenant ? { tenant } : {}) }),
  'Mutation.setQuota': (args, tenant) => ({ type: 'quotas', ...(typeof args.kind === 'string' ? { id: args.kind } : {}), ...(tenant ? { tenant } : {}) }),
  // Without a tenant it writes the DLP section's defaultPreset: REST's PUT /v1/dlp.
  'Mutation.setDlpPreset': (_args, tenant) => (tenant ? { type: 'dlp-tenants', id: tenant, tenant } : { type: 'dlp' }),
}

export function buildAdminSchema(deps: ApiDeps): GraphQLSchema {
  const schema = createSchema<GraphQLContext>({
    typeDefs: ADMIN_SDL,
    resolvers: {
      SafeInt,
      Quota: {
        etag: (q: { limitPerDay: number }) => etagOf({ limitPerDay: q.limitPerDay }),
      },
      Query: {
        // As REST's GET /v1/tenants/{id}/quotas: NOT_FOUND for a tenant that does not exist, not
        // an empty list that reads as "exists, no quotas" (a typo in the tenant looked fine).
        quotas: async (_root, args: { tenant?: string }, ctx) =>
          mapped(async () => {
            const tenant = tenantArg(ctx, args.tenant)
            const h = deps.store.head()
            if (h !== undefined) requireTenant(h, tenant)
            return quotaViews(deps, tenant)
          }),
      },
      Mutation: {
        setQuota: async (_root, args: { kind: string; limitPerDay: number; tenant?: string; ifMatch?: string | null }, ctx) => {
          const tenant = tenantArg(ctx, args.tenant)
          if (!isQuotaKind(args.kind)) throw badArgument(`unknown quota kind "${args.kind}" (graphql, ingest, embeddings, subscriptions)`, `kind: expected one of graphql | ingest | embeddings | subscriptions, got ${JSON.stringify(args.kind)}`)
          if (args.limitPerDay < 0) throw badArgument('limitPerDay must be >= 0', `limitPerDay: expected a non-negative integer, got ${args.limitPerDay}`)
          const kind = args.kind
          // As REST's PUT: nothing read after the commit (a failed read would report a change made as failed).
          return mapped(async () => (await setQuotaAndView(deps, ctx.subject.sub, tenant, kind, args.limitPerDay, ifMatchOf(args.ifMatch))).quota)
        },
        setDlpPreset: async (_root, args: { preset: string; tenant?: string; ifMatch?: string | null }, ctx) =>
          mapped(() => setDlpPreset(deps.store, ctx.subject.sub, typeof args.tenant === 'string' && args.tenant !== '' ? args.tenant : ctx.subject.tenant, args.preset, ifMatchOf(args.ifMatch))),
      },
    },
  })
  // Enforce @auth: wrap every field that carries it.
  for (const typeName of ['Query', 'Mutation']) {
    // Not instanceof: yoga may load graphql's CommonJS build while this module gets the ESM one.
    const type = schema.getType(typeName) as GraphQLObjectType | undefined
    if (type === undefined || !('getFields' in type)) continue
    for (const [name, field] of Object.entries(type.getFields())) {
      const dir = field.astNode?.directives?.find((d) => d.name.value === 'auth')
      const arg = dir?.arguments?.find((a) => a.name.value === 'abac')?.value
      const attr = arg?.kind === Kind.STRING ? arg.value : undefined
      if (attr === undefined) continue
      const resourceOf = FIELD_RESOURCES[`${typeName}.${name}`]
      if (resourceOf === undefined) throw new Error(`${typeName}.${name} carries @auth but names no policy resource (FIELD_RESOURCES)`)
      const inner = field.resolve!
      field.resolve = async (root, args: Record<string, unknown>, ctx: GraphQLContext, info) => {
        // A String variable is JSON, which may carry a lone UTF-16 surrogate ("\ud800"): not text
        // any id can hold, and the policy engine cannot read it (the REST API refuses the same in
        // a path as a 400). Refused as the caller's input, before the policy is asked.
        for (const k in args) {
          const v = args[k]
          if (typeof v === 'string' && !v.isWellFormed()) throw badArgument(`argument "${k}" is not valid Unicode (it holds a lone UTF-16 surrogate)`, `${k}: must be valid Unicode (it holds a lone UTF-16 surrogate)`)
        }
        // The tenant the resolver acts on (tenantArg: an empty `tenant:` is the caller's claim),
        // so the policy decides on what is written, never on another reading of the argument.
        const tenant = typeof args.tenant === 'string' && args.tenant !== '' ? args.tenant : ctx.subject.tenant
        const d = deps.authorizer.decide(ctx.subject, attr as Action, resourceOf(args, tenant))
        if (!d.allow) {
          // A refused mutation is audited as a refused REST write is (deps.refused); a refused
          // read is logged only, as over REST.
          if (attr !== 'admin.read') await deps.refused?.(ctx.subject.sub, attr, `graphql/${typeName}.${name}`, { reason: d.reason, tenant: tenant ?? null })
          else deps.refusedRead?.(ctx.subject.sub, attr, `graphql/${typeName}.${name}`, d.reason, tenant)
          throw createGraphQLError(`${typeName}.${name} needs "${attr}": ${d.reason}`, { extensions: { code: 'FORBIDDEN', attribute: attr, reason: d.reason } })
        }
        return inner(root, args, ctx, info)
      }
    }
  }
  return schema
}

/**
 * The authenticated subject of each request, keyed by the Node request object: yoga's server
 * context is not a safe per-request channel across its adapters, the request object is.
 */
export const requestSubjects = new WeakMap<IncomingMessage, Subject>()

/**
 * The request id of a GraphQL request, the one its logs, masked errors and `x-request-id` response
 * header carry: the one the HTTP server already gave the response, if it did; else the client's
 * `x-request-id` when it is a plain token; else a new one.
 */
const requestIds = new WeakMap<IncomingMessage, string>()

function requestIdOf(req: IncomingMessage, res?: ServerResponse): string {
  let id = requestIds.get(req)
  if (id === undefined) {
    const set = res?.getHeader('x-request-id')
    id = typeof set === 'string' ? set : requestIdFor(req)
    requestIds.set(req, id)
  }
  return id
}

/** A refusal as yoga answers it: 400 (413 for the body) whatever the Accept header, never masked. */
function refusalError(r: LimitRefusal, refusals: WeakSet<object>, source?: Source): GraphQLError {
  const err = createGraphQLError(r.message, {
    ...(source !== undefined && r.position !== undefined ? { source, positions: [r.position] } : {}),
    extensions: {
      code: r.limit === 'bodyBytes' ? 'PAYLOAD_TOO_LARGE' : 'GRAPHQL_VALIDATION_FAILED',
      limit: r.limit,
      max: r.max,
      // spec: false keeps the status for application/json clients too (GraphQL-over-HTTP would
      // answer a validation error 200 there, and a refusal must not look like a success).
      http: { status: r.limit === 'bodyBytes' ? 413 : 400, spec: false },
    },
  })
  refusals.add(err)
  return err
}

/** Counts the bytes of a streamed body and fails it past the limit (chunked bodies have no Content-Length). */
function limitBody(request: Request, limits: GraphQLLimits, refusals: WeakSet<object>, fetchAPI: { Request: typeof Request; TransformStream: typeof TransformStream }): Request {
  const body = request.body
  if (body === null) return request
  // A native stream needs the native TransformStream (yoga's own body limit makes the same choice).
  const Transform = body instanceof ReadableStream ? globalThis.TransformStream : fetchAPI.TransformStream
  let read = 0
  const limited = body.pipeThrough(
    new Transform<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        read += chunk.byteLength
        if (read > limits.maxBodyBytes) controller.error(refusalError(bodyTooLarge(limits), refusals))
        else controller.enqueue(chunk)
      },
    }),
  )
  return new fetchAPI.Request(request.url, { method: request.method, headers: request.headers, signal: request.signal, body: limited, duplex: 'half' } as RequestInit)
}

/** Content types a POST may carry: JSON (as the REST API) and `application/graphql`, neither of which a browser sends cross-origin without a preflight. */
const POST_BODY_TYPE = /^application\/(?:[a-z.+-]*\+)?json\b|^application\/graphql\b/i

/**
 * A POST must be JSON (or `application/graphql`), as for the REST API: yoga also takes
 * `application/x-www-form-urlencoded`, which a browser page on any origin may send without a
 * preflight; behind a proxy that adds the bearer token from a session cookie (oauth2-proxy and
 * the like) such a form ran `mutation { setQuota … }` for the signed-in admin. The refusal is a
 * 415 with a GraphQL error body (yoga's own 415, for text/plain, had no body at all).
 */
function useJsonPosts(): Plugin<Record<string, unknown>, ServerContext> {
  return {
    onRequestParse({ request }) {
      if (request.method !== 'POST') return
      // As the REST API: a compressed body was parsed as the JSON itself ("POST body sent invalid
      // JSON", echoing the gzip bytes back); no coding is decoded here.
      const coding = (request.headers.get('content-encoding') ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== 'identity')
      if (coding.length > 0) {
        throw createGraphQLError(`expected an uncompressed body, got Content-Encoding "${coding.join(', ').slice(0, 40)}"`, { extensions: { code: 'UNSUPPORTED_MEDIA_TYPE', http: { status: 415, spec: false } } })
      }
      const type = request.headers.get('content-type') ?? ''
      if (POST_BODY_TYPE.test(type)) return
      throw createGraphQLError(`expected a JSON body (content-type: application/json), got "${type.slice(0, 100) || 'none'}"`, { extensions: { code: 'UNSUPPORTED_MEDIA_TYPE', http: { status: 415, spec: false } } })
    },
  }
}

/** What server.ts passes to yoga.handle; the Node adapter adds the response as `res`. */
type ServerContext = { req: IncomingMessage; res?: ServerResponse }

/**
 * Limits checked before execution, in the order a request meets them: the body while it is read,
 * the document's size, tokens and nesting before it is parsed, then depth, aliases and mutation
 * fields before validation (a refused document is not validated further). Each refusal
 * and each unexpected (masked) error is logged with the request id and counted.
 */
function useAdminLimits(limits: GraphQLLimits, logger: Logger, metrics: ControlPlaneMetrics, unexpected: WeakMap<object, unknown>): Plugin<Record<string, unknown>, ServerContext> {
  const refusals = new WeakSet<object>()
  const refused = metrics.graphqlRefusals
  const failures = metrics.graphqlUnexpected
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      const declared = request.headers.get('content-length')
      if (declared !== null && Number(declared) > limits.maxBodyBytes) throw refusalError(bodyTooLarge(limits, Number(declared)), refusals)
      if (requestParser === undefined || request.body === null) return
      const parse = requestParser
      setRequestParser((req) => parse(limitBody(req, limits, refusals, fetchAPI)))
    },
    onParse({ params }) {
      const source = typeof params.source === 'string' ? new Source(params.source) : params.source
      const r = scanDocument(source.body, limits)
      if (r !== undefined) throw refusalError(r, refusals, source)
    },
    onValidate({ params, setResult }) {
      const rs = checkDocument(params.documentAST, limits)
      if (rs.length > 0) setResult(rs.map((r) => refusalError(r, refusals, params.documentAST.loc?.source)))
    },
    onResultProcess({ result, serverContext }) {
      if (!('req' in serverContext)) return
      const req = serverContext.req
      const requestId = requestIdOf(req, serverContext.res)
      const results = Array.isArray(result) ? result : Symbol.asyncIterator in result ? [] : [result]
      for (const res of results) {
        for (const err of res.errors ?? []) {
          if (refusals.has(err)) {
            const ext = err.extensions as { limit: string; max: number }
            refused.labels(ext.limit).inc()
            logger.warn({ requestId, sub: requestSubjects.get(req)?.sub, limit: ext.limit, max: ext.max, detail: err.message }, 'graphql request refused by a limit')
          } else if (err.originalError && unavailableCauses.has(err.originalError)) {
            // As REST's 503: the request id in the answer, the driver's error in the log.
            ;(err.extensions as Record<string, unknown>).requestId = requestId
            const full = (err.extensions as { code?: unknown }).code === 'STORAGE_FULL'
            if (full) metrics.storageFull.inc()
            logger.error({ err: unavailableCauses.get(err.originalError), requestId, sub: requestSubjects.get(req)?.sub, path: err.path }, full ? 'graphql request failed: the database is out of disk space (nothing of the change was kept)' : 'graphql request failed: the database is unavailable')
          } else if (unexpected.has(err)) {
            failures.inc()
            ;(err.extensions as Record<string, unknown>).requestId = requestId
            const original = unexpected.get(err)
            // A resolver's throw arrives wrapped in a GraphQLError: log what was thrown.
            const thrown = original instanceof Error && original.name === 'GraphQLError' && (original as GraphQLError).originalError ? (original as GraphQLError).originalError : original
            logger.error({ err: thrown, requestId, sub: requestSubjects.get(req)?.sub, path: err.path }, 'graphql request failed with an unexpected error')
          }
        }
      }
    },
    onResponse({ response, serverContext }) {
      if ('req' in serverContext) {
        response.headers.set('x-request-id', requestIdOf(serverContext.req, serverContext.res))
        // A body refused before it was read to its end (the body limit hit mid-stream, a 415)
        // leaves the rest of it on the connection: the answer said keep-alive, and a pooled
        // client's next request on that socket failed with ECONNRESET. Closing it says so (as
        // the plugin upload's refusals do), and nothing reads an unbounded rest to discard it.
        if (!serverContext.req.complete) response.headers.set('connection', 'close')
      }
      // server.ts answers HEAD as GET (RFC 9110 §9.3.2): a 405 for another method says so, as the REST routes' do.
      if (response.status === 405 && response.headers.get('allow') === 'GET, POST') response.headers.set('allow', 'GET, HEAD, POST')
    },
  }
}

export function createAdminYoga(deps: ApiDeps): YogaServerInstance<ServerContext, GraphQLContext> {
  // Masked errors keep their original here until the response is processed, where the request
  // (and so its id) is known: maskError itself is told nothing about the request.
  const unexpected = new WeakMap<object, unknown>()
  return createYoga<ServerContext, GraphQLContext>({
    schema: buildAdminSchema(deps),
    context: ({ req }) => {
      const subject = requestSubjects.get(req)
      if (subject === undefined) throw createGraphQLError('unauthenticated', { extensions: { code: 'UNAUTHENTICATED' } })
      return { subject }
    },
    graphqlEndpoint: '/graphql',
    graphiql: false,
    landingPage: false,
    // Yoga's own logger would print errors without the request id: useAdminLimits logs them.
    logging: false,
    maskedErrors: {
      maskError(error, message) {
        // Never isDev: yoga's default reads NODE_ENV=development as "put the original error, its
        // stack and cause (SQL text, file paths) in the response". The log has them.
        const masked = maskError(error, message, false)
        if (masked !== error) unexpected.set(masked, error)
        return masked
      },
    },
    plugins: [useJsonPosts(), useAdminLimits(ADMIN_GRAPHQL_LIMITS, deps.logger, deps.metrics, unexpected)],
    // The REST API sends no CORS headers; yoga's default echoed any Origin with
    // `access-control-allow-credentials: true`, letting any site read the answers of requests a
    // browser sends with ambient credentials (a cookie a fronting proxy turns into the bearer token).
    cors: false,
    // Replaced by useAdminLimits' bound, whose refusal names the limit (yoga's default is 25 MB).
    maxRequestBodySize: false,
    // Nothing in the schema takes an Upload: multipart would only be another way to send a body.
    multipart: false,
    // Parsing and validating a document within the limits costs well under a millisecond; a
    // cache keyed by attacker-chosen documents (1024 of up to maxDocumentChars, an hour) costs memory.
    parserAndValidationCache: false,
  })
}
