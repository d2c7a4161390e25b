// Polling for a condition the test cannot await directly (a config push landing, a metric
// moving, a process becoming ready). Errors from the condition propagate.
import { setTimeout as sleep } from 'node:timers/promises'

export { sleep }

/** Resolves once `cond` holds; throws after `ms`, naming `what`. */
export async function waitUntil(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now()
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`${what} not met within ${ms} ms`)
    await sleep(20)
  }
}
