// Upstream reachability for /readyz: a TCP connect (or an HTTP GET when a path is set) per
// upstream, on an interval, from the supervisor thread only.
import { connect } from 'node:net'
import { request } from 'undici'
import { resolveRouteUpstream } from '../config/resolve.ts'
import type { GatewayConfig, UpstreamConfig } from '../config/schema.ts'

export interface UpstreamState {
  name: string
  url: string
  healthy: boolean
  checked: boolean
  error: string | undefined
}

function tcpProbe(url: URL, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80))
    const host = url.hostname.replace(/^\[|\]$/g, '')
    const socket = connect({ host, port })
    const timer = setTimeout(() => socket.destroy(new Error(`connect timed out after ${timeoutMs} ms`)), timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      // destroy, not end: end() only half-closes, and the socket then waits for the backend to
      // close its side. A backend that keeps half-open connections (allowHalfOpen servers, some
      // TCP services) never does, and each probe (every intervalMs) left one socket open here.
      socket.destroy()
      resolve()
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

async function httpProbe(url: URL, path: string, timeoutMs: number): Promise<void> {
  // The path is appended to the upstream's origin, never resolved against it: resolved, a path
  // starting with "//" ("//healthz", "//status/live") is a network-path reference naming another
  // host, so the probe asked host "healthz" (DNS failure: the upstream unready for good) or
  // whatever host the path named, and its answer decided this upstream's health.
  const res = await request(`${url.origin}${path}`, { method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) })
  await res.body.dump()
  // 200–399 is healthy, as a Kubernetes httpGet probe (Envoy expects 200 only): a 4xx is a
  // mistyped path or a backend refusing the probe, never a sign that it serves.
  if (res.statusCode >= 400) throw new Error(`health check answered ${res.statusCode}`)
}

/**
 * Why a probe failed, as /readyz shows it. A connect to a name with several addresses (localhost
 * on a dual-stack pod: ::1 and 127.0.0.1) fails with an AggregateError whose message is empty:
 * an upstream that was down read `"error": ""`. Its attempts' messages are shown instead.
 */
export function probeError(err: unknown): string {
  const e = err as { message?: unknown; errors?: unknown; code?: unknown } | null | undefined
  if (typeof e?.message === 'string' && e.message !== '') return e.message
  const inner = Array.isArray(e?.errors) ? e.errors.map((x) => probeError(x)).filter((m) => m !== '') : []
  if (inner.length > 0) return inner.join('; ')
  return typeof e?.code === 'string' ? e.code : String(err)
}

export class UpstreamHealth {
  readonly states = new Map<string, UpstreamState>()
  readonly #timers: NodeJS.Timeout[] = []
  #onChange: ((s: UpstreamState) => void) | undefined

  /**
   * `previous`: the checker of the config this one replaces. An upstream it already knows (same
   * name and URL) keeps its last verdict until the first probe here answers, so a reload does not
   * turn /readyz to 503 (and take the pod out of its Service) while that probe is in flight.
   */
  constructor(config: GatewayConfig, onChange?: (s: UpstreamState) => void, previous?: UpstreamHealth) {
    this.#onChange = onChange
    const defs = new Map<string, UpstreamConfig>()
    for (const route of config.routes) {
      const { name, def } = resolveRouteUpstream(config, route)
      if (def.healthCheck.enabled) defs.set(name, def)
    }
    for (const [name, def] of defs) {
      const known = previous?.states.get(name)
      const state: UpstreamState =
        known !== undefined && known.url === def.url && known.checked
          ? { name, url: def.url, healthy: known.healthy, checked: true, error: known.error }
          : { name, url: def.url, healthy: false, checked: false, error: undefined }
      this.states.set(name, state)
      // One probe at a time per upstream (as Envoy's health checker): with intervalMs below
      // timeoutMs a slow or blackholed upstream piled up overlapping probes, and a late failure
      // of an older one overwrote the verdict of a newer success (readiness flapped).
      let inFlight = false
      const probe = () => {
        if (inFlight) return
        inFlight = true
        void this.#probe(state, def).finally(() => {
          inFlight = false
        })
      }
      probe()
      const t = setInterval(probe, def.healthCheck.intervalMs)
      t.unref()
      this.#timers.push(t)
    }
  }

  async #probe(state: UpstreamState, def: UpstreamConfig): Promise<void> {
    const url = new URL(def.url)
    try {
      if (def.healthCheck.path !== undefined) await httpProbe(url, def.healthCheck.path, def.healthCheck.timeoutMs)
      else await tcpProbe(url, def.healthCheck.timeoutMs)
      this.#set(state, true, undefined)
    } catch (err) {
      this.#set(state, false, probeError(err))
    }
  }

  #set(state: UpstreamState, healthy: boolean, error: string | undefined): void {
    const changed = !state.checked || state.healthy !== healthy
    state.healthy = healthy
    state.error = error
    state.checked = true
    if (changed) this.#onChange?.(state)
  }

  stop(): void {
    for (const t of this.#timers) clearInterval(t)
    this.#onChange = undefined
  }
}
