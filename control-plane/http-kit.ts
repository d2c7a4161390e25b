// The small HTTP toolkit of the control plane: a route table whose entries also describe
// themselves for the OpenAPI document (so the document is generated from what is served),
// JSON bodies with a size bound, and RFC 9457 problem details for every error.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { jsonDepthExceeds, MAX_JSON_DEPTH } from '../config/json-depth.ts'
import type { Action, Subject } from './auth.ts'

export type JsonSchema = Record<string, unknown>

export class HttpError extends Error {
  readonly status: number
  readonly problems: string[] | undefined
  readonly headers: Record<string, string>
  readonly extra: Record<string, unknown>
  /**
   * The level a 5xx answer is logged at (a 4xx is logged only when it refuses a write: info,
   * `write refused`). `error` (the default) is a failure an operator is paged for; a 5xx that is
   * an expected state the client is told about (no config committed yet, a feature not in this
   * build) is `warn`, not "request failed" at error level.
   */
  readonly logLevel: 'error' | 'warn'
  constructor(status: number, message: string, opts: { problems?: string[]; headers?: Record<string, string>; extra?: Record<string, unknown>; logLevel?: 'error' | 'warn' } = {}) {
    super(message)
    this.status = status
    this.problems = opts.problems
    this.headers = opts.headers ?? {}
    this.extra = opts.extra ?? {}
    this.logLevel = opts.logLevel ?? 'error'
  }
}

export const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  428: 'Precondition Required',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
}

/**
 * Whether the request declared a body that has not been read to its end. An answer given then
 * (a refusal, or a GET/healthz answered without reading a body someone sent) must close the
 * connection: kept alive, Node reads the whole unread rest to discard it — however large the
 * declared Content-Length, with no bound — and a pooled client's next request waits behind it.
 * A request without a body is never "unread" (a synchronous answer may come before Node marks it
 * complete).
 */
export function bodyUnread(req: IncomingMessage | undefined): boolean {
  if (req === undefined || req.complete) return false
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/**
 * A conditional GET/HEAD whose If-None-Match holds the ETag about to be sent (or `*`): RFC 9110
 * §13.1.2 answers it 304 without the body. A poller that sent back the ETag it had got the whole
 * document again every time, and could not tell "unchanged" without comparing bodies.
 */
function notModified(req: IncomingMessage | undefined, etag: string): boolean {
  const header = req?.headers['if-none-match']
  if (header === undefined || (req!.method !== 'GET' && req!.method !== 'HEAD')) return false
  const weak = (t: string) => (t.startsWith('W/') ? t.slice(2) : t)
  return header.split(',').some((t) => t.trim() === '*' || weak(t.trim()) === weak(etag))
}

/**
 * `conditional: false`: the ETag sent does not cover the whole body (a quota's is its limit, what
 * If-Match takes, while `usedToday` moves with traffic), so If-None-Match holding it says nothing
 * of whether the client's copy is current: always the 200.
 */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}, opts: { conditional?: boolean } = {}): void {
  if (status === 200 && headers.etag !== undefined && opts.conditional !== false && notModified(res.req, headers.etag)) {
    res.writeHead(304, { 'cache-control': 'no-store', ...(bodyUnread(res.req) ? { connection: 'close' } : {}), ...headers }).end()
    return
  }
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(text)), ...(bodyUnread(res.req) ? { connection: 'close' } : {}), ...headers })
  res.end(text)
}

export function sendProblem(res: ServerResponse, err: HttpError): void {
  const body = { type: 'about:blank', title: TITLES[err.status] ?? 'Error', status: err.status, detail: err.message, ...(err.problems ? { problems: err.problems } : {}), ...err.extra }
  const text = JSON.stringify(body)
  // A refusal before the body was read to its end (too large, wrong type, unauthenticated): the
  // rest of it is still on the socket, so the connection cannot carry another request. Said, a
  // pooled client opens a new one; unsaid, its next request on this socket got no answer.
  res.writeHead(err.status, { 'content-type': 'application/problem+json; charset=utf-8', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(text)), ...(bodyUnread(res.req) ? { connection: 'close' } : {}), ...err.headers })
  res.end(text)
}

/** Request body bound for the whole admin API (REST and GraphQL). */
export const MAX_BODY = 4 * 1024 * 1024

/** Refuses malformed UTF-8 (a BOM is kept, and JSON.parse refuses it as before). */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** The request body's content coding other than `identity` (RFC 9110 §8.4), if any. */
export function contentCoding(req: IncomingMessage): string | undefined {
  const header = req.headers['content-encoding']
  if (header === undefined) return undefined
  const codings = header.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== 'identity')
  return codings.length === 0 ? undefined : header.trim()
}

