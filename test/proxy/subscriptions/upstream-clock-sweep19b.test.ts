// The upstream connection's timers (reconnect backoff, keep-alive ping, silence watchdog,
// connection_ack wait) are re-armed at a reload from when they were armed. They measured that
// with the wall clock: a step of the system time (NTP correcting a VM that was suspended) moved
// the re-armed timer by the whole step. An hour back, and a connection waiting out its backoff
// during an outage did not reconnect for an hour after the backend came back.
import { Registry } from 'prom-client'
import { pino } from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { HubMetrics } from '../../../proxy/subscriptions/metrics.ts'
import { UpstreamPool, type UpstreamListener } from '../../../proxy/subscriptions/upstream.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'

const realNow = Date.now

describe('upstream connection timers and wall-clock steps (sweep 19b)', () => {
  let be: SubscriptionBackend
  let pool: UpstreamPool | undefined
  beforeAll(async () => {
    be = await startSubscriptionBackend()
  })
  afterEach(() => {
    Date.now = realNow
    pool?.closeAll()
    pool = undefined
  })
  afterAll(async () => {
    await be?.close()
  })

  it('a reload during an outage re-times the backoff by the monotonic clock: a wall clock stepped an hour back does not delay the reconnect by an hour', async () => {
    pool = new UpstreamPool(new HubMetrics(new Registry()), pino({ level: 'silent' }))
    const timings = { retryInitialMs: 1_500, retryMaxMs: 1_500, connectTimeoutMs: 3_000, keepAliveMs: 0, maxMessageBytes: 1 << 20 }
    const conn = pool.get('k', `ws://127.0.0.1:${be.port}/graphql`, {}, undefined, timings)
    const seen: string[] = []
    const events: unknown[] = []
    const listener: UpstreamListener = { upstreamLost: () => seen.push('lost'), upstreamRestored: () => seen.push('restored') }
    conn.listeners.add(listener)
    conn.subscribe({ query: 'subscription { events(channel: "clock") { seq } }' }, { next: (v) => events.push(v), error: (e) => seen.push(`error ${String(e)}`), complete: () => seen.push('complete') })
    await expect.poll(() => be.subscribes.filter((s) => s.channel === 'clock').length, { timeout: 10_000 }).toBe(1)
    expect(conn.up).toBe(true)

    await be.stop()
    await expect.poll(() => seen, { timeout: 10_000 }).toContain('lost')
    // Let the first reconnect attempt be refused: the connection now waits out its backoff (~1 s).
    await sleep(300)
    // The system clock steps an hour back; then a reload changes a timing (re-times the wait).
    Date.now = () => realNow() - 3_600_000
    pool.configure({ ...timings, retryMaxMs: 1_600 })
    await be.start()
    await expect.poll(() => seen, { timeout: 15_000, interval: 100 }).toContain('restored')
    await expect.poll(() => be.subscribes.filter((s) => s.channel === 'clock').length, { timeout: 10_000 }).toBe(2)
    be.publish('clock')
    await expect.poll(() => events.length, { timeout: 10_000 }).toBe(1)
    expect(seen.filter((s) => s.startsWith('error') || s === 'complete')).toEqual([])
  }, 45_000)
})
