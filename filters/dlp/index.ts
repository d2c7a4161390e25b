// DLP on export responses. Requests the route marks as exports (path prefixes, GraphQL operation
// names or response paths) are judged by the export policy before the upstream is called, and
// their responses are streamed through the preset's actions:
//
//   JSON up to maxJsonBytes: read whole, decided before the head (403 DLP_BLOCKED or the
//     transformed body with an `x-dlp` header).
//   NDJSON, CSV, larger JSON: the first lookaheadBytes are inspected before the head (a block
//     there is still a clean 403); then the rest streams, `x-dlp` arrives as a trailer, and a
//     block found later ends NDJSON with an error record (+ trailer) and cuts CSV/JSON (so a
//     partial file can never pass for a complete one).
//
// Everything else on the route pays one map lookup.
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { createBrotliDecompress, createGunzip, createInflate, createInflateRaw, createZstdDecompress } from 'node:zlib'
import type { Counter } from 'prom-client'
import type { DlpFilterConfig } from '../../config/filters/index.ts'
import type { DlpConfig } from '../../config/dlp.ts'
import { counter } from '../../proxy/metrics.ts'
import { charsetOf } from '../../proxy/headers.ts'
import { streamToken } from '../../proxy/sse.ts'
import { errorBody, errorReply, ResponseCut, type Decision, type Filter, type FilterDeps, type FilterModule, type LocalReply, type RequestContext, type ResponseInfo } from '../../proxy/filter.ts'
import { PolicyEvaluationError, type PolicyEvaluator } from '../../policies/engine.ts'
import { ExportSession, type ExportFormat, type PolicyVerdict, type StopReason } from './export-session.ts'
import { aliasFieldHints, graphqlExportMatch } from './graphql-scope.ts'
import { exportCodec, type SingleByteCodec } from './charset.ts'
import type { JsonScope } from './json-rewriter.ts'
import type { RulePack } from './rule-pack.ts'
import { dlpShared, type DlpShared } from './runtime.ts'
import { ACTION_NAMES, BLOCK, compileActions, ExportScanner, FOUND, HASH, MASK, REDACT, TOKENIZE, unprotectedHighRisk } from './scanner.ts'

const kExport = Symbol('igw.dlp.export')
const WHOLE_JSON = { format: 'json', scope: undefined, graphql: true } as const

/** What onRequest decided for an export, read back in onResponse. */
interface ExportPlan {
  preset: string
  /** The rule pack, with the field hints of the request's GraphQL aliases when it has any. */
  pack: RulePack
  actions: Int8Array
  format: 'auto' | ExportFormat
  scope: JsonScope | undefined
  /** A GraphQL request (an export operation, or one under an export path): its result must come back as JSON. */
  graphql: boolean
  request: PolicyVerdict | undefined
  started: number
}

interface PresetPlan {
  name: string
  actions: Int8Array
  /** Preset as the policy sees it: { type: action }. */
  map: Readonly<Record<string, string>>
  unprotected: number
}

type Outcome = 'allowed' | 'blocked' | 'denied' | 'malformed' | 'uninspectable' | 'interrupted'

/** What went wrong below the export's bytes: the upstream transfer, or decoding it (gzip…). */
interface BodyHealth {
  upstreamFailed: boolean
  decodeFailed: boolean
  encoding: string
  /** The upstream's body before decoding (the decoder's source when encoded). */
  source: Readable
}

/**
 * Headers computed over the upstream's bytes: the entity tag (often a hash of the body —
 * Express's, nginx's are not, many others are), Content-MD5, Digest, Content-/Repr-Digest.
 * Sent with the rewritten export they are wrong, and they let a client test guesses at what a
 * mask or token hides offline. Accept-Ranges: a Range request is never passed on.
 */
function dropUpstreamDigests(h: Record<string, string | string[]>): void {
  delete h.etag
  delete h['content-md5']
  delete h.digest
  delete h['content-digest']
  delete h['repr-digest']
  delete h['accept-ranges']
}

/**
 * A HEAD answer describes what a GET would get: the upstream's Content-Length counts the bytes
 * before masking (the GET is rewritten, and streamed without one), and a gzip/deflate/br/zstd body is
 * served decoded.
 */
function headLikeGet(h: Record<string, string | string[]>): void {
  delete h['content-length']
  const codings = codingsOf(String(h['content-encoding'] ?? ''))
  if (codings.length > 0 && codings.every((c) => DECODED.has(c))) delete h['content-encoding']
}

/** The content codings of a Content-Encoding value, in the order they were applied (identity left out). */
function codingsOf(value: string): string[] {
  const out: string[] = []
  for (const c of value.toLowerCase().split(',')) {
    const t = c.trim()
    if (t !== '' && t !== 'identity') out.push(t)
  }
  return out
}

/**
 * Decoders for a Content-Encoding list, the last coding applied undone first (RFC 9110 §8.4:
 * `deflate, gzip` is gzip over deflate); undefined when one of them is not readable. A list was
 * read as one unknown coding: with `uninspectable: pass` such an export left unmasked.
 */
function decodersFor(value: string): Transform[] | undefined {
  const out: Transform[] = []
  for (const c of codingsOf(value).reverse()) {
    const d = decoderFor(c)
    if (d === undefined) return undefined
    if (d !== null) out.push(d)
  }
  return out
}

/**
 * A decoder for the export's content coding: null for identity, undefined for one DLP cannot
 * read. `deflate` is the zlib format (RFC 9110 §8.4.1.2), but servers (old IIS, some Java and PHP
 * stacks) send raw deflate under that name and browsers and curl accept both: the zlib header
 * check on the first two bytes picks the format.
 */
