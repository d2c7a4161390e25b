// Header rewriting at the proxy boundary (RFC 9110 §7.6.1): hop-by-hop headers stop here,
// X-Forwarded-* record the hop, everything else passes unchanged and in order.
import type { IncomingHttpHeaders } from 'node:http'
import type { RequestContext } from './context.ts'

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'http2-settings',
  // Not hop-by-hop, but never relayed (httpoxy, CVE-2016-5385 and kin): CGI-style backends turn
  // a request's `Proxy` header into HTTP_PROXY, and their HTTP clients then send outbound calls
  // (with credentials) through the client's proxy. nginx, HAProxy and Apache advise dropping it.
  'proxy',
])

export function isHopByHop(lowerName: string): boolean {
  // Proxy-* names a hop's own business (Proxy-Connection, Proxy-Authorization…), but Proxy-Status
  // (RFC 9209) is end-to-end: each intermediary appends its entry and the client reads them all.
  return HOP_BY_HOP.has(lowerName) || (lowerName.startsWith('proxy-') && lowerName !== 'proxy-status')
}

/** Extra names a Connection header lists (they are hop-by-hop for this message only). */
function connectionListed(value: string | undefined): Set<string> | undefined {
  if (!value) return undefined
  // The common values name no other header: answer without splitting (every keep-alive
  // response); any other spelling takes the general path below.
  if (value === 'keep-alive' || value === 'close') return undefined
  let set: Set<string> | undefined
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase()
    if (t && t !== 'close' && t !== 'keep-alive') (set ??= new Set()).add(t)
  }
  return set
}

/**
 * Headers that record earlier hops (what a trusted load balancer put there). A client's
 * `Connection: close, X-Forwarded-For` nominates them as hop-by-hop, and honoured it stripped the
 * balancer's entry: the backend saw the balancer's own address as the client (an internal IP that
 * passes allowlists). They are not the client's to drop.
 */
function describesHop(lowerName: string): boolean {
  return lowerName === 'forwarded' || lowerName === 'x-real-ip' || lowerName.startsWith('x-forwarded-')
}

/**
 * Headers a client's Connection list cannot strip: those recording hops (describesHop), and those
 * that name this request in igw's own logs — the request id the route keeps (its request-id
 * filter's header, else x-request-id) and the W3C traceparent whose trace id the access line
 * carries. `Connection: x-request-id` sent the backend no id while igw logged the client's: the two
 * logs no longer joined (Envoy likewise ignores such names in Connection).
 */
function keptAgainstConnection(lower: string, ctx: RequestContext): boolean {
  return describesHop(lower) || lower === 'traceparent' || lower === (ctx.route.requestId?.header ?? 'x-request-id')
}

/**
 * A header name spelled with `_` that a CGI-style backend reads as the `-` spelled header the
 * proxy removes or sets. CGI, WSGI, Rack and PHP-FPM name both `X-Forwarded-For` and
 * `X_Forwarded_For` HTTP_X_FORWARDED_FOR: a client's underscore spelling went past the proxy beside
 * its X-Forwarded-For (or the tenant filter's verified x-tenant-id) and the backend read it
 * instead (gunicorn < 22 joined it first, Puma < 6.4.3 let it overwrite: CVE-2024-45614). Dropped
 * when the `-` spelling is hop-by-hop, records a hop, is listed in Connection, edited by a filter,
 * or also sent by the client (Puma's fix); other `_` names (api_key) pass, as in
 * Envoy's default.
 */
function shadowsHeader(lower: string, ctx: RequestContext, listed: Set<string> | undefined): boolean {
  const dashed = lower.replaceAll('_', '-')
  if (dashed === lower) return false
  const edits = ctx.upstreamHeaderEdits
  return isHopByHop(dashed) || describesHop(dashed) || ctx.req.headers[dashed] !== undefined || (listed !== undefined && listed.has(dashed)) || (edits !== undefined && edits.has(dashed))
}

/**
 * Request headers node:http reads once: of several lines it keeps the first and drops the rest.
 * The rest went upstream all the same, so filters and backend read different values: a tenant
 * filter verified the first Authorization while a backend that takes the last (or joins them)
 * acted on another, and a GraphQL route parsed the body by the first Content-Type (JSON) while the
 * backend read a second one (a form, multipart). Only the value the filters saw is relayed.
 */
const READ_ONCE = new Set(['authorization', 'content-type', 'user-agent', 'referer', 'from', 'if-modified-since', 'if-unmodified-since', 'max-forwards'])

