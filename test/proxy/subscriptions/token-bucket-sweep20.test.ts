// A very small delivery rate (qos.<tier>.ratePerSec below ~5e-7/s) made the wait for the next
// token longer than setTimeout can hold; Node then fires such a timer after 1 ms, so the
// connection's pump woke every millisecond for nothing.
import { describe, expect, it } from 'vitest'
import { TokenBucket } from '../../../proxy/subscriptions/token-bucket.ts'

describe('TokenBucket.waitMs at a tiny rate', () => {
  it('never exceeds the longest delay a timer can hold, and still says "wait"', () => {
    const b = new TokenBucket(1e-7, 1, 0)
    expect(b.take(0)).toBe(true)
    const wait = b.waitMs(0)
    expect(wait).toBeGreaterThan(0)
    expect(wait).toBeLessThanOrEqual(2 ** 31 - 1)
    // Waiting that long really does not fire early: a timer given this delay is not overflowed.
    let warned = false
    const onWarning = (w: Error) => {
      if (w.name === 'TimeoutOverflowWarning') warned = true
    }
    process.on('warning', onWarning)
    const t = setTimeout(() => undefined, wait)
    clearTimeout(t)
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        process.off('warning', onWarning)
        expect(warned).toBe(false)
        resolve()
      }),
    )
  })

  it('a normal rate keeps its exact wait', () => {
    const b = new TokenBucket(10, 1, 0)
    expect(b.take(0)).toBe(true)
    expect(b.waitMs(0)).toBe(100)
    expect(b.waitMs(40)).toBe(60)
  })
})
