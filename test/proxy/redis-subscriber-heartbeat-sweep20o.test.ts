// The shared Redis connections against a path that goes silent while staying open (a
// partition without a reset, here a relay that swallows bytes): what is published meanwhile is
// lost, and only a new subscription ('ready' again, on which the cache resubscribes and drops
// what those messages could have invalidated) can tell. Without a heartbeat it stayed "ready" on
// the silent connection: after the partition it heard new messages and never learnt of the loss.
// And close() (a worker's shutdown, a reload retiring the connection) waited for the QUIT's
// answer without bound: for ever, on a connection gone silent.
import { Redis } from 'ioredis'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SharedRedis } from '../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { startTcpRelay, type TcpRelay } from '../helpers/tcp-relay.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('shared Redis connections behind a silent partition', () => {
  let redis: TestRedis
  let relay: TcpRelay
  let provider: SharedRedis
  let publisher: Redis
  const registry = new Registry()
  const shared = (): SharedRedis =>
    new SharedRedis(`redis://127.0.0.1:${relay.port}`, 'part:', pino({ level: 'silent' }), {
      up: new Gauge({ name: `up${registry.getMetricsAsArray().length}`, help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: `rc${registry.getMetricsAsArray().length}`, help: 'h', registers: [registry] }),
    })

  beforeAll(async () => {
    redis = await startRedis()
    relay = await startTcpRelay(redis.port)
    provider = shared()
    publisher = new Redis(redis.url)
  })
  afterAll(async () => {
    if (relay) relay.frozen = false
    await provider?.close()
    publisher?.disconnect()
    await relay?.close()
    await redis?.close()
  })

  it('drops the silent connection and subscribes anew, so the loss is known', async () => {
    const sub = provider.subscriber()
    const received: string[] = []
    let subscriptions = 0
    // As the cache's invalidation listener: subscribe on every 'ready'.
    const subscribe = () => void sub.subscribe('part:ch').then(() => subscriptions++, () => undefined)
    sub.on('ready', subscribe)
    sub.on('message', (_ch: string, m: string) => received.push(m))
    await waitUntil(() => subscriptions === 1, 5_000, 'subscribed')
    await publisher.publish('part:ch', 'before')
    await waitUntil(() => received.includes('before'), 5_000, 'first message')

    relay.frozen = true
    try {
      await publisher.publish('part:ch', 'lost')
      await waitUntil(() => sub.status !== 'ready', 4_000, 'silent subscriber dropped')
    } finally {
      relay.frozen = false
    }
    await waitUntil(() => subscriptions === 2, 5_000, 'subscribed again')
    await publisher.publish('part:ch', 'after')
    await waitUntil(() => received.includes('after'), 5_000, 'message after the partition')
    expect(received).toEqual(['before', 'after'])
  })

  it('closes within seconds when Redis no longer answers', async () => {
    const other = shared()
    other.subscriber()
    other.client()
    await waitUntil(() => other.ready && other.subscriber().status === 'ready', 5_000, 'connected')
    relay.frozen = true
    try {
      const t0 = Date.now()
      // Each unanswered QUIT is dropped after 2 s (UNRESPONSIVE_MS): the bound leaves a loaded
      // machine room past that, and an unbounded close (what this guards) never ends at all.
      const closed = await Promise.race([other.close().then(() => true), sleep(20_000).then(() => false)])
      expect(closed).toBe(true)
      expect(Date.now() - t0).toBeLessThan(8_000)
    } finally {
      relay.frozen = false
    }
  })
})
