// A bounded memo for the per-value hot path (phone verdicts): two generations of Maps. Lookups
// hit the current generation, else the previous one (and are copied forward); when the current
// generation is full it becomes the previous one and the oldest generation is dropped whole.
// Memory stays bounded (at most `max` entries), values in use survive a turnover, and a get or
// set is one or two Map operations.
//
// Why not lru-cache here: its get() (options object, diagnostics-channel check, TTL and recency
// bookkeeping) measured ~200 ns against ~30 ns for a Map hit, and a phone verdict is looked up
// twice per record on mask exports (12% of the DLP worker's time in the bench profile). Exact
// least-recently-used order buys nothing for a memo of verdicts that are cheap to recompute.
export class GenerationalMemo<V> {
  readonly #generation: number
  #current = new Map<string, V>()
  #previous = new Map<string, V>()

  /** max: most entries held (two generations of max/2). */
  constructor(max: number) {
    this.#generation = Math.max(1, Math.floor(max / 2))
  }

  get(key: string): V | undefined {
    const v = this.#current.get(key)
    if (v !== undefined) return v
    const old = this.#previous.get(key)
    if (old !== undefined) this.set(key, old)
    return old
  }

  set(key: string, value: V): void {
    if (this.#current.size >= this.#generation) {
      this.#previous = this.#current
      this.#current = new Map()
    }
    this.#current.set(key, value)
  }

  get size(): number {
    return this.#current.size + this.#previous.size
  }

  clear(): void {
    this.#current = new Map()
    this.#previous = new Map()
  }
}