function decoderFor(encoding: string): Transform | null | undefined {
  switch (encoding) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip()
    case 'deflate':
      return new DeflateDecoder()
    case 'br':
      return createBrotliDecompress()
    case 'zstd':
      return createZstdDecompress()
    case 'identity':
    // Not a registered coding, but graphql-yoga (and others) send it for plain bytes, and
    // browsers, curl and undici pass a coding they do not know through as it is: the client reads
    // exactly these bytes, so they are read as identity. An export under it was refused as
    // uninspectable (or, under `pass`, left unread).
    case 'none':
      return null
  }
  return undefined
}

/** The content codings an export is decoded from (served without a Content-Encoding). */
const DECODED: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'br', 'zstd'])

/** `Content-Encoding: deflate` as browsers read it: zlib-wrapped, or raw deflate without the header. */
class DeflateDecoder extends Transform {
  #inner: Transform | undefined
  #head: Buffer | undefined

  #start(first: Buffer): Transform {
    // A zlib header: CM = 8 (deflate), CINFO ≤ 7, and the two bytes a multiple of 31 (RFC 1950).
    const zlib = first.length >= 2 && (first[0]! & 0x0f) === 8 && first[0]! >> 4 <= 7 && ((first[0]! << 8) | first[1]!) % 31 === 0
    const inner = zlib || first.length < 2 ? createInflate() : createInflateRaw()
    inner.on('data', (d: Buffer) => this.push(d))
    inner.on('error', (err) => this.destroy(err))
    this.#inner = inner
    return inner
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let inner = this.#inner
    if (inner === undefined) {
      const b = this.#head === undefined ? chunk : Buffer.concat([this.#head, chunk])
      if (b.length < 2) {
        this.#head = b
        return cb()
      }
      this.#head = undefined
      inner = this.#start(b)
      chunk = b
    }
    inner.write(chunk, () => cb())
  }

  override _flush(cb: TransformCallback): void {
    let inner = this.#inner
    if (inner === undefined) {
      // Fewer than two bytes: not a deflate stream either way; zlib says how it fails.
      inner = this.#start(this.#head ?? Buffer.alloc(0))
      if (this.#head !== undefined) inner.write(this.#head)
    }
    inner.once('end', () => cb())
    inner.end()
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.#inner?.destroy()
    cb(err)
  }
}

/** The stop of an export whose content encoding broke (before the head or mid-stream). */
function undecodable(h: BodyHealth): StopReason {
  return { kind: 'malformed', message: `the export's ${h.encoding} content encoding does not decode, so DLP cannot inspect it` }
}

/**
 * Whether a request path may read differently to the upstream than it does here: a percent
 * escape (`%65xport`, `export%2Fusers`), a backslash, a `;` path parameter, an empty or dot
 * segment (`//`, `/./`, `/../`) or an upper-case letter. Scanned without allocating.
 */
function unusualPath(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c === 37 || c === 92 || c === 59 || (c >= 65 && c <= 90)) return true
    if (c === 47) {
      const d = path.charCodeAt(i + 1)
      if (d === 47 || d === 46) return true
    }
  }
  return false
}

const PERCENT = /%([0-9A-Fa-f]{2})/g

/**
 * The path as the most lenient backend reads it (Go's net/http, ASP.NET, Tomcat, Fastify…):
 * escapes decoded (twice-encoded ones too), `\` as `/`, `;` parameters dropped, empty and dot
 * segments resolved, case folded. An export prefix is matched against this as well, so a client
 * cannot spell an export path so that DLP misses it and the upstream still serves the export.
 */
export function canonicalPath(path: string): string {
  let p = path
  for (let i = 0; i < 3 && p.includes('%'); i++) {
    const d = p.replace(PERCENT, (_m, h: string) => String.fromCharCode(parseInt(h, 16)))
    if (d === p) break
    p = d
  }
  p = p.replaceAll('\\', '/').toLowerCase()
  const segs: string[] = []
  const parts = p.split('/')
  let trailing = false
  for (let i = 0; i < parts.length; i++) {
    let seg = parts[i]!
    const semi = seg.indexOf(';')
    if (semi !== -1) seg = seg.slice(0, semi)
    trailing = i === parts.length - 1 && (seg === '' || seg === '.' || seg === '..') && i > 0
    if (seg === '' || seg === '.') continue
    if (seg === '..') segs.pop()
    else segs.push(seg)
  }
  return segs.length === 0 ? '/' : `/${segs.join('/')}${trailing ? '/' : ''}`
}

/** RFC 7464 JSON text sequences: each record starts with RS (0x1E). */
function isJsonSeq(contentType: string | string[] | undefined): boolean {
  return mediaType(contentType).endsWith('json-seq') // also RFC 8142's application/geo+json-seq
}

/** The media type of a Content-Type, lower-case, without its parameters. */
function mediaType(contentType: string | string[] | undefined): string {
  const ct = (Array.isArray(contentType) ? contentType[0] : contentType)?.toLowerCase() ?? ''
  const semi = ct.indexOf(';')
  return (semi === -1 ? ct : ct.slice(0, semi)).trim()
}

// Record-per-line media types beyond the *ndjson* / *jsonl* / *jsonlines* / *json-seq* (RFC 7464,
// RFC 8142's geo+json-seq) names: Spring's older `application/stream+json` (read record by record, so a block
// deep in a long stream ends it after the clean records, as NDJSON does).
const LINE_TYPES: ReadonlySet<string> = new Set(['application/stream+json', 'application/x-json-stream'])

