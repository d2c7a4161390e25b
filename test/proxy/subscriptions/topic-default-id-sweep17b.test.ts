// Topic protocol: "`id` defaults to the topic name". A client that subscribed with just a topic
// ({"op":"subscribe","topic":"events"}) had to repeat the topic as `id` to unsubscribe or replay:
// {"op":"unsubscribe","topic":"events"} was refused as a bad message and the subscription ran on
// (its upstream stream and quota slot held until the socket closed). The default now holds for
// unsubscribe and replay too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { parseClientMessage, TOPICS } from '../../../proxy/subscriptions/protocols.ts'
import { RawClient, topicSeqs, waitUntil } from './clients.ts'

describe('topic protocol: unsubscribe and replay name a subscription the way subscribe did (sweep 17b)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      subscriptions: { topics: { events: { query: 'subscription($channel: String!) { events(channel: $channel) { seq note } }', clientVariables: ['channel'] } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('parses {"op":"unsubscribe"|"replay","topic":…} with the topic as id; an explicit id still wins; neither is still bad', () => {
    const j = (v: unknown) => JSON.stringify(v)
    expect(parseClientMessage(TOPICS, j({ op: 'unsubscribe', topic: 'events' }))).toEqual({ t: 'stop', id: 'events' })
    expect(parseClientMessage(TOPICS, j({ op: 'replay', topic: 'events', cursor: 'C' }))).toEqual({ t: 'replay', id: 'events', cursor: 'C' })
    expect(parseClientMessage(TOPICS, j({ op: 'unsubscribe', id: 's1', topic: 'events' }))).toEqual({ t: 'stop', id: 's1' })
    expect(parseClientMessage(TOPICS, j({ op: 'unsubscribe' })).t).toBe('bad')
    expect(parseClientMessage(TOPICS, j({ op: 'replay', topic: '' , cursor: 'C' })).t).toBe('bad')
  })

  it('a client that subscribed by topic alone replays and unsubscribes by topic alone', async () => {
    const active = async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active')
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`)
    try {
      c.send({ op: 'subscribe', topic: 'events', variables: { channel: 'by-topic' } })
      await c.wait((x) => x.messages.some((m) => m.op === 'subscribed' && m.id === 'events'))
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'by-topic'), 5_000, 'the upstream subscribe')
      for (let i = 0; i < 3; i++) be.publish('by-topic')
      await c.wait((x) => topicSeqs(x, 'events').length === 3)
      const first = c.of((m) => m.op === 'event')[0]!.payload as { extensions: { cursor: string } }

      c.send({ op: 'replay', topic: 'events', cursor: first.extensions.cursor })
      await c.wait((x) => topicSeqs(x, 'events').length === 5, 5_000, 'the two events after the cursor re-sent')
      const seqs = topicSeqs(c, 'events')
      expect(seqs.slice(3)).toEqual(seqs.slice(1, 3))

      c.send({ op: 'unsubscribe', topic: 'events' })
      await c.wait((x) => x.messages.some((m) => m.op === 'complete' && m.id === 'events'))
      expect(c.of((m) => m.op === 'error')).toEqual([])
      await waitUntil(async () => (await active()) === 0, 5_000, 'the subscription ended')
      be.publish('by-topic')
      await new Promise((r) => setTimeout(r, 200))
      expect(topicSeqs(c, 'events')).toHaveLength(5)
    } finally {
      c.end()
    }
  })
})
