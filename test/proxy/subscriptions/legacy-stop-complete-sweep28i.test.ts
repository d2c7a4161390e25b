// Legacy graphql-ws (subscriptions-transport-ws): the reference server answers a client's `stop`
// with `complete` for that id (the stopped iterator ends the loop that sends it); igw sent
// nothing. A `stop` for an id not running stays unanswered, and a `start` replacing a running id
// sends no `complete` (it would end the new operation in the client).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, RawClient, waitUntil } from './clients.ts'

describe('legacy graphql-ws stop', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({ subscriptions: { keepAliveMs: 0 }, routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('answers a stop with complete, once, and only for a running operation', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-ws'])
    try {
      c.send({ type: 'connection_init', payload: {} })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'start', id: 'A', payload: { query: EVENTS('stop-28i-a') } })
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'stop-28i-a'), 5_000, 'the upstream subscribe')
      // Replaced by a start with the same id: no complete for the old one.
      c.send({ type: 'start', id: 'A', payload: { query: EVENTS('stop-28i-b') } })
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'stop-28i-b'), 5_000, 'the second upstream subscribe')
      c.send({ type: 'stop', id: 'nope' })
      c.send({ type: 'stop', id: 'A' })
      c.send({ type: 'stop', id: 'A' })
      // A query after the stops: its answer comes after anything they provoked.
      c.send({ type: 'start', id: 'Q', payload: { query: '{ ok }' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'complete' && m.id === 'Q'), 5_000, 'the query')
      expect(c.messages.filter((m) => m.id !== 'Q')).toEqual([{ type: 'connection_ack' }, { id: 'A', type: 'complete' }])
      expect(c.close).toBeUndefined()
    } finally {
      c.end()
    }
  })
})
