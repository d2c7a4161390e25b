// GraphQL-shaped error replies for the data path. Every code maps to one HTTP status, so a
// filter only names the code; clients branch on extensions.code, operators on the status.

export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  // The client did not send its (GraphQL) request body in time.
  REQUEST_TIMEOUT: 408,
  PAYLOAD_TOO_LARGE: 413,
  // The request line and headers together are over listener.maxHeaderBytes (as Envoy answers).
  REQUEST_HEADER_FIELDS_TOO_LARGE: 431,
  // An Expect other than 100-continue (RFC 9110 §10.1.1): nothing here can meet it.
  EXPECTATION_FAILED: 417,
  // A GraphQL route got a POST body that is not JSON (forms, multipart, application/graphql).
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNAUTHENTICATED: 401,
  UNKNOWN_TENANT: 403,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 429,
  BUDGET_EXHAUSTED: 429,
  OVERLOADED: 503,
  // Apollo clients expect the APQ miss as a 200 with this code, then retry with the document.
  PERSISTED_QUERY_NOT_FOUND: 200,
  PERSISTED_QUERY_NOT_ALLOWED: 400,
  DLP_BLOCKED: 403,
  UPSTREAM_UNAVAILABLE: 502,
  UPSTREAM_TIMEOUT: 504,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  INTERNAL_SERVER_ERROR: 500,
  // A request transfer coding other than chunked (RFC 9112 §6.1), as Envoy and nginx answer it.
  NOT_IMPLEMENTED: 501,
} as const

export type ErrorCode = keyof typeof ERROR_STATUS

/** A complete reply a filter (or the proxy itself) sends instead of forwarding. */
/**
 * What a filter's response body stream is destroyed with to end a response on purpose once its
 * head is out (a DLP block mid-export): the response is cut and logged under `code`, not counted
 * as the filter failing (igw_filter_errors_total, an error log with a stack, INTERNAL_SERVER_ERROR).
 */
export class ResponseCut extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string) {
    super(message)
    this.name = 'ResponseCut'
    this.code = code
  }
}

export interface LocalReply {
  status: number
  headers?: Record<string, string | string[]>
  body: Buffer | string
  /** The error code when this is an error reply; used for logs and metrics. */
  code?: string
}

const JSON_TYPE = 'application/json; charset=utf-8'
const GRAPHQL_RESPONSE_TYPE = 'application/graphql-response+json; charset=utf-8'

/**
 * The media type for an error reply (one of ours: `application/json; charset=utf-8`), by the
 * client's Accept as GraphQL over HTTP §7.1 has it (the type it ranks highest, the first listed on
 * a tie): `application/graphql-response+json` for a client that prefers it (Apollo Client 3.8+
 * sends it first, a strict client alone), as graphql-yoga and Apollo Router answer such a client;
 * application/json otherwise (no Accept, a wildcard: the spec's legacy default). The common case
 * (no Accept, or one that does not name it) is one scan. Media types are case-insensitive (RFC 9110
 * §8.3.1): `application/GraphQL-Response+JSON` was answered application/json.
 */
const NAMES_GRAPHQL_RESPONSE = /graphql-response\+json/i
export function errorMediaType(accept: string | string[] | undefined): string {
  if (typeof accept !== 'string' || !NAMES_GRAPHQL_RESPONSE.test(accept)) return JSON_TYPE
  let best = JSON_TYPE
  let bestQ = 0
  for (const range of accept.split(',')) {
    const semi = range.indexOf(';')
    const type = (semi === -1 ? range : range.slice(0, semi)).trim().toLowerCase()
    const mine = type === 'application/graphql-response+json' ? GRAPHQL_RESPONSE_TYPE : type === 'application/json' || type === 'application/*' || type === '*/*' ? JSON_TYPE : undefined
    if (mine === undefined) continue
    const q = semi === -1 ? 1 : qValue(range.slice(semi + 1))
    if (q > bestQ) {
      best = mine
      bestQ = q
    }
  }
  return best
}

/**
 * Which of the two JSON media types of GraphQL over
 * HTTP a request's Accept admits. A GraphQL server answers `application/json` to a client that
 * takes only that, `application/graphql-response+json` to one that takes only that, and an
 * SSE or multipart stream to one that takes neither; the cache keys on it (a stored copy answers only requests of
 * its class) and the persisted filter answers a 'g' client's APQ errors with a 4xx. '' = both (or Accept absent, `*\/*`,
 * `application/*`); 'g' = graphql-response+json only; 'j' = application/json only;
 * undefined = neither (such a request is never answered from the cache).
 * Order and q-values other than 0 do not split the key: either type is one they accept.
 */