/** Empty or only spaces/tabs (Node trims a header value's ends, so this is usually `''`). */
function isBlank(v: string): boolean {
  return v.length === 0 || v.trim().length === 0
}

export interface ForwardOptions {
  trustIncoming: boolean
  /** Host header toward the upstream; undefined keeps the client's. */
  hostRewrite: string | undefined
  /** Host to use when the client sent none (HTTP/1.0). */
  upstreamHost: string
  /** Content-Length for a body the proxy re-serialized; undefined keeps the client's. */
  contentLength: number | undefined
}

/**
 * Headers for the upstream request as a flat [name, value, …] list (undici's cheapest form).
 * Drops hop-by-hop and those the Connection header names, sets Host and X-Forwarded-*,
 * then applies the filters' edits (ctx.upstreamHeaderEdits).
 */
export function upstreamRequestHeaders(ctx: RequestContext, opts: ForwardOptions): string[] {
  const raw = ctx.req.rawHeaders
  const out: string[] = []
  const listed = connectionListed(ctx.req.headers.connection)
  const edits = ctx.upstreamHeaderEdits
  let xff: string | undefined
  let xfp: string | undefined
  let xfh: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const lower = name.toLowerCase()
    if (isHopByHop(lower) || (listed !== undefined && listed.has(lower) && !keptAgainstConnection(lower, ctx))) continue
    if (lower.includes('_') && shadowsHeader(lower, ctx, listed)) continue
    switch (lower) {
      case 'host':
      case 'expect': // 100-continue is answered by the proxy's own server, not relayed
        continue
      case 'content-length':
        if (opts.contentLength !== undefined) continue
        break
      // An empty incoming value names no hop (as Envoy appends to it): kept, it sent the backend
      // `X-Forwarded-For: , 10.0.0.7` (a blank client address for readers of the first entry),
      // and `X-Forwarded-Proto:`/`-Host:` empty in place of the proxy's own `http` and Host.
      case 'x-forwarded-for':
        if (opts.trustIncoming && !isBlank(raw[i + 1]!)) xff = xff === undefined ? raw[i + 1]! : `${xff}, ${raw[i + 1]!}`
        continue
      case 'x-forwarded-proto':
        if (opts.trustIncoming && xfp === undefined && !isBlank(raw[i + 1]!)) xfp = raw[i + 1]!
        continue
      case 'x-forwarded-host':
        if (opts.trustIncoming && xfh === undefined && !isBlank(raw[i + 1]!)) xfh = raw[i + 1]!
        continue
      // At the edge (trustIncoming false) every header that claims to describe an earlier hop
      // is the client's own word: RFC 7239 Forwarded, X-Real-IP and the other X-Forwarded-*
      // (Port, Prefix, Ssl, Scheme…) that frameworks read for the client address, scheme and
      // base URL. Relayed, a client spoofed them past the gateway that "replaces X-Forwarded-*".
      case 'forwarded':
      case 'x-real-ip':
        if (!opts.trustIncoming) continue
        break
      default:
        if (!opts.trustIncoming && lower.startsWith('x-forwarded-')) continue
    }
    if (edits !== undefined && edits.has(lower)) continue
    if (READ_ONCE.has(lower) && raw[i + 1] !== ctx.req.headers[lower]) continue
    out.push(name, raw[i + 1]!)
  }
  const clientHost = ctx.host
  out.push('host', opts.hostRewrite ?? (clientHost || opts.upstreamHost))
  if (opts.contentLength !== undefined) out.push('content-length', String(opts.contentLength))
  // A filter's X-Forwarded-* (a trusted-edge filter naming the real client) is the value sent, in
  // place of the proxy's own (null: none is sent). Pushed beside it, the backend got two headers
  // and read "filter's, proxy's" joined (X-Forwarded-For) or whichever its framework took first.
  if (edits === undefined || !edits.has('x-forwarded-for')) {
    const ip = ctx.clientIp.startsWith('::ffff:') ? ctx.clientIp.slice(7) : ctx.clientIp
    out.push('x-forwarded-for', xff === undefined ? ip : `${xff}, ${ip}`)
  }
  if (edits === undefined || !edits.has('x-forwarded-proto')) out.push('x-forwarded-proto', xfp ?? 'http')
  if ((xfh !== undefined || clientHost) && (edits === undefined || !edits.has('x-forwarded-host'))) out.push('x-forwarded-host', xfh ?? clientHost)
  if (edits !== undefined) {
    for (const [name, value] of edits) if (value !== null) out.push(name, value)
  }
  return out
}

