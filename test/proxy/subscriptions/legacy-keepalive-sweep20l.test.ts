// Legacy graphql-ws (subscriptions-transport-ws) keep-alive with `subscriptions.keepAliveMs: 0`:
// the hub sent one `ka` right after connection_ack and none after. SubscriptionClient's first `ka`
// arms its liveness check (every `timeout`, 30 s by default), which then found no `ka` and closed
// the socket — reconnecting and resubscribing every operation, every 30–60 s, for ever.
// subscriptions-transport-ws's own server sends no `ka` at all when its keepAlive is unset.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

describe('legacy graphql-ws with keep-alive disabled', () => {
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

  it('sends no `ka` after connection_ack (a single one makes SubscriptionClient drop the socket when no more follow)', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-ws'])
    c.send({ type: 'connection_init', payload: {} })
    c.send({ type: 'start', id: '1', payload: { query: '{ ok }' } })
    // Everything the hub sent for the init went out before the query's answer.
    await c.wait((x) => x.messages.some((m) => m.type === 'complete' && m.id === '1'))
    expect(c.messages).toEqual([{ type: 'connection_ack' }, { id: '1', type: 'data', payload: { data: { ok: true } } }, { id: '1', type: 'complete' }])
    c.end()
  })
})
