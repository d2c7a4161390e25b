// QoS admission under overload. Load is the larger of two ratios: requests in flight across the
// whole process (all worker threads, counted in shared memory) over `maxInFlight`, and this
// thread's event-loop delay over `maxEventLoopDelayMs`. Each tier is shed once load reaches its
// `shedAt` (bronze 0.7, silver 0.85, gold 1 by default): bronze goes first, then silver, and
// gold is served while any capacity remains.
import { monitorEventLoopDelay } from 'node:perf_hooks'

type IntervalHistogram = ReturnType<typeof monitorEventLoopDelay>

export function loadRatio(inflight: number, maxInFlight: number, delayMs: number, maxDelayMs: number): number {
  let load = maxInFlight > 0 ? inflight / maxInFlight : 0
  if (maxDelayMs > 0) {
    const d = delayMs / maxDelayMs
    if (d > load) load = d
  }
  return load
}

/** Shed a request of a tier whose threshold is `shedAt`, given the load before admitting it? */
export function shouldShed(inflightBefore: number, maxInFlight: number, delayMs: number, maxDelayMs: number, shedAt: number): boolean {
  return loadRatio(inflightBefore, maxInFlight, delayMs, maxDelayMs) >= shedAt
}

const SAMPLE_MS = 500
/**
 * The monitor's timer period. Node's histogram records each whole period (an idle loop reads
 * ~10.2 ms, not ~0): that part is the timer, not delay, and is taken off — or `maxEventLoopDelayMs:
 * 10` shed even gold on an idle proxy, and 14 shed bronze.
 */
const RESOLUTION_MS = 10

/** This thread's recent event-loop delay (p90 of the last ~0.5 s), sampled off the hot path. */
export class EventLoopLoad {
  delayMs = 0
  readonly #h: IntervalHistogram
  #timer: NodeJS.Timeout | undefined

  constructor() {
    this.#h = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  }

  /** Sampling now? (Only while some filter instance of the thread sheds by event-loop delay.) */
  get running(): boolean {
    return this.#timer !== undefined
  }

  start(): void {
    if (this.#timer !== undefined) return
    // A restart measures from now: not the delays recorded before the last stop.
    this.#h.reset()
    this.#h.enable()
    this.#timer = setInterval(() => this.sample(), SAMPLE_MS)
    this.#timer.unref()
  }

  sample(): number {
    const h = this.#h
    this.delayMs = h.count > 0 ? Math.max(0, h.percentile(90) / 1e6 - RESOLUTION_MS) : 0
    h.reset()
    return this.delayMs
  }

  stop(): void {
    if (this.#timer === undefined) return
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#h.disable()
    // Not a figure any more: a later start must not shed on the load of an earlier period.
    this.delayMs = 0
  }
}
