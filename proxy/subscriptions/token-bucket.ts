// A token bucket for one connection's delivery rate. Pure: time comes in as an argument, so
// the math is tested without clocks. Rate 0 means unlimited.

/** setTimeout's longest delay: a longer one fires after 1 ms (TimeoutOverflowWarning), a busy loop. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class TokenBucket {
  readonly ratePerMs: number
  readonly capacity: number
  #tokens: number
  #last: number

  constructor(ratePerSec: number, burst: number, now: number) {
    this.ratePerMs = ratePerSec / 1000
    this.capacity = Math.max(1, burst)
    this.#tokens = this.capacity
    this.#last = now
  }

  get unlimited(): boolean {
    return this.ratePerMs === 0
  }

  #refill(now: number): void {
    if (now > this.#last) {
      this.#tokens = Math.min(this.capacity, this.#tokens + (now - this.#last) * this.ratePerMs)
      this.#last = now
    }
  }

  /** Take one token if there is one. */
  take(now: number): boolean {
    if (this.ratePerMs === 0) return true
    this.#refill(now)
    if (this.#tokens >= 1) {
      this.#tokens -= 1
      return true
    }
    return false
  }

  /** Milliseconds until one token is available (0 when one is), at most a timer's longest delay. */
  waitMs(now: number): number {
    if (this.ratePerMs === 0) return 0
    this.#refill(now)
    return this.#tokens >= 1 ? 0 : Math.min(MAX_TIMER_MS, Math.ceil((1 - this.#tokens) / this.ratePerMs))
  }

  tokens(now: number): number {
    this.#refill(now)
    return this.ratePerMs === 0 ? Number.POSITIVE_INFINITY : this.#tokens
  }
}
