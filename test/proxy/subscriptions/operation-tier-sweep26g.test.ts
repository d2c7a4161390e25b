// igw_subscription_operations_total's `tier` for a refusal before the chain (too many operations
// on one connection: QUOTA_EXCEEDED) was "" even on a connection whose tier its first operation
// had already fixed: a gold tenant's refusals were counted as no tier's. The connection's tier
// stands in when the operation has none.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, RawClient, waitUntil } from './clients.ts'

describe('igw_subscription_operations_total tier of a refusal before the chain', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: { tier: 'gold' } },
      subscriptions: { maxSubscriptionsPerConnection: 1 },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('counts a QUOTA_EXCEEDED refusal under the connection\'s tier', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'], { 'x-tenant-id': 'acme' })
    try {
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'subscribe', id: 'a', payload: { query: EVENTS('tier-26g') } })
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'tier-26g'), 5_000, 'the backend subscribe')
      c.send({ type: 'subscribe', id: 'b', payload: { query: EVENTS('tier-26g-2') } })
      await c.wait((x) => x.messages.some((m) => m.type === 'error' && m.id === 'b'))
      const err = c.of((m) => m.type === 'error' && m.id === 'b')[0]!.payload as { extensions: { code: string } }[]
      expect(err[0]!.extensions.code).toBe('QUOTA_EXCEEDED')
      const refused = (text: string, tier: string) => metricSum(text, 'igw_subscription_operations_total', `status="429",tier="${tier}"`)
      let text = ''
      await waitUntil(async () => refused((text = await proxy.metricsText()), 'gold') + refused(text, '') > 0, 5_000, 'the refusal counted')
      expect(refused(text, 'gold')).toBe(1)
      expect(refused(text, '')).toBe(0)
    } finally {
      c.end()
    }
  })
})
