// Byte-paced young-generation collections for relayed bodies (decision 0004).
//
// Every socket read hands JS a fresh Buffer whose bytes live outside the V8 heap. Relayed, it is
// garbage as soon as it is written, but V8 frees it only at a scavenge, and scavenges are paced
// by JS heap allocation, not by those bytes. How much JS a relayed chunk allocates depends on the
// machine (a client that keeps up never pauses the upstream, so little is allocated): a 200 MB
// response raised RSS by 24–69 MB here and by 99 MB on CI's faster machine, where V8's own
// external-memory trigger (~64 MB) was what finally collected. Counting relayed bytes and running
// a minor GC every `workerHeap.streamedMbPerGc` MB bounds the dead bytes whatever the pace.
//
// The collector is reached the way test runners do it (jest's leak detector): turn the flag on,
// take `gc` from a fresh context, turn it off again — no other context ever sees a `gc` global.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

type GcFunction = (options: { type: 'minor' | 'major'; execution: 'sync' | 'async' }) => void

let collect: GcFunction | undefined
let budget = Number.POSITIVE_INFINITY
let sinceGc = 0

function collector(): GcFunction | undefined {
  if (collect !== undefined) return collect
  const exposed = typeof (globalThis as { gc?: unknown }).gc === 'function'
  try {
    if (!exposed) setFlagsFromString('--expose-gc')
    collect = runInNewContext('gc') as GcFunction
  } catch {
    collect = undefined
  } finally {
    if (!exposed) setFlagsFromString('--no-expose-gc')
  }
  return collect
}

/** Set the budget (MB of relayed body bytes per collection); 0 turns it off. */
export function configureStreamGc(mb: number): void {
  budget = mb > 0 && collector() !== undefined ? mb * 1024 * 1024 : Number.POSITIVE_INFINITY
  sinceGc = 0
}

/** Count bytes relayed; past the budget, collect the young generation now (about a ms). */
export function relayed(bytes: number): void {
  sinceGc += bytes
  if (sinceGc >= budget) {
    sinceGc = 0
    collect!({ type: 'minor', execution: 'sync' })
  }
}
