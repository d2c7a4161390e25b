// Topic protocol: an `error` for an id means that operation is over (a refusal, a stream error).
// A second subscribe with an id already running (two subscribes to one topic without an id: the
// id is the topic) was answered with `{"op":"error","id":"s1"}` while s1 ran on: the client took
// s1 for ended (a library drops its handler), the gateway went on delivering its events, holding
// its upstream stream and quota slot — and a client resubscribing "s1" was refused again.
// graphql-transport-ws closes the whole socket with 4409 for this; the topic protocol refuses per
// operation, so the duplicate now ends the running operation too (error, then nothing more for
// that id; the id is free at once). The same for a malformed message naming a running id.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient, topicSeqs, waitUntil } from './clients.ts'

describe('topic protocol: a duplicate subscribe id (sweep 19)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const active = async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active')
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

  async function subscribed(c: RawClient, id: string, channel: string, n: number): Promise<void> {
    c.send({ op: 'subscribe', topic: 'events', variables: { channel } })
    await c.wait((x) => x.of((m) => m.op === 'subscribed' && m.id === id).length === n, 5_000, 'subscribed')
    await waitUntil(() => be.subscribes.some((s) => s.channel === channel), 5_000, 'the upstream subscribe')
  }

  it('a second subscribe to the same topic (same default id): one error for that id, the running one ends with it, the socket stays and the id can be subscribed again', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`)
    try {
      await subscribed(c, 'events', 'dup-1', 1)
      be.publish('dup-1')
      await c.wait((x) => topicSeqs(x, 'events').length === 1)

      c.send({ op: 'subscribe', topic: 'events', variables: { channel: 'dup-1' } })
      await c.wait((x) => x.of((m) => m.op === 'error').length === 1, 5_000, 'the refusal')
      const err = c.of((m) => m.op === 'error')[0] as { id: string; errors: { message: string; extensions: { code: string } }[] }
      expect(err.id).toBe('events')
      expect(err.errors[0]!.extensions.code).toBe('BAD_REQUEST')
      expect(err.errors[0]!.message).toContain('already exists')
      // Nothing more for that id: the client was told it is over.
      await waitUntil(async () => (await active()) === 0, 5_000, 'the running subscription ended with the error')
      be.publish('dup-1')
      await new Promise((r) => setTimeout(r, 300))
      expect(topicSeqs(c, 'events')).toHaveLength(1)
      expect(c.close).toBeUndefined()

      // The id is free: subscribing again works.
      await subscribed(c, 'events', 'dup-1', 2)
      be.publish('dup-1')
      await c.wait((x) => topicSeqs(x, 'events').length === 2, 5_000, 'events after the resubscribe')
      expect(c.of((m) => m.op === 'error')).toHaveLength(1)
    } finally {
      c.end()
    }
  })

  it('a malformed message naming a running id (a re-subscribe with a bad cursor) ends that subscription with its error', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`)
    try {
      c.send({ op: 'subscribe', id: 's1', topic: 'events', variables: { channel: 'dup-2' } })
      await c.wait((x) => x.of((m) => m.op === 'subscribed' && m.id === 's1').length === 1)
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'dup-2'), 5_000, 'the upstream subscribe')
      c.send({ op: 'subscribe', id: 's1', topic: 'events', cursor: 5 })
      await c.wait((x) => x.of((m) => m.op === 'error' && m.id === 's1').length === 1, 5_000, 'the refusal')
      await waitUntil(async () => (await active()) === 0, 5_000, 'the running subscription ended with the error')
      be.publish('dup-2')
      await new Promise((r) => setTimeout(r, 300))
      expect(topicSeqs(c, 's1')).toHaveLength(0)
      expect(c.close).toBeUndefined()
    } finally {
      c.end()
    }
  })
})