export function acceptClass(accept: string | undefined): '' | 'g' | 'j' | undefined {
  if (accept === undefined || accept === '') return ''
  if (accept === lastAccept) return lastClass
  let g: number | undefined
  let j: number | undefined
  let app: number | undefined
  let any: number | undefined
  for (const range of accept.split(',')) {
    const parts = range.split(';')
    const type = parts[0]!.trim().toLowerCase()
    if (type === '') continue
    let q = 1
    for (let i = 1; i < parts.length; i++) {
      const p = parts[i]!.trim()
      if (p.length > 1 && (p[0] === 'q' || p[0] === 'Q') && p[1] === '=') {
        const v = Number(p.slice(2))
        q = Number.isNaN(v) ? 1 : v
      }
    }
    // RFC 9110 12.5.1: the most specific range that matches a type gives its q; for one range
    // given twice, the highest.
    if (type === 'application/graphql-response+json') g = Math.max(g ?? 0, q)
    else if (type === 'application/json') j = Math.max(j ?? 0, q)
    else if (type === 'application/*') app = Math.max(app ?? 0, q)
    else if (type === '*/*') any = Math.max(any ?? 0, q)
  }
  const takesG = (g ?? app ?? any ?? 0) > 0
  const takesJ = (j ?? app ?? any ?? 0) > 0
  const c = takesG ? (takesJ ? '' : 'g') : takesJ ? 'j' : undefined
  lastAccept = accept
  lastClass = c
  return c
}
// Clients of one application send one Accept: the last one read is remembered.
let lastAccept: string | undefined
let lastClass: '' | 'g' | 'j' | undefined = ''

/** The q parameter of a media range's parameters (RFC 9110 §12.4.2), 1 without one. */
function qValue(params: string): number {
  for (const p of params.split(';')) {
    const eq = p.indexOf('=')
    if (eq !== -1 && p.slice(0, eq).trim().toLowerCase() === 'q') {
      const q = Number(p.slice(eq + 1).trim())
      return Number.isFinite(q) && q >= 0 && q <= 1 ? q : 0
    }
  }
  return 1
}

/**
 * Give an error reply's headers the media type the client asked for (errorMediaType): only a
 * reply in our own JSON type is re-typed (a filter's reply of another type is its own).
 */
export function negotiateErrorType(headers: Record<string, string | string[]>, accept: string | string[] | undefined): void {
  if (headers['content-type'] === JSON_TYPE) headers['content-type'] = errorMediaType(accept)
}

/**
 * A client that takes its answers only as an event stream: its Accept names `text/event-stream`
 * and admits neither JSON type (no wildcard either) — GraphQL over SSE in "distinct connections
 * mode": the graphql-sse client and a browser's or undici's EventSource send exactly
 * `Accept: text/event-stream`. One that also takes JSON gets JSON, as graphql-yoga answers it.
 */
export function acceptsOnlyEventStream(accept: string | string[] | undefined): boolean {
  if (typeof accept !== 'string' || !NAMES_EVENT_STREAM.test(accept) || acceptClass(accept) !== undefined) return false
  for (const range of accept.split(',')) {
    const semi = range.indexOf(';')
    if ((semi === -1 ? range : range.slice(0, semi)).trim().toLowerCase() === 'text/event-stream') return semi === -1 || qValue(range.slice(semi + 1)) > 0
  }
  return false
}
const NAMES_EVENT_STREAM = /text\/event-stream/i

/**
 * An igw 4xx error reply (GraphQL-shaped JSON) as an SSE-only client on a GraphQL route gets it:
 * a 200 event stream, the error result as one `next` event, then `complete` (with the empty
 * `data:` line an EventSource needs to fire its listener), as the GraphQL over SSE protocol
 * (graphql-sse PROTOCOL.md, distinct connections mode) has a server report what fails before
 * execution, and as graphql-yoga answers such a client its own parse, validation and request
 * errors. Answered as a 4xx `application/json` body, the graphql-sse client took it for a network
 * failure and sent the request again five times over ~45 s (Retry-After unread, each retry
 * another refusal a quota counts), then failed with "Server responded with 401: Unauthorized"
 * (the body left unread on it); an EventSource failed the connection with an error event that
 * carries nothing. Neither handed the app extensions.code; now both do, and neither retries a
 * refusal on its own. The access line, metrics and usage count the 4xx it stands for.
 *
 * A 5xx is not re-framed (see the exchange's #outgoingBytes): the gateway's or the upstream's
 * failure is transient, and at a 5xx the graphql-sse client retries with backoff, as it does a
 * server that is down (a subscription resumes once the upstream is back), leaving the JSON body
 * on `error.response` for the app; load balancers and SLOs keep seeing the 5xx.
 *
 * Retry-After stays a header, and its seconds also become the stream's `retry:` field, so an
 * EventSource that is not closed on `complete` reconnects no sooner. The stream is complete and
 * sized, and `no-store`: a refusal sent as a 200 is never cached on the way.
 */
