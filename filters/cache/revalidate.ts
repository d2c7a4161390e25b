// The upstream request of a background refresh (stale-while-revalidate, refresh-ahead): the
// client's request as the proxy would forward it (end-to-end headers, Host, X-Forwarded-*, the
// filters' edits), sent from the filter on the route's own pool. Its head comes first: the body
// is read (up to the entry size limit) only for a response the cache will store.
import { upstreamRequestHeaders, type RequestContext } from '../../proxy/filter.ts'

export interface FetchedResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The whole body; undefined when it exceeded maxBytes. Rejects when it failed or timed out. */
  read(): Promise<Buffer | undefined>
  /** Drop the body unread: the upstream connection goes at once (a stream may never end). */
  discard(): void
}

/**
 * Send the refresh. What it sends is read from ctx now (the client's request is over by the time
 * `after` resolves); the upstream request starts only once `after` has (the L2 sequence must be
 * taken before the upstream reads its data).
 */
export async function fetchForRevalidation(ctx: RequestContext, maxBytes: number, trustIncoming: boolean, after?: Promise<unknown>): Promise<FetchedResponse> {
  const gql = ctx.graphql!
  // As the proxy's forward sends it (exchange.ts): a POST's body re-serialized; an edited GET's
  // rewritten target, or a POST when a filter's document made it too long for a URL.
  const sent = ctx.method === 'POST' ? { path: ctx.url, body: gql.toBody() } : gql.dirty ? gql.rewrittenGet(ctx.url) : { path: ctx.url }
  const post = sent.body !== undefined
  const timeoutMs = ctx.route.timeouts.totalMs > 0 ? ctx.route.timeouts.totalMs : 60_000
  const pool = ctx.route.upstream.pool
  // The proxy's own header rules: with undici's default Host, a wildcard-host route's refresh
  // asked the backend's default site and stored its answer under the client's site; and at the
  // edge (`trustIncoming` false) a client's X-Forwarded-Host reached the backend, whose answer
  // every client was then served.
  let headers = upstreamRequestHeaders(ctx, { trustIncoming, hostRewrite: ctx.route.hostRewrite, upstreamHost: ctx.route.upstream.authority, contentLength: sent.body?.length })
  if (post && ctx.method !== 'POST') {
    const kept: string[] = []
    for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() !== 'content-type') kept.push(headers[i]!, headers[i + 1]!)
    headers = [...kept, 'content-type', 'application/json']
  }
  if (after !== undefined) await after
  const res = await pool.request({
    path: sent.path,
    method: post ? 'POST' : 'GET',
    headers,
    body: sent.body,
    signal: AbortSignal.timeout(timeoutMs),
  })
  const body = res.body
  return {
    status: res.statusCode,
    headers: res.headers,
    async read() {
      const chunks: Buffer[] = []
      let size = 0
      for await (const c of body) {
        size += (c as Buffer).length
        if (size > maxBytes) {
          body.destroy()
          return undefined
        }
        chunks.push(c as Buffer)
      }
      return Buffer.concat(chunks, size)
    },
    discard: () => {
      // undici's body errors with RequestAbortedError when destroyed unread: unheard, that error
      // took the worker down.
      body.on('error', noop)
      body.destroy()
    },
  }
}

function noop(): void {}
