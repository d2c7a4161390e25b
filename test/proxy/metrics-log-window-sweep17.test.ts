// The gates of repeated failure lines (proxy/log.ts: oncePer, LogWindow). Each failure is counted
// in a metric and one line per window tells the operator about it: Redis unavailable (cache, APQ,
// replay logs), a DLP keyring that does not load, usage reports the control plane refuses, quota
// webhooks failing. The window was measured on the wall clock as "now - last < ms": a clock
// stepped back (NTP, a resumed VM) made that difference negative, and the lines stayed silent for
// as long as the step (an hour back: an hour without "redis unavailable" while every request
// failed over).
import { afterEach, describe, expect, it, vi } from 'vitest'
import { LogWindow, oncePer } from '../../proxy/log.ts'
import { sleep } from '../helpers/wait.ts'

const HOUR = 3_600_000

describe('failure-log windows and a clock that goes back', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('oncePer: a wall clock stepped back an hour does not silence the next line', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(new Date('2026-11-26T12:00:00Z'))
    const logNow = oncePer(50)
    expect(logNow()).toBe(true)
    expect(logNow()).toBe(false) // within the window
    vi.setSystemTime(new Date('2026-11-26T11:00:00Z')) // NTP steps the clock back an hour
    await sleep(150) // well past the 50 ms window, in real time
    expect(logNow()).toBe(true)
    expect(logNow()).toBe(false)
  })

  it('LogWindow.take(now): a caller clock that went back opens the window and still reports what was held', () => {
    const w = new LogWindow(60_000)
    const t = 10 * HOUR
    expect(w.take(t)).toBe(0)
    expect(w.take(t + 1_000)).toBeUndefined()
    expect(w.take(t + 2_000)).toBeUndefined()
    expect(w.take(t - HOUR)).toBe(2) // stepped back: logged, with the 2 lines held back meanwhile
    expect(w.take(t - HOUR + 1_000)).toBeUndefined() // and the window runs from there
    expect(w.take(t - HOUR + 61_000)).toBe(1)
  })

  it('LogWindow.take() without a clock of the caller: one line per window, the rest counted', async () => {
    const w = new LogWindow(40)
    expect(w.take()).toBe(0)
    expect(w.take()).toBeUndefined()
    await sleep(100)
    expect(w.take()).toBe(1)
  })
})