/**
 * Response headers for the client as a flat list: the upstream's minus hop-by-hop, with the
 * chain's additions (ctx.responseHeaders) replacing same-named upstream headers — but for
 * Set-Cookie, which is never replaced nor combined (RFC 6265 §3): the chain's are added to the
 * upstream's, each its own header line.
 */
export function clientResponseHeaders(upstream: Record<string, string | string[] | undefined>, added: string[] | undefined, keepTrailer = false): string[] {
  const out: string[] = []
  const connection = upstream.connection
  const listed = connectionListed(Array.isArray(connection) ? connection.join(',') : connection)
  let length: string | string[] | undefined
  for (const name in upstream) {
    if ((isHopByHop(name) && !(keepTrailer && name === 'trailer')) || (listed !== undefined && listed.has(name))) continue
    if (added !== undefined && name !== 'set-cookie' && indexOfName(added, name) !== -1) continue
    const value = upstream[name]
    if (value === undefined) continue
    if (name === 'content-length') length = value
    else if (typeof value === 'string') out.push(name, value)
    else for (const v of value) out.push(name, v)
  }
  if (added !== undefined) for (let i = 0; i < added.length; i++) out.push(added[i]!)
  if (length !== undefined) pushLength(out, length)
  return out
}

/**
 * Content-Length goes last. Node's writeHead re-encodes a Content-Disposition that comes after
 * a Content-Length (nodejs/node#46528: it expects characters, we relay bytes as latin1): a raw
 * UTF-8 filename then had its bytes changed, or made writeHead throw (a 502 for a good response).
 */
function pushLength(out: string[], length: string | string[]): void {
  if (typeof length === 'string') out.push('content-length', length)
  else for (const v of length) out.push('content-length', v)
}

/** Remove every Content-Length from a flat header list (they are last: see pushLength). */
export function dropContentLength(list: string[]): void {
  while (list.length >= 2 && list[list.length - 2]!.toLowerCase() === 'content-length') list.length -= 2
}

/**
 * True when a TE header lists `trailers` (RFC 9110 §10.1.4): the client reads trailer fields, so
 * the upstream's may be relayed to it.
 */
export function acceptsTrailers(te: string): boolean {
  for (const t of te.split(',')) if (t.split(';')[0]!.trim().toLowerCase() === 'trailers') return true
  return false
}

/**
 * An upstream's trailer fields the client may get: none that is hop-by-hop or that RFC 9110
 * §6.5.1 keeps out of trailers (framing, routing, the content's own metadata).
 */
export function relayableTrailers(trailers: Record<string, string | string[] | undefined>): Record<string, string | string[]> | undefined {
  let out: Record<string, string | string[]> | undefined
  for (const name in trailers) {
    const lower = name.toLowerCase()
    const value = trailers[name]
    if (value === undefined || isHopByHop(lower) || NOT_IN_TRAILERS.has(lower)) continue
    ;(out ??= {})[lower] = value
  }
  return out
}
const NOT_IN_TRAILERS = new Set(['content-length', 'host', 'content-encoding', 'content-type', 'content-range', 'set-cookie', 'cache-control', 'expires', 'date', 'location', 'retry-after', 'vary', 'authorization', 'www-authenticate'])

/** Same as clientResponseHeaders but into a mutable object, for the response phase. */
export function responseHeaderObject(upstream: Record<string, string | string[] | undefined>, added: string[] | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const connection = upstream.connection
  const listed = connectionListed(Array.isArray(connection) ? connection.join(',') : connection)
  for (const name in upstream) {
    if (isHopByHop(name) || (listed !== undefined && listed.has(name))) continue
    const value = upstream[name]
    if (value !== undefined) out[name] = value
  }
  if (added !== undefined) applyAddedHeaders(out, added)
  return out
}

/**
 * Put a filter's response header into a header object: it replaces one of that name, except
 * Set-Cookie, which is appended (RFC 6265 §3: never combined nor replaced; several filters' and
 * the upstream's cookies all reach the client, each its own header line).
 */
export function addResponseHeaderTo(headers: Record<string, string | string[]>, lower: string, value: string): void {
  const old = lower === 'set-cookie' ? headers[lower] : undefined
  if (old === undefined) headers[lower] = value
  else headers[lower] = typeof old === 'string' ? [old, value] : [...old, value]
}