export function eventStreamErrorBody(headers: Record<string, string | string[]>, body: Buffer): Buffer {
  headers['content-type'] = EVENT_STREAM_TYPE
  headers['cache-control'] = 'no-store'
  const after = headers['retry-after']
  const retry = typeof after === 'string' && /^\d{1,9}$/.test(after.trim()) ? `retry: ${Number(after.trim()) * 1000}\n` : ''
  // One data line per line of the JSON (errorBody writes one; a filter's may have more).
  const data = body.toString('utf8').replace(/\r\n|\r|\n/g, '\ndata: ')
  return Buffer.from(`${retry}event: next\ndata: ${data}\n\nevent: complete\ndata:\n\n`)
}
export const EVENT_STREAM_TYPE = 'text/event-stream'

/** Whether `headers` type a reply as one of ours, still un-negotiated (see negotiateErrorType). */
export function isOwnJsonType(headers: Record<string, string | string[]>): boolean {
  return headers['content-type'] === JSON_TYPE
}

/** RFC 9110 §5.6.2 token: what a field name may be (lower-case, as the proxy keeps names). */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/
/** RFC 9110 §5.5 field value as node:http and undici accept it: no CR, LF, NUL or other controls but HTAB, no code point above 0xFF. */
export const BAD_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/

/**
 * What makes a filter's reply one HTTP cannot carry, or undefined when it can: a status outside
 * 200–599, a header name that is not a token, a value that is not a string (or list of them) or
 * carries CR, LF or other controls, a body that is neither text nor bytes. Written as they came
 * onto a raw socket (a WebSocket upgrade's refusal), a CR/LF in a value split the head: the
 * client got a header (a Set-Cookie) the filter never set.
 */
export function replyProblem(reply: unknown): string | undefined {
  if (typeof reply !== 'object' || reply === null) return `the decision is ${reply === null ? 'null' : typeof reply}, not a reply (undefined continues)`
  const { status, headers, body } = reply as LocalReply
  if (!Number.isInteger(status) || status < 200 || status > 599) return `status ${String(status)} is not a final HTTP status (200-599)`
  if (typeof body !== 'string' && !(body instanceof Uint8Array)) return 'the body is neither a string nor a Buffer'
  if (headers === undefined) return undefined
  if (typeof headers !== 'object' || headers === null) return 'headers is not an object'
  for (const name in headers) {
    if (!HEADER_NAME.test(name.toLowerCase())) return `"${name.length > 64 ? `${name.slice(0, 64)}…` : name}" is not a valid HTTP header name`
    const value = headers[name] as string | string[] | undefined
    if (value === undefined) continue // left out, as the head is written
    if (typeof value === 'string') {
      if (BAD_HEADER_VALUE.test(value)) return `the value of header "${name}" carries control characters or characters above U+00FF`
    } else if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || BAD_HEADER_VALUE.test(v))) {
      return `the value of header "${name}" is not a string (or a list of strings) HTTP can carry`
    }
  }
  return undefined
}

export function errorBody(code: string, message: string, extensions?: Record<string, unknown>): string {
  return JSON.stringify({ errors: [{ message, extensions: extensions ? { code, ...extensions } : { code } }] })
}

/** A GraphQL-shaped error reply with the status its code implies. */
export function errorReply(
  code: ErrorCode,
  message: string,
  extensions?: Record<string, unknown>,
  headers?: Record<string, string | string[]>,
): LocalReply {
  return {
    status: ERROR_STATUS[code],
    headers: headers ? { 'content-type': JSON_TYPE, ...headers } : { 'content-type': JSON_TYPE },
    body: errorBody(code, message, extensions),
    code,
  }
}

/** Raw HTTP/1.1 response text for a socket that is not (yet) an http.ServerResponse (upgrades). */
export function rawHttpError(code: ErrorCode, message: string, extraHeaders: Record<string, string> = {}): string {
  const body = errorBody(code, message)
  const status = ERROR_STATUS[code]
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n`
  for (const [k, v] of Object.entries(extraHeaders)) head += `${k}: ${v}\r\n`
  return `${head}\r\n${body}`
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  417: 'Expectation Failed',
  431: 'Request Header Fields Too Large',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}
