// Route matching. Most specific host first (exact, then the longest "*.suffix", then routes
// without a host), and within a host the longest path prefix wins, as Kubernetes ingress
// controllers do. A sidecar with one catch-all route skips all of it.

export interface Routable {
  readonly name: string
  readonly host: string | undefined
  readonly pathPrefix: string
}

export class Router<R extends Routable> {
  readonly #exact = new Map<string, R[]>()
  readonly #wildcard: { suffix: string; routes: R[] }[] = []
  readonly #any: R[] = []
  readonly #only: R | undefined

  constructor(routes: readonly R[]) {
    const byPrefix = (a: R, b: R) => b.pathPrefix.length - a.pathPrefix.length
    for (const r of routes) {
      if (r.host === undefined) this.#any.push(r)
      else if (r.host.startsWith('*.')) {
        const suffix = r.host.slice(1) // ".example.com"
        let group = this.#wildcard.find((w) => w.suffix === suffix)
        if (!group) this.#wildcard.push((group = { suffix, routes: [] }))
        group.routes.push(r)
      } else {
        const list = this.#exact.get(r.host) ?? []
        list.push(r)
        this.#exact.set(r.host, list)
      }
    }
    this.#any.sort(byPrefix)
    for (const list of this.#exact.values()) list.sort(byPrefix)
    for (const w of this.#wildcard) w.routes.sort(byPrefix)
    this.#wildcard.sort((a, b) => b.suffix.length - a.suffix.length)
    this.#only = routes.length === 1 && routes[0]!.host === undefined && routes[0]!.pathPrefix === '/' ? routes[0] : undefined
  }

  match(hostHeader: string | undefined, path: string): R | undefined {
    if (this.#only !== undefined) return this.#only
    if (hostHeader && (this.#exact.size > 0 || this.#wildcard.length > 0)) {
      const host = hostHeader.toLowerCase()
      const bare = stripPort(host)
      const exact = this.#exact.get(host) ?? (bare !== host ? this.#exact.get(bare) : undefined)
      const hit = exact && byPath(exact, path)
      if (hit) return hit
      for (const w of this.#wildcard) {
        if (bare.endsWith(w.suffix) && bare.length > w.suffix.length) {
          const r = byPath(w.routes, path)
          if (r) return r
        }
      }
    }
    return byPath(this.#any, path)
  }
}

function byPath<R extends Routable>(routes: readonly R[], path: string): R | undefined {
  for (const r of routes) if (path.startsWith(r.pathPrefix)) return r
  return undefined
}

function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']')
    return end === -1 ? host : host.slice(0, end + 1)
  }
  const i = host.lastIndexOf(':')
  return i === -1 ? host : host.slice(0, i)
}
