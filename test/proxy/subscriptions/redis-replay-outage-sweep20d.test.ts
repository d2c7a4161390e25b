// A replay read page by page from the Redis log of another gateway's epoch, with Redis dying
// between two pages: what that epoch's writer logged after the first page is never delivered. The
// client is told (an `epoch` gap after the last event it got), and igw_replay_requests_total
// must count the replay as one with a gap — it counted it "resumed", as if the whole log had
// been replayed, so a Redis outage cutting replays short never showed in the replay outcomes.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const KEY = 'o'.repeat(48)
const EVENTS_LOGGED = 100

describe('replay from Redis cut short by a Redis outage between pages (sweep 20d)', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let a: TestProxy
  let b: TestProxy
  const clients: GqlClient[] = []

  beforeAll(async () => {
    ;[redis, be] = await Promise.all([startRedis(), startSubscriptionBackend()])
    const doc = {
      redis: { url: redis.url, keyPrefix: 'igwout:' },
      subscriptions: { cursorKey: KEY },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }],
    }
    // The reader delivers slowly (40 events/s, one at a time): its second page (the first is 64
    // events) is asked for over a second after the first, while Redis is down.
    ;[a, b] = await Promise.all([
      startTestProxy(doc),
      startTestProxy({ ...doc, subscriptions: { cursorKey: KEY, defaultTier: 'bronze', qos: { bronze: { ratePerSec: 40, burst: 1, maxQueue: 2 } } } }),
    ])
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await Promise.all([a?.close(), b?.close()])
    await Promise.all([be?.close(), redis?.close()])
  })

  it('is counted as a replay with a gap, and the client gets an epoch gap after the last event delivered', async () => {
    const q = EVENTS('outage')
    const c = new GqlClient(`ws://127.0.0.1:${a.port}/graphql`)
    clients.push(c)
    const s = c.subscribe(q)
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'outage').length === 1)
    for (let i = 0; i < EVENTS_LOGGED; i++) be.publish('outage')
    await s.received.wait((x) => x.events.length === EVENTS_LOGGED)
    const r = new Redis(redis.url, { maxRetriesPerRequest: 0 })
    try {
      await waitUntil(async () => {
        const keys = await r.keys('igwout:subs:*')
        return keys.length === 1 && (await r.xlen(keys[0]!)) === EVENTS_LOGGED
      }, 5_000, 'every event in Redis')
    } finally {
      r.disconnect()
    }

    const metric = async (result: string) => metricSum(await b.metricsText(), 'igw_replay_requests_total', `result="${result}"`)
    const d = new GqlClient(`ws://127.0.0.1:${b.port}/graphql`)
    clients.push(d)
    const t = d.subscribe(q, { cursor: s.received.events[0]!.extensions!.cursor! })
    await t.received.wait((x) => x.events.length >= 1, 5_000, 'the replay under way')
    await redis.stop()
    await t.received.wait((x) => x.gaps.length === 1, 8_000, 'the gap after the first page')

    // What the first page held (from event 2 on, in order) was delivered, then the gap: the rest
    // of the log was not.
    const got = t.received.seqs
    expect(got.length).toBeGreaterThan(0)
    expect(got.length).toBeLessThan(EVENTS_LOGGED - 1)
    expect(got).toEqual(s.received.seqs.slice(1, 1 + got.length))
    const gap = t.received.gaps[0]!
    expect(gap.reason).toBe('epoch')
    expect(gap.from).toBe(t.received.events.at(-1)!.extensions!.cursor)
    expect(await metric('gap')).toBe(1)
    expect(await metric('resumed')).toBe(0)
  })
})
