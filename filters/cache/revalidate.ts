// The upstream request of a stale-while-revalidate refresh: the client's request as the proxy
// would forward it (end-to-end headers plus the filters' edits), sent from the filter on the
// route's own pool, read up to the entry size limit.
import type { RequestContext } from '../../proxy/filter.ts'

const HOP = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'expect', 'http2-settings'])

export function revalidationHeaders(ctx: RequestContext, bodyLength: number | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  const raw = ctx.req.rawHeaders
  const edits = ctx.upstreamHeaderEdits
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase()
    if (HOP.has(lower) || lower.startsWith('proxy-') || edits?.has(lower)) continue
    out[lower] = out[lower] === undefined ? raw[i + 1]! : `${out[lower]}, ${raw[i + 1]!}`
  }
  if (edits !== undefined) for (const [k, v] of edits) if (v !== null) out[k] = v
  if (ctx.route.hostRewrite !== undefined) out.host = ctx.route.hostRewrite
  if (bodyLength !== undefined) {
    out['content-length'] = String(bodyLength)
    out['content-type'] ??= 'application/json'
  }
  return out
}

export interface FetchedResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** undefined when the body exceeded maxBytes. */
  body: Buffer | undefined
}

/**
 * Send the refresh. What it sends is read from ctx now (the client's request is over by the time
 * `after` resolves); the upstream request starts only once `after` has (the L2 sequence must be
 * taken before the upstream reads its data).
 */
export async function fetchForRevalidation(ctx: RequestContext, maxBytes: number, after?: Promise<unknown>): Promise<FetchedResponse> {
  const gql = ctx.graphql!
  const post = ctx.method === 'POST'
  const body = post ? gql.toBody() : undefined
  const path = post ? ctx.url : gql.dirty ? gql.toGetPath(ctx.url) : ctx.url
  const timeoutMs = ctx.route.timeouts.totalMs > 0 ? ctx.route.timeouts.totalMs : 60_000
  const pool = ctx.route.upstream.pool
  const headers = revalidationHeaders(ctx, body?.length)
  if (after !== undefined) await after
  const res = await pool.request({
    path,
    method: post ? 'POST' : 'GET',
    headers,
    body,
    signal: AbortSignal.timeout(timeoutMs),
  })
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of res.body) {
    size += (c as Buffer).length
    if (size > maxBytes) {
      res.body.destroy()
      return { status: res.statusCode, headers: res.headers, body: undefined }
    }
    chunks.push(c as Buffer)
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks, size) }
}
