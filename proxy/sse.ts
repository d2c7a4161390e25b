// text/event-stream (WHATWG HTML, "server-sent events"): the line grammar shared by the control
// plane's config stream (control-plane-client.ts) and the cache's reading of GraphQL-over-SSE
// mutation answers (filters/cache).

/** A non-empty line of an event as its field and value (one space after the colon dropped); undefined for a comment. */
export function sseField(line: string): [field: string, value: string] | undefined {
  if (line.charCodeAt(0) === 58) return undefined // ':' starts a comment
  const c = line.indexOf(':')
  if (c === -1) return [line, '']
  return [line.slice(0, c), line.charCodeAt(c + 1) === 32 ? line.slice(c + 2) : line.slice(c + 1)]
}
