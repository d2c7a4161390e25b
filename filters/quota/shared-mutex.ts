// A mutex in one Int32 of shared memory, for the few-microsecond critical sections of a quota
// decision (bucket + daily + budget must change together, which one Atomics op cannot do).
// Three states (0 free, 1 held, 2 held with waiters; U. Drepper, "Futexes Are Tricky") so an
// uncontended unlock is one atomic and never a notify. Waiters spin briefly, then sleep in
// Atomics.wait. A holder that never returns (a worker thread terminated inside the section)
// would wedge every thread: after STEAL_MS the lock is taken over and the event counted.

const SPINS = 64
const STEAL_MS = 250

export const mutexStats = { steals: 0 }

export function lock(a: Int32Array, i: number): void {
  if (Atomics.compareExchange(a, i, 0, 1) === 0) return
  lockSlow(a, i)
}

function lockSlow(a: Int32Array, i: number): void {
  for (let n = 0; n < SPINS; n++) {
    if (Atomics.compareExchange(a, i, 0, 1) === 0) return
  }
  const started = performance.now()
  let c = Atomics.load(a, i)
  for (;;) {
    if (c === 2 || Atomics.compareExchange(a, i, 1, 2) !== 0) Atomics.wait(a, i, 2, 1)
    c = Atomics.compareExchange(a, i, 0, 2)
    if (c === 0) return
    if (performance.now() - started > STEAL_MS) {
      Atomics.store(a, i, 2)
      mutexStats.steals++
      return
    }
  }
}

export function unlock(a: Int32Array, i: number): void {
  if (Atomics.sub(a, i, 1) !== 1) {
    Atomics.store(a, i, 0)
    Atomics.notify(a, i, 1)
  }
}
