// A gap notice's `missed` (docs/subscriptions.md: "the number of events when known", its example a
// `trimmed` gap with `missed: 12`) came only with `dropped` gaps: a client resuming from a cursor
// older than the log got a `trimmed` gap without it, although the offsets say exactly how many
// events the log no longer holds — from the memory ring and from Redis alike.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil, type Received } from './clients.ts'

const KEY = 'm'.repeat(48)
const MAX_EVENTS = 5
const PUBLISHED = 13

describe('gap notices say how many events were missed (sweep 30g)', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let a: TestProxy
  let b: TestProxy
  const clients: GqlClient[] = []
  const client = (p: TestProxy) => {
    const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`)
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    ;[redis, be] = await Promise.all([startRedis(), startSubscriptionBackend()])
    // Two gateways sharing one Redis log: `b` holds no ring of `a`'s epoch and replays it from Redis.
    const doc = {
      redis: { url: redis.url, keyPrefix: 'igwmissed:' },
      subscriptions: { cursorKey: KEY, replay: { maxEvents: MAX_EVENTS } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }],
    }
    ;[a, b] = await Promise.all([startTestProxy(doc), startTestProxy(doc)])
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await Promise.all([a?.close(), b?.close()])
    await Promise.all([be?.close(), redis?.close()])
  })

  /** The gap, and that `missed` is what lies between the cursor's event and the first one after the gap. */
  const expectMissed = (r: Received, cursorSeq: number) => {
    const [gap] = r.gaps
    expect(gap?.reason).toBe('trimmed')
    const first = r.seqs[0]!
    expect(first).toBeGreaterThan(cursorSeq + 1)
    expect(gap!.missed).toBe(first - cursorSeq - 1)
    // the same count in the STREAM_GAP error graphql-ws clients read
    const err = r.payloads[0]!.errors?.[0] as { extensions?: { gap?: { missed?: number } } } | undefined
    expect(err?.extensions?.gap?.missed).toBe(gap!.missed)
  }

  it('in a trimmed gap from the memory ring and from Redis', async () => {
    const first = client(a).subscribe(EVENTS('missed'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'missed'), 5_000, 'the upstream subscribe')
    for (let i = 0; i < PUBLISHED; i++) be.publish('missed')
    await first.received.wait((r) => r.events.length === PUBLISHED)
    const oldest = first.received.events[0]!
    const cursor = oldest.extensions!.cursor!
    const cursorSeq = oldest.data!.events!.seq

    // the same gateway: its ring kept the last MAX_EVENTS
    const fromRing = client(a).subscribe(EVENTS('missed'), { cursor })
    await fromRing.received.wait((r) => r.events.length === MAX_EVENTS)
    expectMissed(fromRing.received, cursorSeq)

    // every write landed (they never delay delivery)
    const r = new Redis(redis.url, { maxRetriesPerRequest: 0 })
    try {
      await waitUntil(async () => {
        const [key] = await r.keys('igwmissed:subs:*')
        const [last] = key === undefined ? [] : await r.xrevrange(key, '+', '-', 'COUNT', 1)
        return last?.[0] === `${PUBLISHED}-0`
      }, 5_000, 'every event in Redis')
    } finally {
      r.disconnect()
    }
    // another gateway: Redis kept the last MAX_EVENTS (XADD MAXLEN), then an epoch gap to its own stream
    const fromRedis = client(b).subscribe(EVENTS('missed'), { cursor })
    await fromRedis.received.wait((r) => r.gaps.length === 2)
    expectMissed(fromRedis.received, cursorSeq)
    expect(fromRedis.received.gaps[1]!.reason).toBe('epoch')
    expect(fromRedis.received.gaps[1]!.missed).toBeUndefined()
    first.stop()
    fromRing.stop()
    fromRedis.stop()
  })
})