/** The chain's additions (ctx.responseHeaders, a flat list) into a header object, by addResponseHeaderTo. */
export function applyAddedHeaders(headers: Record<string, string | string[]>, added: string[]): void {
  for (let i = 0; i < added.length; i += 2) addResponseHeaderTo(headers, added[i]!, added[i + 1]!)
}

function indexOfName(list: string[], name: string): number {
  for (let i = 0; i < list.length; i += 2) if (list[i] === name) return i
  return -1
}

/**
 * Flatten a header object for res.writeHead, dropping hop-by-hop names a filter may have added.
 * `trailer` is the exception: at this point the headers are ours (the upstream's Trailer was
 * dropped, or kept for the trailers the proxy relays), and a filter that will send trailers (DLP
 * counts on a stream) announces them.
 * Names are compared in any case: a filter's LocalReply or `res.headers` written the Node way
 * (`'Content-Length'`, `'Transfer-Encoding'`) went out beside the proxy's own `content-length` —
 * two differing lengths, or chunked beside a length: a broken or smuggled response framing. The
 * only Content-Length sent is the lower-case one the proxy sets (or keeps from the upstream).
 */
export function flattenHeaders(headers: Record<string, string | string[]>): string[] {
  const out: string[] = []
  for (const name in headers) {
    const lower = name.toLowerCase() // (V8 returns an already lower-case name as it is)
    if (lower === 'content-length' || (lower !== 'trailer' && isHopByHop(lower))) continue
    const value = headers[name]!
    if (typeof value === 'string') out.push(name, value)
    else for (const v of value) out.push(name, v)
  }
  const length = headers['content-length']
  if (length !== undefined) pushLength(out, length) // last: see pushLength
  return out
}

/** Transfer-Encoding `chunked` alone (any case, surrounding spaces): what undici and node:http decode. */
export function chunkedOnly(te: string | string[]): boolean {
  return typeof te === 'string' && te.trim().toLowerCase() === 'chunked'
}

// Request ids end up in logs and headers: their size and alphabet are bounded so a client
// cannot inject (the request-id filter keeps an incoming id by the same rule).
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/

export function isSafeRequestId(id: string): boolean {
  return SAFE_REQUEST_ID.test(id)
}

/**
 * The client's x-request-id to name a request by before the chain ran (a body refused with
 * 413/415/400 is logged with it), or '' when it is not one the request-id filter would keep: a
 * 16 KB non-ASCII value went verbatim into the access log of exactly those refusals.
 */
export function incomingRequestId(value: string | string[] | undefined): string {
  return typeof value === 'string' && SAFE_REQUEST_ID.test(value) ? value : ''
}

/**
 * The incoming id a request is named by before its route's request-id filter ran, by that
 * filter's rule: its header (not always x-request-id), and none when it trusts no incoming id
 * (trustIncoming: false) — a client-chosen x-request-id was logged as the gateway's own on
 * exactly the requests refused before the chain. Without the filter: x-request-id, as before.
 */
export function routeIncomingRequestId(route: { readonly requestId?: { readonly header: string; readonly trustIncoming: boolean } }, headers: IncomingHttpHeaders): string {
  const p = route.requestId
  if (p === undefined) return incomingRequestId(headers['x-request-id'])
  return p.trustIncoming ? incomingRequestId(headers[p.header]) : ''
}

/**
 * A Retry-After value (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) in ms from `now`; 0 when
 * absent, past or not understood. Callers cap it: a wrong or hostile value must not park them.
 */
export function retryAfterMs(value: string | string[] | undefined, now: number): number {
  const v = (Array.isArray(value) ? value[0] : value)?.trim()
  if (v === undefined || v === '') return 0
  const ms = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v) - now
  return ms > 0 ? ms : 0 // NaN (unreadable) and the past are 0
}

/**
 * The charset parameter of a Content-Type, lower case and unquoted; undefined when it has none.
 * A parameter, not any text: `x-charset=utf-16` and a `charset=` before the first `;` name none.
 */
export function charsetOf(contentType: string | string[] | undefined): string | undefined {
  const ct = Array.isArray(contentType) ? contentType[0] : contentType
  const semi = ct === undefined ? -1 : ct.indexOf(';')
  if (semi === -1) return undefined
  const m = /;\s*charset\s*=\s*("([^"]*)"|[^;\s]*)/i.exec(ct!.slice(semi))
  return m === null ? undefined : (m[2] ?? m[1]!).toLowerCase()
}