// GraphQL results in an incremental transport: SSE (GraphQL over SSE) and multipart (incremental delivery).
const STREAMED_GRAPHQL = /^(?:text\/event-stream|multipart\/)/

// Tab-separated values (IANA text/tab-separated-values): CSV read with a tab, whatever csv.delimiter says.
const TSV = 'text/tab-separated-values'

/**
 * The export format from the media type alone: parameters are not looked into (a
 * `profile=".../jsonld"` parameter made a JSON document read as NDJSON, refused as malformed).
 */
function formatOf(contentType: string | string[] | undefined): ExportFormat | undefined {
  const mt = mediaType(contentType)
  if (LINE_TYPES.has(mt) || mt.includes('ndjson') || mt.includes('jsonl') || mt.endsWith('json-seq')) return 'ndjson'
  if (mt === 'text/csv' || mt === 'application/csv' || mt === TSV) return 'csv'
  // text/json: the pre-RFC 4627 name some frameworks still send; the same documents.
  if (mt === 'application/json' || mt === 'text/json' || mt.endsWith('+json')) return 'json'
  return undefined
}

class DlpFilter implements Filter {
  readonly name = 'dlp'
  readonly #cfg: DlpFilterConfig
  readonly #dlp: DlpConfig
  readonly #deps: FilterDeps
  readonly #shared: DlpShared
  readonly #pack: RulePack
  readonly #policy: PolicyEvaluator | undefined
  readonly #presets = new Map<string, PresetPlan>()
  /** exports.paths prefixes in canonicalPath form, for request paths spelled unusually. */
  readonly #canonicalPrefixes: readonly string[]
  readonly #operations: ReadonlySet<string>
  /** exports.graphql.responsePaths as field names, e.g. [["entities"], ["user", "contacts"]]. */
  readonly #responsePaths: readonly (readonly string[])[]
  readonly #actionsTotal: Counter<'type' | 'action'>
  readonly #exportsTotal: Counter<'format' | 'outcome'>
  readonly #policyFailures: Counter<'cause'>

  constructor(cfg: DlpFilterConfig, deps: FilterDeps, shared: DlpShared) {
    this.#cfg = cfg
    this.#dlp = deps.config.dlp
    this.#deps = deps
    this.#shared = shared
    this.#pack = shared.pack
    this.#policy = shared.policy
    // Compile every preset now: a preset naming a type the rule pack lacks fails the config.
    for (const [name, preset] of Object.entries(this.#dlp.presets)) {
      const actions = compileActions(this.#pack, preset)
      this.#presets.set(name, { name, actions, map: preset, unprotected: unprotectedHighRisk(this.#pack, actions) })
    }
    this.#canonicalPrefixes = cfg.exports.paths.map((p) => canonicalPath(p.prefix))
    this.#operations = new Set(cfg.exports.graphql.operations)
    this.#responsePaths = cfg.exports.graphql.responsePaths.map((p) => p.split('.'))
    this.#actionsTotal = counter(deps.registry, { name: 'igw_dlp_actions_total', help: 'Sensitive values acted on in exports, by type and action (pass: found, no action in the preset)', labelNames: ['type', 'action'] })
    this.#exportsTotal = counter(deps.registry, { name: 'igw_dlp_exports_total', help: 'Exports inspected, by format and outcome', labelNames: ['format', 'outcome'] })
    this.#policyFailures = counter(deps.registry, {
      name: 'igw_dlp_policy_failures_total',
      help: 'Export policy evaluations that failed, so the export was denied: cause "runaway" (over the time budget or the memory cap), "error" (a conflict, a bad entrypoint…)',
      labelNames: ['cause'],
    })
    // Failed reloads and a keyring file others can read: logged (rate-limited) and counted here,
    // on this worker's registry, so a scrape sums every worker's.
    shared.keyring.attach({
      logger: deps.logger,
      failures: counter(deps.registry, { name: 'igw_dlp_keyring_reload_failures_total', help: 'DLP keyring reloads that failed (unreadable, half-written or invalid file); the last good keyring stays in use. One per failing version of the file, per worker thread.' }),
    })
  }

  // --- request phase ----------------------------------------------------------------------

