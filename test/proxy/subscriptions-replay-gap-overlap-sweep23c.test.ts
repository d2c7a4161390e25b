// A client resuming from a cursor the ring had evicted past gets a "trimmed" gap, and the replay
// goes on from where that gap ends. The feed stayed at the client's cursor, though: when the ring
// evicted again before the feed read on (the connection's queue was full), the second notice ran
// from the client's cursor again — two notices over the same range, the first one's events
// reported missing twice. The second one now starts where the first ended.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { RawClient, topicSeqs, waitUntil } from './subscriptions/clients.ts'

interface Gap {
  reason: string
  from: string | null
  to: string | null
}

describe('a replay that falls behind the ring twice (sweep 23c)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  let url: string
  const raws: RawClient[] = []

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
      subscriptions: {
        defaultTier: 'bronze',
        replay: { maxEvents: 3 },
        // One queued event of another subscription plus the gap notice fill half the byte bound:
        // the feed stops right after the notice, until the rate lets the queue drain.
        qos: { bronze: { ratePerSec: 2, burst: 1, maxQueue: 100, maxQueueBytes: 400 } },
        topics: {
          a: { query: 'subscription { events(channel: "a") { seq } }' },
          b: { query: 'subscription { events(channel: "b") { seq } }' },
        },
      },
    })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    for (const c of raws) c.end()
    await proxy?.close()
    await be?.close()
  })

  const open = async (): Promise<RawClient> => {
    const c = await RawClient.open(url)
    raws.push(c)
    return c
  }
  const of = (c: RawClient, op: string, id: string) => c.of((m) => m.op === op && m.id === id)

  it('the second notice starts where the first ended', async () => {
    const y = await open()
    y.send({ op: 'subscribe', topic: 'a' })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'a'), 5_000, 'upstream subscribe a')
    be.publish('a')
    await y.wait(() => of(y, 'event', 'a').length === 1)
    const cursor = (of(y, 'event', 'a')[0]!.payload as { extensions: { cursor: string } }).extensions.cursor
    // The ring (3 events) evicts past the cursor.
    for (let i = 0; i < 5; i++) be.publish('a')

    const x = await open()
    x.send({ op: 'subscribe', id: 'd', topic: 'b' })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'b'), 5_000, 'upstream subscribe b')
    // The first goes out (the burst), the second waits for the rate.
    be.publish('b')
    be.publish('b')
    await x.wait(() => of(x, 'event', 'd').length === 1)
    x.send({ op: 'subscribe', id: 'r', topic: 'a', cursor })
    await x.wait(() => of(x, 'subscribed', 'r').length === 1)
    // The ring evicts again while the replay waits for room.
    const last: number[] = []
    for (let i = 0; i < 5; i++) last.push(be.publish('a'))

    await x.wait(() => topicSeqs(x, 'r').includes(last[4]!), 8_000, 'the replay to reach the last event')
    const gaps = of(x, 'gap', 'r').map((m) => m.gap as Gap)
    expect(gaps.length).toBeGreaterThanOrEqual(2)
    expect(gaps.every((g) => g.reason === 'trimmed')).toBe(true)
    expect(gaps[0]!.from).toBe(cursor)
    // Each notice continues from the one before: no range reported twice.
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!.from).toBe(gaps[i - 1]!.to)
    expect(topicSeqs(x, 'r')).toEqual(last.slice(-3))
  })
})
