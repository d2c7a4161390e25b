// A replay is read from the log into the delivery queue as the client takes it; live events of the
// connection's other subscriptions, over the bronze bound, dropped the oldest queued item — the
// replayed events the client had asked for by cursor (the log still held them), each loss a
// "dropped" gap on the replaying subscription. Shedding now takes live events first: the replay
// arrives whole, and the live subscription that fell behind gets the gap.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { RawClient, topicSeqs, waitUntil } from './subscriptions/clients.ts'

describe('replayed events are not shed for live ones (sweep 23c)', () => {
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
        // A small queue drained slowly: replayed entries wait in it (up to half) when live ones come.
        qos: { bronze: { ratePerSec: 40, burst: 1, maxQueue: 8, maxQueueBytes: '1mib' } },
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

  it('the replay arrives whole; the live subscription is the one that loses events', async () => {
    const y = await open()
    y.send({ op: 'subscribe', topic: 'a' })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'a'), 5_000, 'upstream subscribe a')
    be.publish('a')
    await y.wait(() => of(y, 'event', 'a').length === 1)
    const cursor = (of(y, 'event', 'a')[0]!.payload as { extensions: { cursor: string } }).extensions.cursor
    // What the replay from that cursor re-sends (y, bronze itself, may not get them all: no matter).
    const logged: number[] = []
    for (let i = 0; i < 11; i++) logged.push(be.publish('a'))
    await y.wait(() => topicSeqs(y, 'a').includes(logged[10]!))

    const x = await open()
    x.send({ op: 'subscribe', id: 'live', topic: 'b' })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'b'), 5_000, 'upstream subscribe b')
    x.send({ op: 'subscribe', id: 'r', topic: 'a', cursor })
    // The replay is under way: some of it written, the next entries waiting in the queue.
    await x.wait(() => of(x, 'event', 'r').length >= 1)
    const live: number[] = []
    for (let i = 0; i < 30; i++) live.push(be.publish('b'))

    await x.wait(() => topicSeqs(x, 'r').includes(logged[10]!) && topicSeqs(x, 'live').includes(live[live.length - 1]!), 8_000, 'the replay and the last live event')
    expect(of(x, 'gap', 'r')).toEqual([])
    expect(topicSeqs(x, 'r')).toEqual(logged)
    // The live subscription fell behind: its oldest events went, announced.
    const gaps = of(x, 'gap', 'live').map((m) => m.gap as { reason: string; missed?: number })
    expect(gaps.length).toBeGreaterThan(0)
    expect(gaps.every((g) => g.reason === 'dropped')).toBe(true)
    expect(topicSeqs(x, 'live').length + gaps.reduce((n, g) => n + (g.missed ?? 0), 0)).toBe(live.length)
  })
})
