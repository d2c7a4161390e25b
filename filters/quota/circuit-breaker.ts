// The circuit breaker in front of Redis: after `failures` consecutive errors or timeouts that
// also span `afterMs` without a success, it opens, and for `openMs` no request touches Redis
// (each is decided by the outage policy at once, so an outage costs microseconds, not the
// Redis budget, per request). Then one probe request is let through; its success closes the
// breaker (a recovery), its failure reopens it. The time span keeps one stall — every call in
// flight timing out together on a machine that paused for 20 ms — from counting as an outage.

export const BREAKER = { closed: 0, open: 1, halfOpen: 2 } as const
export type BreakerState = (typeof BREAKER)[keyof typeof BREAKER]

export class CircuitBreaker {
  state: BreakerState = BREAKER.closed
  failures = 0
  openUntil = 0
  /** Closures after an outage: the number the recovery metric reports. */
  recoveries = 0
  #probeInFlight = false
  /** When the current run of failures began (the last success, or the first failure after it). */
  #failingSince = 0
  readonly #threshold: number
  readonly #openMs: number
  readonly #afterMs: number

  constructor(failures: number, openMs: number, afterMs = 0) {
    this.#threshold = failures
    this.#openMs = openMs
    this.#afterMs = afterMs
  }

  /** May this request try Redis? (In half-open, only the one probe may.) */
  allow(now: number): boolean {
    if (this.state === BREAKER.closed) return true
    if (this.state === BREAKER.open) {
      if (now < this.openUntil) return false
      this.state = BREAKER.halfOpen
      this.#probeInFlight = false
    }
    if (this.#probeInFlight) return false
    this.#probeInFlight = true
    return true
  }

  /** Returns true when this success closed an open breaker (a recovery). */
  success(): boolean {
    this.failures = 0
    if (this.state === BREAKER.closed) return false
    this.state = BREAKER.closed
    this.#probeInFlight = false
    this.recoveries++
    return true
  }

  /** Returns true when this failure opened the breaker. */
  failure(now: number): boolean {
    if (this.failures++ === 0) this.#failingSince = now
    if (this.state === BREAKER.halfOpen) {
      this.#probeInFlight = false
      this.state = BREAKER.open
      this.openUntil = now + this.#openMs
      return false
    }
    if (this.state === BREAKER.closed && this.failures >= this.#threshold && now - this.#failingSince >= this.#afterMs) {
      this.state = BREAKER.open
      this.openUntil = now + this.#openMs
      return true
    }
    return false
  }

  /** Milliseconds until a probe may go (0 when closed). */
  retryInMs(now: number): number {
    return this.state === BREAKER.closed ? 0 : Math.max(0, this.openUntil - now)
  }
}
