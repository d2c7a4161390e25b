// A replay that catches up inside another subscription's fan-out delivered the event being fanned
// out twice. Two subscriptions of one connection replay the same stream (the same topic with two
// ids); when an event comes, the first one's push feeds every replay of the connection, so the
// second one read that event from the log, went live, and then received it again from the
// fan-out — a duplicate, against "no duplicate and no hole" at the seam of replay and live.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient, topicSeqs, waitUntil } from './clients.ts'

describe('replay catching up during a fan-out (sweep 22e)', () => {
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
        // Slow enough that a backlog waits in the queue, and replays wait for room in it.
        qos: { bronze: { ratePerSec: 10, burst: 1, maxQueue: 60, maxQueueBytes: '1mib' } },
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

  it('each event once: the replays, then live', async () => {
    // A cursor on topic a, from another connection.
    const y = await open()
    y.send({ op: 'subscribe', topic: 'a' })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'a'), 5_000, 'upstream subscribe a')
    const a1 = be.publish('a')
    const a2 = be.publish('a')
    await y.wait(() => of(y, 'event', 'a').length === 2)
    const cursor = ((of(y, 'event', 'a')[0]!.payload as { extensions: { cursor: string } }).extensions.cursor)
    expect(topicSeqs(y, 'a')).toEqual([a1, a2])

    // A backlog on topic b fills the connection's queue past half: replays wait for room.
    const x = await open()
    x.send({ op: 'subscribe', id: 'd', topic: 'b' })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'b'), 5_000, 'upstream subscribe b')
    for (let i = 0; i < 55; i++) be.publish('b')
    await x.wait(() => of(x, 'event', 'd').length >= 1)
    x.send({ op: 'subscribe', id: 'c', topic: 'a', cursor })
    x.send({ op: 'subscribe', id: 'r', topic: 'a', cursor })
    await x.wait(() => of(x, 'subscribed', 'c').length === 1 && of(x, 'subscribed', 'r').length === 1)
    // Ending d frees the queue (its backlog goes at once); the replays still wait for a feed.
    x.send({ op: 'unsubscribe', id: 'd' })
    await x.wait(() => of(x, 'complete', 'd').length === 1)

    const a3 = be.publish('a')
    const a4 = be.publish('a')
    await x.wait(() => topicSeqs(x, 'c').includes(a4) && topicSeqs(x, 'r').includes(a4), 8_000, 'both subscriptions live')
    expect(topicSeqs(x, 'c')).toEqual([a2, a3, a4])
    expect(topicSeqs(x, 'r')).toEqual([a2, a3, a4])
    expect(of(x, 'gap', 'c')).toEqual([])
    expect(of(x, 'gap', 'r')).toEqual([])
  })
})
