import { describe, expect, it } from 'vitest'
import { GenerationalMemo } from '../../../filters/dlp/generational-memo.ts'

describe('GenerationalMemo', () => {
  it('returns what was set and undefined for what was not', () => {
    const m = new GenerationalMemo<string>(8)
    m.set('a', '1')
    expect(m.get('a')).toBe('1')
    expect(m.get('b')).toBeUndefined()
  })

  it('never holds more than max entries, however many are set', () => {
    const m = new GenerationalMemo<number>(100)
    for (let i = 0; i < 10_000; i++) {
      m.set(`k${i}`, i)
      expect(m.size).toBeLessThanOrEqual(100)
    }
    // the newest half is still there, the oldest is gone
    expect(m.get('k9999')).toBe(9999)
    expect(m.get('k9950')).toBe(9950)
    expect(m.get('k0')).toBeUndefined()
    expect(m.get('k9000')).toBeUndefined()
  })

  it('keeps an entry that is read across a generation turnover', () => {
    const m = new GenerationalMemo<number>(4) // generations of 2
    m.set('hot', 1)
    m.set('a', 2) // current full: {hot, a}
    m.set('b', 3) // turnover: previous {hot, a}, current {b}
    expect(m.get('hot')).toBe(1) // read from the previous generation, copied forward
    m.set('c', 4) // turnover: previous {b, hot}, current {c}; "a" was never read and is gone
    expect(m.get('hot')).toBe(1)
    expect(m.get('a')).toBeUndefined()
  })

  it('clear() forgets everything', () => {
    const m = new GenerationalMemo<number>(10)
    m.set('a', 1)
    m.clear()
    expect(m.get('a')).toBeUndefined()
    expect(m.size).toBe(0)
  })
})
