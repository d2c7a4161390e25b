// The byte-paced collection itself: dead Buffers outside the V8 heap, little JS allocated, so
// nothing but relayed() can collect them here (in vitest's worker process, a real V8 heap).
import { afterEach, describe, expect, it } from 'vitest'
import { configureStreamGc, relayed } from '../../proxy/stream-gc.ts'

const MB = 1024 * 1024

/** 16 MB in 64 KB Buffers of their own (not the pool), dropped at once. */
function dropDeadBuffers(): void {
  let keep = 0
  for (let i = 0; i < 256; i++) keep += Buffer.allocUnsafeSlow(64 * 1024).length
  expect(keep).toBe(16 * MB)
}

/**
 * External memory once it stops moving: a collection's freed backing stores are swept
 * concurrently, and in a fork that ran other files before this one (isolate: false) that sweep
 * can still be freeing their garbage after the collection returned, under a base read too early.
 */
async function settledArrayBuffers(): Promise<number> {
  let last = process.memoryUsage().arrayBuffers
  for (let still = 0, until = Date.now() + 1_000; still < 4 && Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 5))
    const now = process.memoryUsage().arrayBuffers
    still = now === last ? still + 1 : 0
    last = now
  }
  return last
}

afterEach(() => configureStreamGc(0))

describe('stream-gc', () => {
  it('a relayed byte count past the budget collects dead read buffers; under it, nothing runs', async () => {
    configureStreamGc(8)
    relayed(8 * MB) // start from a collected young generation
    const base = await settledArrayBuffers()
    dropDeadBuffers()
    expect(process.memoryUsage().arrayBuffers - base).toBeGreaterThan(15 * MB)
    relayed(4 * MB) // half the budget: no collection yet
    expect(process.memoryUsage().arrayBuffers - base).toBeGreaterThan(15 * MB)
    relayed(4 * MB)
    // Freed backing stores are swept concurrently: the count drops a moment later.
    await expect.poll(() => process.memoryUsage().arrayBuffers - base, { timeout: 200, interval: 5 }).toBeLessThan(2 * MB)
  })

  it('0 turns it off: relayed bytes never collect (and nothing else does in the same window)', async () => {
    configureStreamGc(0)
    const base = await settledArrayBuffers()
    dropDeadBuffers()
    for (let i = 0; i < 64; i++) relayed(MB)
    await new Promise((r) => setTimeout(r, 200))
    expect(process.memoryUsage().arrayBuffers - base).toBeGreaterThan(15 * MB)
  })

  it('leaves no gc global behind', () => {
    configureStreamGc(8)
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined()
  })
})