  onRequest(ctx: RequestContext): Decision {
    // A WebSocket upgrade relayed as it is (passthrough: no `res`, no hub subscription): its
    // frames reach the client unread, so on a route whose GraphQL operations can be exports, or
    // to an export path, it would carry them unmasked. Refused; `websocket.mode: terminate` keeps
    // subscriptions (and refuses only the operations that are exports).
    if (ctx.upgrade) {
      const graphqlExports = ctx.route.type === 'graphql' && (this.#operations.size > 0 || this.#responsePaths.length > 0)
      if (!graphqlExports && this.#match(ctx) === undefined) return undefined
      return this.#refuseSocket(ctx, 'json', 'a WebSocket relayed unread (websocket.mode: passthrough) cannot carry DLP exports; use websocket.mode: terminate, or HTTP')
    }
    // graphql-sse's single connection mode: an operation carrying a reservation token is
    // answered 202 and its results go out on the token's GET stream, where no response phase can
    // tie them to it (DLP would vet an empty 202 while the export went out unread). Refused
    // (fail closed) where it can be an export: an export operation, or anything carrying a token
    // when exports are found by response path. Distinct connections mode answers each operation
    // on its own response, which is inspected.
    if (ctx.route.type === 'graphql' && ctx.subscription === undefined && streamToken(ctx.req.headers, ctx.url) !== undefined) {
      if (this.#responsePaths.length > 0 || this.#match(ctx) !== undefined) {
        return this.#refuseSocket(ctx, 'json', "an export is not served on graphql-sse's single connection mode (its results go out on a shared event stream DLP cannot tie to it); use distinct connections mode", undefined, 'sse-single-connection')
      }
    }
    const match = this.#match(ctx)
    if (match === undefined) return undefined
    const preset = this.#presetFor(ctx)
    this.#shared.keyring.maybeRefresh(performance.now())
    let request: PolicyVerdict | undefined
    if (this.#policy !== undefined) {
      request = this.#judge(ctx, preset, match.format === 'auto' ? 'auto' : match.format, 'request', 0)
      if (!request.allow) {
        this.#exportsTotal.labels(match.format, 'denied').inc()
        this.#audit(ctx, preset.name, match.format, 'denied', undefined, request, undefined)
        return errorReply('DLP_BLOCKED', request.reason, { preset: preset.name, policy: this.#dlp.policy.entrypoint })
      }
    }
    // An operation on a socket the gateway terminates: its results come back through the
    // subscription hub, where no response phase runs, so nothing would mask them. Refused (fail
    // closed); the same export over HTTP is served masked.
    if (ctx.subscription !== undefined) return this.#refuseSocket(ctx, match.format, 'an export is not served over a WebSocket; request it over HTTP', request)
    ctx.locals.set(kExport, { preset: preset.name, pack: this.#packFor(ctx), actions: preset.actions, format: match.format, scope: match.scope, graphql: match.graphql === true || ctx.graphql !== undefined, request, started: performance.now() } satisfies ExportPlan)
    // Compressed bytes cannot be inspected; ask for identity (a gzip reply is still decoded).
    ctx.setUpstreamHeader('accept-encoding', 'identity')
    // A byte range of the upstream's export is a record cut from its context (the CSV header
    // row, the key naming a value), and its offsets mean nothing after the rewrite: exports are
    // always fetched and vetted whole (a 200 is a valid answer to a Range request).
    ctx.setUpstreamHeader('range', null)
    ctx.setUpstreamHeader('if-range', null)
    // Entity tags name the upstream's bytes, which the client never gets (they are dropped
    // from the response below): a 304 or 412 to a guessed tag would tell what a mask hid.
    ctx.setUpstreamHeader('if-none-match', null)
    ctx.setUpstreamHeader('if-match', null)
    // Nor may a filter after this one answer them (a cache after DLP in the chain holds the
    // upstream's head: its 304 to `If-None-Match: *` handed out that ETag, and a 304 or 200 to
    // a guessed one told whether the guess at the unmasked bytes was right). No client holds a
    // tag of an export (none is ever sent with one), so nothing is lost.
    const h = ctx.req.headers
    if (h['if-none-match'] !== undefined || h['if-match'] !== undefined) {
      delete h['if-none-match']
      delete h['if-match']
    }
    return undefined
  }

  #refuseSocket(ctx: RequestContext, format: string, reason: string, verdict?: PolicyVerdict, transport = 'websocket'): LocalReply {
    const preset = this.#presetFor(ctx)
    this.#exportsTotal.labels(format, 'denied').inc()
    this.#audit(ctx, preset.name, format, 'denied', { transport, reason }, verdict, undefined)
    return errorReply('DLP_BLOCKED', reason, { preset: preset.name })
  }

  #match(ctx: RequestContext): { format: 'auto' | ExportFormat; scope: JsonScope | undefined; graphql?: true } | undefined {
    const paths = this.#cfg.exports.paths
    if (paths.length) {
      const url = ctx.url
      const q = url.indexOf('?')
      const path = q === -1 ? url : url.slice(0, q)
      for (const p of paths) if (path.startsWith(p.prefix)) return { format: p.format, scope: undefined }
      // `/api/%65xport/`, `/api//export/`, `/api/x/../export/`, `/API/Export/`: not the prefix
      // here, the export to a backend that decodes, cleans or folds the path.
      if (unusualPath(path)) {
        const canonical = canonicalPath(path)
        const prefixes = this.#canonicalPrefixes
        for (let i = 0; i < prefixes.length; i++) if (canonical.startsWith(prefixes[i]!)) return { format: paths[i]!.format, scope: undefined }
      }
    }
    if (ctx.route.type !== 'graphql' || (this.#operations.size === 0 && this.#responsePaths.length === 0)) return undefined
    const gql = ctx.graphql
    // A POST that is no single GraphQL request is a batch (an array of them): DLP cannot tell
    // which operations it holds, so its whole response is an export.
    if (gql === undefined) return ctx.method === 'POST' ? WHOLE_JSON : undefined
    // No query text (a persisted hash or documentId the upstream resolves itself) or one that
    // does not parse here (over the parser's token limit): which operation runs and what it
    // answers is unknown, so all of it is inspected. For exports.graphql.operations too: the
    // operationName beside a hash is only the client's word, and without one a hash of the
    // export operation came back unmasked.
    if (gql.query === undefined) return WHOLE_JSON
    let doc
    try {
      doc = gql.document
    } catch {
      return WHOLE_JSON
    }
    let scope: JsonScope | undefined
    let matched = false
    if (this.#responsePaths.length) {
      const m = graphqlExportMatch(doc, gql.operationName, this.#responsePaths)
      matched = m.matched
      scope = m.paths === undefined ? undefined : { paths: m.paths }
    }
    if (matched) return { format: 'json', scope, graphql: true }
    if (this.#operations.size) {
      const name = gql.opName
      if (name !== undefined && this.#operations.has(name)) return { format: 'json', scope, graphql: true }
    }
    return undefined
  }

  /**
   * The rule pack for an export's response: a GraphQL response is keyed by the aliases the
   * client chose, so each alias also carries the field-name hints of the fields it renames
   * (`{ entities { a: ssn } }` must not make a bare SSN under "a" pass as an id). A batch: every
   * operation's aliases. A document that does not parse here has none to read.
   */
  #packFor(ctx: RequestContext): RulePack {
    const pack = this.#pack
    const gql = ctx.graphql
    const requests = gql !== undefined ? [gql] : ctx.batch?.requests
    if (requests === undefined) return pack
    let extra: Map<string, number> | undefined
    for (const r of requests) {
      if (r?.query === undefined) continue
      let doc
      try {
        doc = r.document
      } catch {
        continue
      }
      const hints = aliasFieldHints(doc, (k) => pack.fieldHint(k))
      if (hints.size === 0) continue
      if (extra === undefined) extra = hints
      else for (const [k, v] of hints) extra.set(k, (extra.get(k) ?? 0) | v)
    }
    return extra === undefined ? pack : pack.withFieldHints(extra)
  }

  #presetFor(ctx: RequestContext): PresetPlan {
    const tenant = ctx.tenant
    const name = (tenant !== undefined ? this.#dlp.tenants[tenant]?.preset : undefined) ?? this.#cfg.preset ?? this.#dlp.defaultPreset!
    return this.#presets.get(name)!
  }

  #judge(ctx: RequestContext, preset: PresetPlan, format: string, phase: 'request' | 'stream', seen: number): PolicyVerdict {
    const types = this.#pack.types
    const detected: string[] = []
    const untokenized: string[] = []
    for (const t of types) {
      if ((seen & (1 << t.index)) === 0) continue
      detected.push(t.name)
      if ((preset.unprotected & (1 << t.index)) !== 0) untokenized.push(t.name)
    }
    const input = {
      preset: preset.name,
      tenant: ctx.tenant ?? null,
      route: this.#deps.routeName,
      format,
      phase,
      actions: preset.map,
      detected,
      high_risk_types: types.filter((t) => t.risk === 'high').map((t) => t.name),
      contains_high_risk_without_tokenization: untokenized.length > 0,
      high_risk_without_tokenization: untokenized,
    }
    const entrypoint = this.#dlp.policy.entrypoint
    let v: PolicyVerdict | undefined
    try {
      v = this.#policy!.evaluate<PolicyVerdict>(input, entrypoint)
    } catch (err) {
      const runawayMs = err instanceof PolicyEvaluationError ? err.runawayMs : undefined
      this.#policyFailures.labels(runawayMs === undefined ? 'error' : 'runaway').inc()
      ctx.log.error({ err: { message: (err as Error).message }, ...(runawayMs === undefined ? {} : { durationMs: Math.round(runawayMs) }) }, 'DLP policy evaluation failed')
      // Its own reason (the client's and the audit line's): "gave no decision" sent an operator
      // looking for a rule that does not match when the policy failed or ran away. The cause
      // itself (file and line of a conflict) stays in the log.
      return { allow: false, reason: `export policy ${entrypoint} failed: ${runawayMs === undefined ? 'evaluation error' : 'over its time or memory budget'}` }
    }
    // An undefined or malformed decision denies: the policy is the gate, not a hint. A null one
    // (`decision := null`) too: reading its `allow` threw, a 500 instead of the policy's 403.
    if (v === undefined || v === null || typeof v !== 'object' || typeof v.allow !== 'boolean') return { allow: false, reason: `export policy ${entrypoint} gave no decision` }
    return { allow: v.allow, reason: typeof v.reason === 'string' ? v.reason : v.allow ? 'allowed' : 'denied by policy' }
  }

  // --- response phase ---------------------------------------------------------------------

  onResponse(ctx: RequestContext, res: ResponseInfo): void | Promise<void> {
    const plan = ctx.locals.get(kExport) as ExportPlan | undefined
    if (plan === undefined) return
    // igw's own reply in place of the export (a filter's refusal or fail-closed 500 later in the
    // chain): no export to inspect. Read as one, an error JSON was counted and audited as an
    // export and given an `x-dlp` summary.
    if (res.refused) return
    // A local 200 is content another filter answered with (a cache hit when the cache sits
    // after DLP in the chain): it is an export like any other. Local errors carry no data; a
    // local 304 (that cache revalidating) carries the stored head, whose ETag and digests are
    // the upstream's, computed over the unmasked bytes.
    if (res.local && res.status !== 200) {
      if (res.status === 304) dropUpstreamDigests(res.headers)
      return
    }
    // The upstream's own `x-dlp` says nothing about what DLP did (a stream's counts come as a
    // trailer, after a head that carried the upstream's value).
    delete res.headers['x-dlp']
    if (res.status === 204 || res.status === 304 || ctx.method === 'HEAD') {
      dropUpstreamDigests(res.headers)
      if (ctx.method === 'HEAD') headLikeGet(res.headers)
      return
    }
    if (res.status === 206) {
      // Partial content (the Range header is not sent upstream, yet a backend answered with a
      // part): a piece cut from its context cannot be vetted.
      this.#exportsTotal.labels(plan.format, 'uninspectable').inc()
      const message = 'export is partial content (206), which DLP cannot inspect'
      this.#audit(ctx, plan.preset, plan.format, 'uninspectable', undefined, plan.request, { kind: 'malformed', message })
      res.refuse(errorReply('DLP_BLOCKED', message, { preset: plan.preset }))
      return
    }
    const ctype = res.headers['content-type']
    // A GraphQL server answers in the transport the client's Accept asks for: an export operation
    // asked with `text/event-stream` (graphql-yoga, graphql-sse) or `multipart/mixed` (@defer,
    // @stream) came back in a frame DLP does not read, so `uninspectable: pass` let every value
    // out as it was. That is the client's choice, not the upstream's kind of content: always refused.
    if (plan.graphql && STREAMED_GRAPHQL.test(mediaType(ctype))) {
      const message = `export has content type "${mediaType(ctype)}", which DLP cannot inspect; request a GraphQL export with Accept: application/json`
      this.#exportsTotal.labels(plan.format, 'uninspectable').inc()
      this.#audit(ctx, plan.preset, plan.format, 'uninspectable', undefined, plan.request, { kind: 'malformed', message })
      res.refuse(errorReply('DLP_BLOCKED', message, { preset: plan.preset }))
      return
    }
    const format = plan.format === 'auto' ? formatOf(ctype) : plan.format
    const encoding = String(res.headers['content-encoding'] ?? 'identity').trim().toLowerCase()
    const codec = format !== undefined ? exportCodec(charsetOf(ctype)) : undefined
    const decoders = codec !== undefined ? decodersFor(encoding) : undefined
    if (format === undefined || codec === undefined || decoders === undefined) {
      const what = codec !== undefined ? `content encoding "${encoding}"` : `content type "${String(ctype ?? 'none')}"`
      this.#exportsTotal.labels(plan.format, 'uninspectable').inc()
      if (this.#cfg.uninspectable === 'pass') {
        this.#audit(ctx, plan.preset, plan.format, 'uninspectable', undefined, plan.request, undefined)
        return
      }
      this.#audit(ctx, plan.preset, plan.format, 'uninspectable', undefined, plan.request, { kind: 'malformed', message: `export has ${what}, which DLP cannot inspect` })
      res.refuse(errorReply('DLP_BLOCKED', `export has ${what}, which DLP cannot inspect`, { preset: plan.preset }))
      return
    }
    // `format: auto`: the request phase was asked with format "auto", before the media type was
    // known. A policy deciding by format (no CSV for this tenant) allowed every such export, and
    // the stream phase asks only when a high-risk type shows up: asked again, now with the format.
    if (plan.format === 'auto' && this.#policy !== undefined) {
      const preset = this.#presets.get(plan.preset)!
      const v = this.#judge(ctx, preset, format, 'request', 0)
      if (!v.allow) {
        this.#exportsTotal.labels(format, 'denied').inc()
        this.#audit(ctx, plan.preset, format, 'denied', undefined, v, undefined)
        res.refuse(errorReply('DLP_BLOCKED', v.reason, { preset: plan.preset, policy: this.#dlp.policy.entrypoint }))
        return
      }
      plan.request = v
    }
    // What the client gets is not the upstream's body: its tag and digests describe bytes that
    // still hold every value DLP rewrites (a hash of them confirms a guess at a masked value).
    dropUpstreamDigests(res.headers)
    const current = res.body
    let body = Buffer.isBuffer(current) ? Readable.from([current]) : current
    const health: BodyHealth = { upstreamFailed: false, decodeFailed: false, encoding, source: body }
    body.on('error', () => (health.upstreamFailed = true))
    if (decoders.length > 0) delete res.headers['content-encoding']
    for (const decoder of decoders) {
      decoder.on('error', () => {
        if (!health.upstreamFailed) health.decodeFailed = true
      })
      body.on('error', (err) => decoder.destroy(err))
      body = body.pipe(decoder)
    }
    const delimiter = mediaType(ctype) === TSV ? '\t' : this.#cfg.csv.delimiter
    return this.#inspect(ctx, res, plan, format, codec, delimiter, body, health)
  }

  async #inspect(ctx: RequestContext, res: ResponseInfo, plan: ExportPlan, format: ExportFormat, codec: SingleByteCodec | null, delimiter: string, upstream: Readable, health: BodyHealth): Promise<void> {
    const preset = this.#presets.get(plan.preset)!
    const scanner = new ExportScanner(plan.pack, preset.actions, this.#shared.keyring.tokenizer)
    const session = new ExportSession(scanner, {
      format,
      codec: codec ?? undefined,
      scope: plan.scope,
      maxTokenChars: this.#cfg.maxValueBytes,
      // An NDJSON record is a JSON document held whole until it ends: the bound of one read whole.
      maxRecordChars: this.#cfg.maxJsonBytes,
      csvHeader: this.#cfg.csv.header,
      csvDelimiter: delimiter,
      judge: this.#policy === undefined ? undefined : (s) => this.#judge(ctx, preset, format, 'stream', s.detected),
    })
    const limit = format === 'json' ? this.#cfg.maxJsonBytes : this.#cfg.lookaheadBytes
    let out: Buffer[]
    let ended: boolean
    try {
      ;({ out, ended } = await lookahead(upstream, health.source, session, limit))
    } catch {
      if (ctx.res?.destroyed === true) {
        // The client left while the export was read: no answer to give, only the audit line.
        this.#finish(ctx, plan, session, 'before-head', 'the client went away before the export was inspected')
        return
      }
      if (!health.decodeFailed) {
        // The upstream failed before the head: the proxy answers 502/504 itself; this export
        // still gets its audit line (and the failure is not DLP's, so not a filter error).
        this.#finish(ctx, plan, session, 'before-head', 'the upstream failed before the export was inspected')
        res.refuse(errorReply('UPSTREAM_UNAVAILABLE', 'the upstream failed before the export was inspected'))
        return
      }
      session.stop = undecodable(health)
      out = []
      ended = false
    }
    if (ended && session.stop === undefined) {
      const last = await session.end()
      if (last !== undefined) out.push(last)
    }
    if (session.stop !== undefined) {
      this.#finish(ctx, plan, session, 'before-head')
      const s = session.stop
      const ext: Record<string, unknown> = { preset: plan.preset }
      if (s.type !== undefined) Object.assign(ext, { type: s.type, count: s.count, rule: s.rule })
      if (s.kind === 'policy') ext.policy = this.#dlp.policy.entrypoint
      res.refuse(errorReply('DLP_BLOCKED', s.message, ext))
      return
    }
    delete res.headers['content-length']
    if (ended) {
      res.headers['x-dlp'] = this.#summary(plan.preset, session)
      res.body = out.length === 1 ? out[0]! : Buffer.concat(out)
      this.#finish(ctx, plan, session, 'complete')
      return
    }
    // The counts go out as an `x-dlp` trailer (chunked), announced in the head. An HTTP/1.0
    // client gets no chunked framing (the connection's close ends its response), and node:http
    // refuses a Trailer header there: announced, it made every streamed export to such a client
    // (nginx's default `proxy_http_version 1.0`) a 500.
    if (ctx.res?.useChunkedEncodingByDefault !== false) res.headers.trailer = 'x-dlp'
    const stream = new DlpStream(this, ctx, plan, session, upstream, health, format === 'ndjson' && isJsonSeq(res.headers['content-type']))
    for (const b of out) stream.push(b)
    upstream.on('error', (err) => stream.destroy(err))
    upstream.pipe(stream)
    upstream.resume()
    res.body = stream
  }

  /** `preset=…; masked=…; tokenized=…; hashed=…; redacted=…; rules=pack@version[; blocked=type:n]`. */
  summary(preset: string, session: ExportSession): string {
    return this.#summary(preset, session)
  }

  #summary(preset: string, session: ExportSession): string {
    const s = session.scanner
    let v = `preset=${preset}; masked=${s.total(MASK)}; tokenized=${s.total(TOKENIZE)}; hashed=${s.total(HASH)}; redacted=${s.total(REDACT)}; rules=${this.#pack.name}@${this.#pack.version}`
    const stop = session.stop
    if (stop?.type !== undefined) v += `; blocked=${stop.type}:${stop.count}`
    else if (stop !== undefined) v += `; stopped=${stop.kind}`
    return v
  }

  /** Metrics and the audit line, once per export. `interrupted`: why it ended early (no verdict stopped it). */
  finish(ctx: RequestContext, plan: ExportPlan, session: ExportSession, phase: 'before-head' | 'complete' | 'mid-stream', interrupted?: string): void {
    this.#finish(ctx, plan, session, phase, interrupted)
  }

  #finish(ctx: RequestContext, plan: ExportPlan, session: ExportSession, phase: 'before-head' | 'complete' | 'mid-stream', interrupted?: string): void {
    const s = session.scanner
    const types = this.#pack.types
    const counts: Record<string, Record<string, number>> = {}
    for (const t of types) {
      for (let a = 0; a <= FOUND; a++) {
        const n = s.count(t.index, a)
        if (n === 0) continue
        const action = a === FOUND ? 'pass' : ACTION_NAMES[a]!
        ;(counts[t.name] ??= {})[action] = n
        this.#actionsTotal.labels(t.name, action).inc(n)
        // Per-tenant usage (control-plane statements) reads this when the request ends.
        const key = `${t.name}:${action}`
        const per = (ctx.dlpActions ??= {})
        per[key] = (per[key] ?? 0) + n
      }
    }
    const stop = session.stop
    const outcome: Outcome = stop === undefined ? (interrupted !== undefined ? 'interrupted' : 'allowed') : stop.kind === 'block' ? 'blocked' : stop.kind === 'policy' ? 'denied' : 'malformed'
    this.#exportsTotal.labels(session.format, outcome).inc()
    const verdict = session.lastVerdict ?? plan.request
    const detail: Record<string, unknown> = { counts, rules: Object.fromEntries(s.ruleCounts), records: session.records, bytesIn: session.bytesIn, bytesOut: session.bytesOut, phase, ms: Math.round(performance.now() - plan.started) }
    if (stop === undefined && interrupted !== undefined) detail.interrupted = interrupted
    this.#audit(ctx, plan.preset, session.format, outcome, detail, verdict, stop)
  }

  /** One line per export; counts, rule ids and decisions only, never a value. */
  #audit(ctx: RequestContext, preset: string, format: string, outcome: Outcome, detail: Record<string, unknown> | undefined, verdict: PolicyVerdict | undefined, stop: StopReason | undefined): void {
    ctx.log.info(
      {
        audit: 'dlp.export',
        // The request's logger names a resolved tenant already (a second `tenant` key made the
        // line JSON with a duplicate key); an anonymous export says null outright.
        ...(ctx.tenant === undefined ? { tenant: null } : {}),
        preset,
        format,
        outcome,
        ...detail,
        policy: verdict === undefined ? null : { allow: verdict.allow, reason: verdict.reason },
        ...(stop === undefined ? {} : { stop: { kind: stop.kind, type: stop.type, count: stop.count, rule: stop.rule, message: stop.message } }),
      },
      'dlp export',
    )
  }
}

/**
 * Feed the session until `limit` bytes are in, the body ends, or the export stops. Rejects when
 * the body fails, or is closed before its end (`source`: the upstream's body under a decoder) —
 * the client left, and the proxy dropped the upstream transfer without an error.
 */
function lookahead(body: Readable, source: Readable, session: ExportSession, limit: number): Promise<{ out: Buffer[]; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = []
    let seen = 0
    let busy = false
    let endSeen = false
    const finish = (ended: boolean) => {
      body.off('data', onData)
      body.off('end', onEnd)
      body.off('error', onError)
      body.off('close', onClose)
      source.off('close', onSourceClose)
      body.pause()
      resolve({ out, ended })
    }
    const onData = (chunk: Buffer) => {
      body.pause()
      busy = true
      seen += chunk.length
      session.write(chunk).then((b) => {
        busy = false
        if (b !== undefined) out.push(b)
        if (session.stop !== undefined) finish(false)
        else if (endSeen) finish(true)
        else if (seen >= limit) finish(false)
        else body.resume()
      }, reject)
    }
    const onEnd = () => {
      endSeen = true
      if (!busy) finish(true)
    }
    const onError = (err: Error) => reject(err)
    const onClose = () => {
      if (!endSeen) reject(new Error('the export body closed before its end'))
    }
    const onSourceClose = () => {
      if (!source.readableEnded) reject(new Error('the upstream body closed before its end'))
    }
    body.on('data', onData)
    body.on('end', onEnd)
    body.on('error', onError)
    body.on('close', onClose)
    if (source !== body) source.on('close', onSourceClose)
  })
}

/** The rest of a streamed export, after the lookahead went out with the head. */
class DlpStream extends Transform {
  readonly #filter: DlpFilter
  readonly #ctx: RequestContext
  readonly #plan: ExportPlan
  readonly #session: ExportSession
  readonly #upstream: Readable
  readonly #health: BodyHealth
  /** application/json-seq: the error record starts with RS, like every record. */
  readonly #jsonSeq: boolean
  #done = false

  constructor(filter: DlpFilter, ctx: RequestContext, plan: ExportPlan, session: ExportSession, upstream: Readable, health: BodyHealth, jsonSeq: boolean) {
    super({ highWaterMark: 64 * 1024 })
    this.#jsonSeq = jsonSeq
    this.#filter = filter
    this.#ctx = ctx
    this.#plan = plan
    this.#session = session
    this.#upstream = upstream
    this.#health = health
  }

  /**
   * Destroyed before the export ended (the upstream failed, its encoding broke, or the client
   * left): what went out was vetted, and it is counted and audited like any other export.
   */
  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    // Without chunked framing (HTTP/1.0) the client reads the connection's close as the end of a
    // complete export: a cut (a block, an encoding that breaks) resets it instead, a read error
    // to the client, so a partial file cannot pass for the whole one.
    const res = this.#ctx.res
    if (err !== null && res !== undefined && res.headersSent && !res.chunkedEncoding && res.socket?.destroyed === false) res.socket.resetAndDestroy()
    if (!this.#done) {
      this.#done = true
      const h = this.#health
      if (h.decodeFailed && !h.upstreamFailed) {
        this.#session.stop ??= undecodable(h)
      }
      const why = h.upstreamFailed ? 'the upstream failed mid-stream' : 'the client went away mid-stream'
      this.#filter.finish(this.#ctx, this.#plan, this.#session, 'mid-stream', why)
    }
    cb(err)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#done) return cb()
    this.#session.write(chunk).then((out) => {
      if (out !== undefined) this.push(out)
      if (this.#session.stop !== undefined) this.#stopped()
      cb()
    }, cb)
  }

  override _flush(cb: TransformCallback): void {
    if (this.#done) return cb()
    this.#session.end().then((out) => {
      if (out !== undefined) this.push(out)
      if (this.#session.stop !== undefined) {
        this.#stopped()
        return cb()
      }
      this.#done = true
      this.#ctx.res?.addTrailers({ 'x-dlp': this.#filter.summary(this.#plan.preset, this.#session) })
      this.#filter.finish(this.#ctx, this.#plan, this.#session, 'complete')
      cb()
    }, cb)
  }

  /** A block or a policy denial after the head went out. */
  #stopped(): void {
    if (this.#done) return
    this.#done = true
    const session = this.#session
    const stop = session.stop!
    this.#filter.finish(this.#ctx, this.#plan, session, 'mid-stream')
    // Stop the upstream quietly (no error: a deliberate stop, not an upstream failure).
    this.#upstream.unpipe(this)
    this.#upstream.destroy()
    // A content-encoded export: `upstream` is the decoder; destroying it leaves its source (the
    // upstream transfer) paused with the connection open until the backend gives up.
    const source = this.#health.source
    if (source !== this.#upstream) source.destroy()
    if (session.format === 'ndjson') {
      // NDJSON carries the refusal in band: a GraphQL-shaped error record after the last
      // complete record, then the trailer; the response ends cleanly.
      const ext: Record<string, unknown> = { preset: this.#plan.preset, records: session.records }
      if (stop.type !== undefined) Object.assign(ext, { type: stop.type, count: stop.count, rule: stop.rule })
      const lead = (session.bytesOut > 0 ? '\n' : '') + (this.#jsonSeq ? '\x1e' : '')
      this.push(`${lead}${errorBody('DLP_BLOCKED', stop.message, ext)}\n`)
      this.#ctx.res?.addTrailers({ 'x-dlp': this.#filter.summary(this.#plan.preset, session) })
      this.push(null)
      return
    }
    // CSV and JSON have no place for an error record: cut the response so that no client can
    // take the partial file for a complete one (the audit line and metrics say why).
    this.destroy(new ResponseCut('DLP_BLOCKED', `DLP_BLOCKED: ${stop.kind}`))
  }
}

export const dlpFilter: FilterModule<DlpFilterConfig> = {
  create: async (cfg, deps) => new DlpFilter(cfg, deps, await dlpShared(deps.config.dlp)),
}
