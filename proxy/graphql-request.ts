// The GraphQL request as the filters see it: parsed once from the body (POST) or the query
// string (GET), with the document parsed lazily and cached across requests. The original bytes
// go upstream untouched unless a filter edits the request; then it is serialized once.
import { createHash } from 'node:crypto'
import { GraphQLError, getOperationAST, parse, type DocumentNode, type OperationTypeNode } from 'graphql'
import { LRUCache } from 'lru-cache'
import { jsonMembers, MAX_JSON_DEPTH } from '../config/json-depth.ts'
import { hasRespelledNumber, keepClientNumberText } from '../config/json-numbers.ts'

export type OperationType = 'query' | 'mutation' | 'subscription'

/** The query-string parameters GraphQL over HTTP gives meaning to, and Relay's name for `documentId`. */
const GET_PARAMETERS = ['query', 'operationName', 'variables', 'extensions', 'documentId', 'doc_id'] as const

// Parsing dominates the cost of reading a GraphQL request; clients repeat the same few
// documents, so parsed ASTs are kept — bounded by their heap size, estimated from the text: an
// AST without locations measured ~35 bytes of heap per character of query (graphql 16, Node 24).
// Sized by text alone, 8 MiB of distinct queries a client makes up held ~280 MB per worker.
const AST_BYTES_PER_CHAR = 36
const documentCache = new LRUCache<string, DocumentNode>({
  maxSize: 64 * 1024 * 1024,
  sizeCalculation: (_doc, key) => key.length * (AST_BYTES_PER_CHAR + 2) + 256,
})

/** Reads a batch item's variables again from the client's text, numbers as spelled. */
type ExactVariables = () => unknown

/**
 * The longest request target an edited GraphQL GET is sent upstream with; longer, it is sent as a
 * POST (rewrittenGet). Half of the smallest common request-line limit (nginx's and Apache's 8 KiB),
 * so the rest of the head fits in node:http's 16 KiB as well.
 */
const MAX_REWRITTEN_GET_TARGET = 4096

export class GraphQLRequestError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'GraphQLRequestError'
  }
}

export class GraphQLRequest {
  query: string | undefined
  operationName: string | undefined
  variables: Record<string, unknown> | undefined
  extensions: Record<string, unknown> | undefined
  /** Set by the persisted-queries filter when the request named a persisted or APQ id. */
  persistedId: string | undefined = undefined
  /** GraphQL-over-HTTP persisted document id (`documentId` in the body/query string), if any. */
  documentId: string | undefined = undefined
  /** How the client named it: `documentId`, or Relay's `doc_id` (sent on so if the request is edited). */
  documentIdMember: 'documentId' | 'doc_id' = 'documentId'
  readonly method: 'GET' | 'POST'
  /** The bytes as received (POST); forwarded as-is while `dirty` is false. */
  readonly raw: Buffer | undefined
  /** True once a filter changed query, variables or extensions. */
  dirty = false
  /** A filter replaced the variables: serialize them as they are now. */
  #variablesSet = false

  #document: DocumentNode | undefined = undefined
  #parseError: GraphQLError | undefined = undefined
  #docHash: string | undefined = undefined

  constructor(
    method: 'GET' | 'POST',
    raw: Buffer | undefined,
    query: string | undefined,
    operationName: string | undefined,
    variables: Record<string, unknown> | undefined,
    extensions: Record<string, unknown> | undefined,
  ) {
    this.method = method
    this.raw = raw
    this.query = query
    this.operationName = operationName
    this.variables = variables
    this.extensions = extensions
  }

