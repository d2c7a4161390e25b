import { describe, expect, it } from 'vitest'
import { TokenBucket } from '../../../proxy/subscriptions/token-bucket.ts'

describe('delivery token bucket', () => {
  it('allows a burst, then the rate', () => {
    const b = new TokenBucket(10, 3, 0)
    expect([b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([true, true, true, false])
    expect(b.waitMs(0)).toBe(100)
    expect(b.take(50)).toBe(false)
    expect(b.waitMs(50)).toBe(50)
    expect(b.take(100)).toBe(true)
    expect(b.take(100)).toBe(false)
  })

  it('never holds more than its burst however long it idles', () => {
    const b = new TokenBucket(100, 5, 0)
    expect(b.tokens(1_000_000)).toBe(5)
    let n = 0
    while (b.take(1_000_000)) n++
    expect(n).toBe(5)
  })

  it('rate 0 is unlimited', () => {
    const b = new TokenBucket(0, 1, 0)
    for (let i = 0; i < 10_000; i++) expect(b.take(0)).toBe(true)
    expect(b.waitMs(0)).toBe(0)
    expect(b.unlimited).toBe(true)
  })

  it('ignores time going backwards', () => {
    const b = new TokenBucket(1, 1, 1000)
    expect(b.take(1000)).toBe(true)
    expect(b.take(500)).toBe(false)
    expect(b.take(2000)).toBe(true)
  })
})