export async function readJson(req: IncomingMessage, maxBytes = MAX_BODY): Promise<unknown> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/([a-z.+-]*\+)?json\b/i.test(type)) throw new HttpError(415, `expected a JSON body (content-type: application/json), got "${type || 'none'}"`)
  // A compressed body was read as the JSON text itself: a gzip'd document was refused as "not
  // valid UTF-8 … re-encode it", which sent the client after a charset problem it did not have.
  // No coding is decoded here (RFC 9110 §8.4.1: 415 for a content coding not accepted).
  const coding = contentCoding(req)
  if (coding !== undefined) throw new HttpError(415, `expected an uncompressed body, got Content-Encoding "${coding.slice(0, 40)}"`, { problems: ['Content-Encoding: not supported (send the JSON uncompressed, or "identity")'] })
  // JSON is UTF-8 (RFC 8259 §8.1): a body declared in another charset was decoded as UTF-8 all
  // the same, and "café" in Latin-1 was stored and audited as "caf\uFFFD" with a 2xx.
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(type)?.[1]
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) throw new HttpError(415, `expected a JSON body in UTF-8, got charset "${charset.slice(0, 40)}"`)
  const declared = Number(req.headers['content-length'])
  if (declared > maxBytes) throw new HttpError(413, `body larger than ${maxBytes} bytes`)
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > maxBytes) throw new HttpError(413, `body larger than ${maxBytes} bytes`)
    chunks.push(c as Buffer)
  }
  let text: string
  try {
    text = UTF8.decode(Buffer.concat(chunks))
  } catch {
    // Decoded leniently, the bad bytes became U+FFFD: a value the client never sent, stored.
    throw new HttpError(400, 'body is not valid UTF-8', { problems: ['(body): expected UTF-8 text (RFC 8259 §8.1); re-encode it from the encoding it was written in'] })
  }
  let value: unknown
  try {
    value = JSON.parse(text) as unknown
  } catch (err) {
    throw new HttpError(400, `body is not valid JSON: ${(err as Error).message}`)
  }
  // JSON.parse copes with any depth, but what follows walks the value recursively (canonical
  // JSON for ETags, digests and the audit diff; the zod schema): a few KB of "[[[[…" would
  // overflow the stack there. The data plane's limit, so a document one accepts the other does.
  if (jsonDepthExceeds(value)) throw new HttpError(400, `body nests objects/arrays deeper than ${MAX_JSON_DEPTH} levels`)
  return value
}

export interface RouteContext {
  req: IncomingMessage
  res: ServerResponse
  params: Record<string, string>
  query: URLSearchParams
  subject: Subject | undefined
}

export interface OperationDoc {
  summary: string
  tags: string[]
  query?: { name: string; description: string; schema: JsonSchema; required?: boolean }[]
  requestBody?: JsonSchema
  /** Status → response body schema (application/json unless `contentType`); `link`: a `Link: <…>; rel="next"` header when there is a next page; `location`: the created resource's path. */
  responses: Record<number, { description: string; schema?: JsonSchema; contentType?: string; etag?: boolean; link?: boolean; location?: boolean }>
  ifMatch?: boolean
}

export interface RouteDef {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE'
  /** OpenAPI-style path, e.g. /v1/tenants/{id}. */
  path: string
  /** undefined: public. A function: decided per request (resource tenant). */
  auth?: { action: Action; resource: (p: Record<string, string>, q: URLSearchParams, subject: Subject) => { type: string; id?: string; tenant?: string } }
  doc: OperationDoc
  handle(ctx: RouteContext): Promise<void> | void
}

export interface CompiledRoute extends RouteDef {
  regex: RegExp
  names: string[]
}

export function compile(route: RouteDef): CompiledRoute {
  const names: string[] = []
  const src = route.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{(\w+)\\?\}|\{(\w+)\}/g, (_m, a: string | undefined, b: string | undefined) => {
    names.push((a ?? b)!)
    return '([^/]+)'
  })
  return { ...route, regex: new RegExp(`^${src}$`), names }
}

const REQUEST_ID = /^[\w.:@-]{1,128}$/

/** The client's `x-request-id` when it is a plain token (a proxy or gateway in front), else a new one. */
export function requestIdFor(req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

/**
 * A page that has a next one: the next page's URL (this path with the query that asks for it),
 * answered as `Link: <…>; rel="next"` (RFC 8288, relative to the request) and as `next` in the body.
 */
export function pageLinks(path: string, query: Record<string, string | undefined>): { next: string; headers: Record<string, string> } {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, v)
  const next = `${path}?${q}`
  return { next, headers: { link: `<${next}>; rel="next"` } }
}
