// igw_replay_requests_total{result} counts subscribes with a cursor by outcome ("resumed" or
// "gap"): one per replay. A replay read from the Redis log counted "gap" once per hole it met in
// that log (events its writer could not log, entries lost), plus once more for a final "expired"
// notice: one resume across two holes was two "gap" requests.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const KEY = 'r'.repeat(48)

describe('igw_replay_requests_total: one count per replay read from Redis, however many holes it meets (sweep 19)', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let a: TestProxy
  let b: TestProxy
  let r: Redis

  beforeAll(async () => {
    redis = await startRedis()
    be = await startSubscriptionBackend()
    const doc = {
      redis: { url: redis.url, keyPrefix: 'igwrrq:' },
      subscriptions: { cursorKey: KEY },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }],
    }
    a = await startTestProxy(doc)
    b = await startTestProxy(doc)
    r = new Redis(redis.url, { maxRetriesPerRequest: 0 })
  })
  afterAll(async () => {
    r?.disconnect()
    await a?.close()
    await b?.close()
    await be?.close()
    await redis?.close()
  })

  it('a resume from another gateway across two holes in the Redis log: both holes announced, one "gap" request', async () => {
    const q = EVENTS('holes')
    const c = new GqlClient(`ws://127.0.0.1:${a.port}/graphql`)
    const s = c.subscribe(q)
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'holes').length === 1)
    await sleep(100)
    for (let i = 0; i < 6; i++) be.publish('holes')
    await s.received.wait((x) => x.events.length === 6)
    let keys: string[] = []
    await waitUntil(async () => (keys = await r.keys('igwrrq:subs:*')).length === 1, 5_000, 'the stream\'s key')
    await waitUntil(async () => (await r.xlen(keys[0]!)) === 6, 5_000, 'all 6 events in Redis')
    // Two events the writer never logged (Redis was away for them).
    expect(await r.xdel(keys[0]!, '3-0', '5-0')).toBe(2)

    const gapsBefore = metricSum(await b.metricsText(), 'igw_replay_requests_total', 'result="gap"')
    const resumedBefore = metricSum(await b.metricsText(), 'igw_replay_requests_total', 'result="resumed"')
    const d = new GqlClient(`ws://127.0.0.1:${b.port}/graphql`)
    const t = d.subscribe(q, { cursor: s.received.events[0]!.extensions!.cursor! })
    await t.received.wait((x) => x.gaps.some((g) => g.reason === 'epoch'), 5_000, 'the replay up to the epoch gap')
    expect(t.received.gaps.map((g) => g.reason)).toEqual(['trimmed', 'trimmed', 'epoch'])
    const seqs = s.received.seqs
    expect(t.received.seqs).toEqual([seqs[1], seqs[3], seqs[5]])
    expect(metricSum(await b.metricsText(), 'igw_replay_requests_total', 'result="gap"') - gapsBefore).toBe(1)
    expect(metricSum(await b.metricsText(), 'igw_replay_requests_total', 'result="resumed"') - resumedBefore).toBe(0)
    await c.dispose()
    await d.dispose()
  })
})
