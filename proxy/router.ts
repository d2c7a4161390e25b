// Route matching. Most specific host first (exact, then the longest "*.suffix", then routes
// without a host), and within a host the longest path prefix wins, as Kubernetes ingress
// controllers do. A prefix is a plain string prefix, as Envoy's `prefix` and nginx's `location`
// ("/api" takes "/apix"), except that one ending in "/" also takes the path without that slash:
// "/admin/" takes "/admin" and "/admin?x" (nginx answers those with a redirect to "/admin/"). They
// went to the catch-all route instead, past the admin route's filters, to a backend that serves
// "/admin" as "/admin/". A sidecar with one catch-all route skips all of it. A configured host
// with a port ("api.example.com:8080", "*.example.com:8080") matches that port only, before the same
// host without one; a configured host without a port matches any port.

export interface Routable {
  readonly name: string
  readonly host: string | undefined
  readonly pathPrefix: string
}

export class Router<R extends Routable> {
  readonly #exact = new Map<string, Entry<R>[]>()
  /** `withPort`: the suffix names a port (".example.com:8080"): compared with the Host as sent. */
  readonly #wildcard: { suffix: string; withPort: boolean; routes: Entry<R>[] }[] = []
  readonly #any: Entry<R>[] = []
  readonly #only: R | undefined

  constructor(routes: readonly R[]) {
    const byPrefix = (a: Entry<R>, b: Entry<R>) => b.route.pathPrefix.length - a.route.pathPrefix.length
    for (const route of routes) {
      const r = entry(route)
      if (route.host === undefined) this.#any.push(r)
      else if (route.host.startsWith('*.')) {
        const suffix = route.host.slice(1) // ".example.com"
        let group = this.#wildcard.find((w) => w.suffix === suffix)
        if (!group) this.#wildcard.push((group = { suffix, withPort: suffix.includes(':'), routes: [] }))
        group.routes.push(r)
      } else {
        const list = this.#exact.get(route.host) ?? []
        list.push(r)
        this.#exact.set(route.host, list)
      }
    }
    this.#any.sort(byPrefix)
    for (const list of this.#exact.values()) list.sort(byPrefix)
    for (const w of this.#wildcard) w.routes.sort(byPrefix)
    // The longest name first (its port aside); for one name, the group with a port first.
    const nameLength = (w: { suffix: string; withPort: boolean }) => (w.withPort ? w.suffix.lastIndexOf(':') : w.suffix.length)
    this.#wildcard.sort((a, b) => nameLength(b) - nameLength(a) || Number(b.withPort) - Number(a.withPort))
    this.#only = routes.length === 1 && routes[0]!.host === undefined && routes[0]!.pathPrefix === '/' ? routes[0] : undefined
  }

  match(hostHeader: string | undefined, path: string): R | undefined {
    if (this.#only !== undefined) return this.#only
    if (hostHeader && (this.#exact.size > 0 || this.#wildcard.length > 0)) {
      let host = hostHeader.toLowerCase()
      let bare = stripPort(host)
      if (bare.length > 1 && bare.charCodeAt(bare.length - 1) === 46 /* . */) {
        // "admin.example.com." (an absolute domain name) is the same host as "admin.example.com":
        // DNS takes clients to us by either, backends serve either (nginx matches both), and
        // unmatched it fell through to the host-less routes — past the host's filters.
        const name = bare.slice(0, -1)
        host = name + host.slice(bare.length)
        bare = name
      }
      // The host with its port first, then without: routes for "host:port" that take only some
      // paths leave the others to the routes for the host on any port.
      const exact = this.#exact.get(host)
      const hit = (exact && byPath(exact, path)) || (bare !== host ? byPathIn(this.#exact.get(bare), path) : undefined)
      if (hit) return hit
      for (const w of this.#wildcard) {
        // A wildcard with a port is compared with the Host as sent (a Host without a port never
        // matches it); one without, with the Host's name (any port).
        const h = w.withPort ? host : bare
        if (h.endsWith(w.suffix) && h.length > w.suffix.length) {
          const r = byPath(w.routes, path)
          if (r) return r
        }
      }
    }
    return byPath(this.#any, path)
  }
}

/** A route, and for a prefix ending in "/" (not "/" itself) that prefix without it. */
interface Entry<R> {
  readonly route: R
  readonly bare: string | undefined
}

function entry<R extends Routable>(route: R): Entry<R> {
  const p = route.pathPrefix
  return { route, bare: p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : undefined }
}

function byPathIn<R extends Routable>(routes: readonly Entry<R>[] | undefined, path: string): R | undefined {
  return routes === undefined ? undefined : byPath(routes, path)
}

/** The first route whose prefix starts the path (the request target), or whose "/"-less prefix is the whole path. */
function byPath<R extends Routable>(routes: readonly Entry<R>[], path: string): R | undefined {
  for (const e of routes) {
    if (path.startsWith(e.route.pathPrefix)) return e.route
    const bare = e.bare
    if (bare !== undefined && path.startsWith(bare) && (path.length === bare.length || path.charCodeAt(bare.length) === 63 /* ? */)) return e.route
  }
  return undefined
}

/**
 * A Host as the site it names: lower case, without its port (`[::1]:8080` → `[::1]`). Routing
 * matches on it; the cache keys by it and a subscription stream's identity holds it, so replicas
 * reached on other ports share entries and cursors while another name never does.
 */
export function siteOf(host: string): string {
  return stripPort(host.toLowerCase())
}

function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']')
    return end === -1 ? host : host.slice(0, end + 1)
  }
  const i = host.lastIndexOf(':')
  return i === -1 ? host : host.slice(0, i)
}
