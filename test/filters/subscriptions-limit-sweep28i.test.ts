// The subscriptions filter's maxPerConnection counts every operation the connection runs (the
// hub's `active`: queries and mutations in flight too, as docs/subscriptions.md says), yet a
// query refused by it was told "at most N subscriptions per connection" — while it had one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { EVENTS, RawClient, waitUntil } from '../proxy/subscriptions/clients.ts'

describe('subscriptions filter maxPerConnection', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'subscriptions', maxPerConnection: 1 }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('refuses a query beside a running subscription with a message that counts operations', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init', payload: {} })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'subscribe', id: 's', payload: { query: EVENTS('lim-28i') } })
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'lim-28i'), 5_000, 'the upstream subscribe')
      c.send({ type: 'subscribe', id: 'q', payload: { query: '{ ok }' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'error' && m.id === 'q'), 5_000, 'the refusal')
      const [err] = c.of((m) => m.type === 'error' && m.id === 'q')[0]!.payload as { message: string; extensions: { code: string } }[]
      expect(err!.extensions.code).toBe('QUOTA_EXCEEDED')
      expect(err!.message).toMatch(/^at most 1 operations per connection on this route/)
      expect(err!.message).not.toContain('subscriptions per connection')
      expect(c.close).toBeUndefined()
    } finally {
      c.end()
    }
  })
})