  /** The parsed document; throws the parser's GraphQLError (with locations) when it does not parse. */
  get document(): DocumentNode {
    if (this.#document) return this.#document
    if (this.#parseError) throw this.#parseError
    if (this.query === undefined) throw new GraphQLError('Must provide query string.')
    const cached = documentCache.get(this.query)
    if (cached) return (this.#document = cached)
    try {
      const doc = parse(this.query, { noLocation: true, maxTokens: 100_000 })
      documentCache.set(this.query, doc)
      return (this.#document = doc)
    } catch (err) {
      this.#parseError = err instanceof GraphQLError ? err : new GraphQLError(String(err))
      throw this.#parseError
    }
  }

  /** The operation type, or undefined when the document does not parse or names no operation. */
  get operationType(): OperationType | undefined {
    if (this.query === undefined) return undefined
    try {
      const op = getOperationAST(this.document, this.operationName)
      return op ? (op.operation as OperationTypeNode as OperationType) : undefined
    } catch {
      return undefined
    }
  }

  /** The operation's name from the request, else from the document's single operation. */
  get opName(): string | undefined {
    if (this.operationName) return this.operationName
    if (this.query === undefined) return undefined
    try {
      return getOperationAST(this.document, undefined)?.name?.value
    } catch {
      return undefined
    }
  }

  /** sha256 hex of the query text: the APQ hash and the cache's document key. */
  get docHash(): string | undefined {
    if (this.#docHash !== undefined) return this.#docHash
    if (this.query === undefined) return undefined
    return (this.#docHash = createHash('sha256').update(this.query).digest('hex'))
  }

  setQuery(query: string): void {
    this.query = query
    this.#document = undefined
    this.#parseError = undefined
    this.#docHash = undefined
    this.dirty = true
  }

  setExtension(key: string, value: unknown): void {
    this.extensions = { ...this.extensions, [key]: value }
    this.dirty = true
  }

  deleteExtension(key: string): void {
    if (!this.extensions || !(key in this.extensions)) return
    const { [key]: _removed, ...rest } = this.extensions
    this.extensions = Object.keys(rest).length ? rest : undefined
    this.dirty = true
  }

  /** Drop `documentId` from what goes upstream (after resolving it to a query). */
  clearDocumentId(): void {
    if (this.documentId === undefined) return
    this.documentId = undefined
    this.dirty = true
  }

  setVariables(variables: Record<string, unknown> | undefined): void {
    this.variables = variables
    this.#variablesSet = true
    this.dirty = true
  }

  /**
   * The variables to serialize when the request was edited (every persisted-query request is:
   * the filter fills in its document). JSON.parse rounded integers beyond 2^53 (9007199254740993
   * reads as …992) and fractions beyond a double's digits, and JSON.stringify would send the
   * rounded value: a backend with 64-bit integers or a Decimal scalar would act on another
   * entity or amount. When the variables hold any number but a safe integer, they are read again
   * from the client's text keeping its spelling (only then, and only for an edited request; the
   * scan is one walk of usually tiny variables).
   */
  #variablesToSend(source: Buffer | string | ExactVariables | null | undefined): unknown {
    const v = this.variables
    if (v === undefined || this.#variablesSet || source === undefined || source === null || !hasRespelledNumber(v)) return v
    try {
      // A POST's whole body (its "variables" member), a GET's "variables" parameter, or (a batch
      // item) a function that reads them from the batch's text.
      const exact =
        typeof source === 'function' ? source() : typeof source === 'string' ? JSON.parse(source, keepClientNumberText) : (JSON.parse(source.toString('utf8'), keepClientNumberText) as { variables?: unknown } | null)?.variables
      return exact !== null && typeof exact === 'object' ? exact : v
    } catch {
      return v
    }
  }

  /** The JSON body to send upstream for a POST. */
  toBody(): Buffer {
    if (!this.dirty && this.raw) return this.raw
    return this.#serialize(this.raw)
  }

  /** The request as a JSON body; `source` is where the client's variables text is (see #variablesToSend). */
  #serialize(source: Buffer | string | null | undefined): Buffer {
    return Buffer.from(JSON.stringify(this.toObject(source)))
  }

  /** The request as the JSON object to send (see #variablesToSend for `source`). */
  toObject(source: Buffer | string | ExactVariables | null | undefined): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    if (this.query !== undefined) out.query = this.query
    if (this.operationName !== undefined) out.operationName = this.operationName
    if (this.variables !== undefined) out.variables = this.#variablesToSend(source)
    if (this.extensions !== undefined) out.extensions = this.extensions
    if (this.documentId !== undefined) out[this.documentIdMember] = this.documentId
    return out
  }

  /**
   * Where an edited GET query goes upstream: its rewritten target, or, when a filter put a long
   * document into it (a persisted query's or an APQ hash's text) and the request line outgrew what
   * backends read (nginx 8 KiB, node:http 16 KiB with the headers), a POST with a JSON body
   * (GraphQL over HTTP: servers take POST). The proxy's forward and the cache's background refresh
   * both send it so; sent as a GET, the refresh got the backend's 414 and never renewed its entry.
   */
  rewrittenGet(originalPath: string): { path: string; body?: Buffer } {
    const path = this.toGetPath(originalPath)
    return path.length > MAX_REWRITTEN_GET_TARGET && this.operationType === 'query' ? this.toPost(originalPath) : { path }
  }

  /**
   * An edited GET as a POST (for a document too long to go in a URL): the target with the
   * GraphQL parameters taken out (any other parameter kept as it was spelled) and the JSON body.
   */
  toPost(originalPath: string): { path: string; body: Buffer } {
    const q = originalPath.indexOf('?')
    if (q === -1) return { path: originalPath, body: this.#serialize(undefined) }
    const search = originalPath.slice(q + 1)
    const kept = otherParameters(search)
    const base = originalPath.slice(0, q)
    return { path: kept === '' ? base : `${base}?${kept}`, body: this.#serialize(new URLSearchParams(search).get('variables')) }
  }

  /**
   * The path with the GraphQL parameters rewritten, for a GET whose request was edited. The other
   * parameters stay as the client spelled them: re-serialized, `a%20b` became `a+b` (a plus to
   * backends that decode with decodeURIComponent), a bare `flag` became `flag=`, and bytes that
   * are not UTF-8 (`%E9`) became U+FFFD.
   */
  toGetPath(originalPath: string): string {
    const q = originalPath.indexOf('?')
    const base = q === -1 ? originalPath : originalPath.slice(0, q)
    const search = q === -1 ? '' : originalPath.slice(q + 1)
    const params = new URLSearchParams()
    if (this.documentId !== undefined) params.set(this.documentIdMember, this.documentId)
    if (this.query !== undefined) params.set('query', this.query)
    if (this.operationName !== undefined) params.set('operationName', this.operationName)
    if (this.variables !== undefined) params.set('variables', JSON.stringify(this.#variablesToSend(new URLSearchParams(search).get('variables'))))
    if (this.extensions !== undefined) params.set('extensions', JSON.stringify(this.extensions))
    const kept = otherParameters(search)
    const ours = params.toString()
    return `${base}?${kept === '' ? ours : ours === '' ? kept : `${kept}&${ours}`}`
  }
}

/** The query-string pairs that are not GraphQL parameters, as the client spelled them. */
function otherParameters(search: string): string {
  let kept = ''
  for (const pair of search.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    let name = eq === -1 ? pair : pair.slice(0, eq)
    try {
      name = decodeURIComponent(name.replaceAll('+', ' '))
    } catch {}
    if (!(GET_PARAMETERS as readonly string[]).includes(name)) kept += kept === '' ? pair : `&${pair}`
  }
  return kept
}

function objectOrUndefined(v: unknown, field: string): Record<string, unknown> | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'object' || Array.isArray(v)) throw new GraphQLRequestError(`"${field}" must be an object`)
  return v as Record<string, unknown>
}

function stringOrUndefined(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw new GraphQLRequestError(`"${field}" must be a string`)
  return v
}

/**
 * An empty operationName names no operation. graphql-yoga (`operationName=` in a GET), and
 * servers that read it with `||`, run the document's only operation; read as a name, it selected
 * none here, and every filter that asks for the operation's type (a mutation in a GET, a
 * mutation's cache invalidation) saw none. Absent, the filters see what such a backend runs; a
 * backend that reads "" as a name refuses the request whatever the filters decided.
 */
function operationNameOf(v: unknown): string | undefined {
  const name = stringOrUndefined(v, 'operationName')
  return name === '' ? undefined : name
}

function fromObject(method: 'GET' | 'POST', raw: Buffer | undefined, o: Record<string, unknown>): GraphQLRequest {
  const query = stringOrUndefined(o.query, 'query')
  const extensions = objectOrUndefined(o.extensions, 'extensions')
  // Relay's persisted queries send `{"doc_id": …, "variables": …}`: read as `documentId` (the
  // persisted filter resolves it; a backend that knows doc_id gets it as sent). It was a 400 "Must
  // provide query string", and beside a `query` it went upstream unchecked, for a backend that
  // reads doc_id first to run a document no filter saw.
  const relayId = stringOrUndefined(o.doc_id, 'doc_id')
  const documentId = stringOrUndefined(o.documentId, 'documentId') ?? relayId
  if (relayId !== undefined && o.documentId != null) throw new GraphQLRequestError('a request names its persisted document by "documentId" or by "doc_id", not both')
  if (query === undefined && documentId === undefined && !(extensions && 'persistedQuery' in extensions)) {
    throw new GraphQLRequestError('Must provide query string.')
  }
  const req = new GraphQLRequest(method, raw, query, operationNameOf(o.operationName), objectOrUndefined(o.variables, 'variables'), extensions)
  req.documentId = documentId
  if (relayId !== undefined) req.documentIdMember = 'doc_id'
  return req
}

/**
 * A POST body that is a batch (a JSON array of requests), counted. Forwarded as received unless a
 * filter edits one of its requests (`requests`, read on first use: the persisted filter fills in
 * APQ and persisted ids and drops a client's cost hints); then serialized once, the items nobody
 * edited as the client sent them.
 */
export class GraphQLBatch {
  readonly operations: number
  /** The bytes as received. */
  readonly raw: Buffer
  readonly #items: unknown[]
  #requests: (GraphQLRequest | undefined)[] | undefined = undefined
  #exact: unknown[] | undefined = undefined

  constructor(raw: Buffer, items: unknown[]) {
    this.raw = raw
    this.#items = items
    this.operations = items.length
  }

  /**
   * Each item as a GraphQLRequest, or undefined for an item that is not one (not an object, no
   * query nor persisted id, a mistyped member): that item goes upstream as sent and the backend
   * answers it, as it would a lone request.
   */
  get requests(): readonly (GraphQLRequest | undefined)[] {
    if (this.#requests !== undefined) return this.#requests
    const out: (GraphQLRequest | undefined)[] = new Array(this.#items.length)
    for (let i = 0; i < this.#items.length; i++) {
      const item = this.#items[i]
      try {
        out[i] = item !== null && typeof item === 'object' && !Array.isArray(item) ? fromObject('POST', undefined, item as Record<string, unknown>) : undefined
      } catch {
        out[i] = undefined
      }
    }
    return (this.#requests = out)
  }

  /** True once a filter changed one of the requests. */
  get dirty(): boolean {
    const reqs = this.#requests
    if (reqs === undefined) return false
    for (const r of reqs) if (r !== undefined && r.dirty) return true
    return false
  }

  /** The JSON body to send upstream. */
  toBody(): Buffer {
    if (!this.dirty) return this.raw
    const reqs = this.#requests!
    const out: unknown[] = new Array(this.#items.length)
    for (let i = 0; i < out.length; i++) {
      const r = reqs[i]
      if (r !== undefined && r.dirty) out[i] = r.toObject(() => (this.#exactItem(i) as { variables?: unknown } | null)?.variables)
      else out[i] = hasRespelledNumber(this.#items[i]) ? this.#exactItem(i) : this.#items[i]
    }
    return Buffer.from(JSON.stringify(out))
  }

  /** Item i read again from the client's text with its numbers as spelled (the body is read once). */
  #exactItem(i: number): unknown {
    this.#exact ??= JSON.parse(this.raw.toString('utf8'), keepClientNumberText) as unknown[]
    return this.#exact[i]
  }
}

/**
 * A member name some object in this JSON text holds twice (JSON-quoted, cut to 64 characters), or
 * undefined. JSON.parse keeps the last; gjson, jsonparser and other first-match readers keep the
 * first, and Apollo Router and Go's encoding/json/v2 refuse the text (RFC 8259 §4: names SHOULD be
 * unique; I-JSON, RFC 7493: MUST). `{"query":"mutation{…}","query":"{ safe }"}` was priced,
 * safelisted and cached as the safe query and forwarded byte for byte to a backend that ran the
 * mutation; a repeated variable or extension did the same to tenant, persisted-id and cache-key
 * checks. No JSON encoder writes such text, so it is refused. The common case costs a count: the
 * text's members (each is the one ":" outside a string) against the parsed value's keys (jsonMembers, counted in the
 * walk that checks the depth); only when they differ is the text walked again to name the member.
 */
function repeatedMember(text: string, keys: number): string | undefined {
  let members = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 58 /* : */) members++
    else if (c === 34 /* " */) i = stringEnd(text, i)
  }
  return members === keys ? undefined : findRepeated(text)
}

/** The index of the quote closing the JSON string that opens at `start`. */
function stringEnd(text: string, start: number): number {
  let end = text.indexOf('"', start + 1)
  for (;;) {
    let backslashes = 0
    while (text.charCodeAt(end - 1 - backslashes) === 92 /* \ */) backslashes++
    if (backslashes % 2 === 0) return end
    end = text.indexOf('"', end + 1)
  }
}

/** The first member name an object in this (valid) JSON text repeats, JSON-quoted. */
function findRepeated(text: string): string | undefined {
  // Per open bracket, the names seen so far (an object) or null (an array).
  const open: (Set<string> | null)[] = []
  let expectName = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 123 /* { */) {
      open.push(new Set())
      expectName = true
    } else if (c === 91 /* [ */) open.push(null)
    else if (c === 125 /* } */ || c === 93 /* ] */) open.pop()
    else if (c === 44 /* , */) expectName = open.at(-1) != null
    else if (c === 34 /* " */) {
      const end = stringEnd(text, i)
      if (expectName) {
        const names = open.at(-1)!
        const name = JSON.parse(text.slice(i, end + 1)) as string
        if (names.has(name)) return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name)
        names.add(name)
        expectName = false
      }
      i = end
    }
  }
  return undefined
}

/**
 * Parse a POST body: one request, or a GraphQLBatch for an array. Throws GraphQLRequestError
 * for malformed JSON or a body that is not a GraphQL request.
 */
export function parsePostBody(raw: Buffer): GraphQLRequest | GraphQLBatch {
  let parsed: unknown
  const text = raw.toString('utf8')
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new GraphQLRequestError(`Malformed JSON body: ${(err as Error).message}`)
  }
  // One walk of the parsed value: its depth, and its members for the repeated-name check.
  const members = jsonMembers(parsed)
  if (members < 0) throw new GraphQLRequestError(`JSON body nested deeper than ${MAX_JSON_DEPTH} levels`)
  const repeated = repeatedMember(text, members)
  if (repeated !== undefined) throw new GraphQLRequestError(`the JSON body repeats the member ${repeated} in one object`)
  if (Array.isArray(parsed)) return new GraphQLBatch(raw, parsed)
  if (parsed === null || typeof parsed !== 'object') throw new GraphQLRequestError('Expected a JSON object with a "query"')
  return fromObject('POST', raw, parsed as Record<string, unknown>)
}

/**
 * Why a POST's query string may not go with its body, or undefined. GraphQL over HTTP reads a
 * POST from its body, and so do the filters; but servers built on express-graphql's reading
 * (express-graphql, koa-graphql, several hapi/fastify ports) take `query`, `variables` and
 * `operationName` from the URL first and the body only for what the URL lacks. A POST to
 * `/graphql?query=mutation{…}` with a harmless body ran the URL's mutation behind filters that
 * priced, safelisted and cached the body's query. So a GraphQL parameter in a POST's URL is
 * refused, but for an `operationName` that names the operation the body runs (clients that
 * put it there for logs), or an empty one (it selects no other operation).
 */
export function postSearchConflict(search: string, body: GraphQLRequest | GraphQLBatch): string | undefined {
  const params = new URLSearchParams(search)
  const hidden = hiddenParameter(search, params)
  if (hidden !== undefined) return hidden
  for (const name of GET_PARAMETERS) {
    const values = params.getAll(name)
    if (values.length === 0) continue
    if (name === 'operationName' && values.length === 1) {
      const v = values[0]!
      if (v === '' || body instanceof GraphQLBatch || v === body.opName) continue
      return `the operationName "${v.length > 64 ? `${v.slice(0, 64)}…` : v}" in the URL of a POST does not name the operation its body runs`
    }
    return `a POST to a GraphQL route carries the request in its body: the GraphQL parameter "${name}" in its URL is refused (servers that read it ahead of the body would run what no filter checked)`
  }
  return undefined
}

/** The GraphQL parameter a query-string name may be read as: in any case, whole or as the base of a bracketed one (`variables[id]`). */
function graphqlBase(name: string): string | undefined {
  const b = name.indexOf('[')
  const base = (b === -1 ? name : name.slice(0, b)).toLowerCase()
  for (const p of GET_PARAMETERS) if (p.length === base.length && p.toLowerCase() === base) return p
  return undefined
}

/**
 * Why a query string holds a GraphQL parameter the filters cannot see, or undefined. GraphQL over
 * HTTP sends `variables` and `extensions` JSON-encoded, and that is all the filters read; but qs
 * (Express 4's default parser), Rack and PHP build objects from brackets, so
 * `extensions[persistedQuery][sha256Hash]=…` or `variables[id]=…` reached such a backend as an APQ
 * id or variables no filter saw (a GET with no other GraphQL parameter went by as no GraphQL
 * request at all: past the safelist, the cost and the cache). ASP.NET reads names in any case
 * (`Query=…` is its `query`). And Rack 2 and Python's parse_qs before CVE-2021-23336 also split
 * pairs at `;`: `x=1;query=mutation{…}` was a value here and a second `query` there. Refused, as
 * other ambiguous requests are (a repeated parameter, a POST's URL).
 */
function hiddenParameter(search: string, params: URLSearchParams): string | undefined {
  for (const name of params.keys()) {
    const base = graphqlBase(name)
    if (base === undefined || base === name) continue
    const shown = name.slice(0, 64)
    return name.includes('[')
      ? `the query-string parameter "${shown}" is not read as GraphQL here: send "${base}" as one JSON-encoded parameter (GraphQL over HTTP)`
      : `the query-string parameter "${shown}" is the GraphQL parameter "${base}" to servers that ignore case: spell it "${base}"`
  }
  if (!search.includes(';')) return undefined
  for (const pair of search.split('&')) {
    const parts = pair.split(';')
    for (let i = 1; i < parts.length; i++) {
      const part = parts[i]!
      const eq = part.indexOf('=')
      let name = eq === -1 ? part : part.slice(0, eq)
      try {
        name = decodeURIComponent(name.replaceAll('+', ' '))
      } catch {}
      if (graphqlBase(name) !== undefined) return `the GraphQL parameter "${name.slice(0, 64)}" follows a ";" in the query string, which some servers read as a separator: percent-encode ";" as %3B`
    }
  }
  return undefined
}

/** Parse GET parameters (GraphQL over HTTP): variables and extensions are JSON strings. */
export function parseGetParams(search: string): GraphQLRequest | undefined {
  const params = new URLSearchParams(search)
  const hidden = hiddenParameter(search, params)
  if (hidden !== undefined) throw new GraphQLRequestError(hidden)
  // Given twice, a parameter means different things to different readers (frameworks take the
  // first, the last or a list): what the filters check must be what the backend runs.
  for (const name of GET_PARAMETERS) if (params.getAll(name).length > 1) throw new GraphQLRequestError(`GraphQL parameter "${name}" is repeated in the query string`)
  const query = params.get('query') ?? undefined
  const extText = params.get('extensions')
  const documentId = params.get('documentId') ?? undefined
  const relayId = params.get('doc_id') ?? undefined
  if (query === undefined && extText === null && documentId === undefined && relayId === undefined) return undefined
  const o: Record<string, unknown> = { query, operationName: params.get('operationName') ?? undefined, documentId, doc_id: relayId }
  for (const field of ['variables', 'extensions'] as const) {
    const text = params.get(field)
    if (text === null || text === '') continue
    try {
      o[field] = JSON.parse(text)
    } catch (err) {
      throw new GraphQLRequestError(`Malformed JSON in "${field}" parameter: ${(err as Error).message}`)
    }
    const members = jsonMembers(o[field])
    if (members < 0) throw new GraphQLRequestError(`"${field}" parameter nested deeper than ${MAX_JSON_DEPTH} levels`)
    const repeated = repeatedMember(text, members)
    if (repeated !== undefined) throw new GraphQLRequestError(`the "${field}" parameter repeats the member ${repeated} in one object`)
  }
  return fromObject('GET', undefined, o)
}
