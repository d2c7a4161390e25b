// text/event-stream (WHATWG HTML, "server-sent events"): the line grammar shared by the control
// plane's config stream (control-plane-client.ts) and the cache's reading of GraphQL-over-SSE
// mutation answers (filters/cache); and graphql-sse's reservation token (filters/dlp).

/** A non-empty line of an event as its field and value (one space after the colon dropped); undefined for a comment. */
export function sseField(line: string): [field: string, value: string] | undefined {
  if (line.charCodeAt(0) === 58) return undefined // ':' starts a comment
  const c = line.indexOf(':')
  if (c === -1) return [line, '']
  return [line.slice(0, c), line.charCodeAt(c + 1) === 32 ? line.slice(c + 2) : line.slice(c + 1)]
}

/**
 * graphql-sse's single connection mode (its PROTOCOL.md): the reservation token a request carries,
 * in the `X-GraphQL-Event-Stream-Token` header or the `token` search parameter (an EventSource
 * cannot set headers); undefined when it carries none.
 */
export function streamToken(headers: Record<string, string | string[] | undefined>, url: string): string | undefined {
  const h = headers['x-graphql-event-stream-token']
  if (h !== undefined) return Array.isArray(h) ? h.join('') : h
  const q = url.indexOf('?')
  if (q === -1 || !url.includes('token=', q)) return undefined
  return new URLSearchParams(url.slice(q + 1)).get('token') ?? undefined
}
