// The subscriptions filter's `tierClaim` set ctx.tier outright: on a chain with `persisted` ahead
// of it, a persisted operation's manifest `tier` (that operation's alone, docs/subscriptions.md)
// was overwritten by the claim — a bronze manifest subscription was counted (and, with a quota
// filter after it, charged) at the token's gold. The claim still sets the connection's tier.
// Real igw (tenant JWT, persisted, subscriptions filters), graphql-yoga/graphql-ws backend, raw ws client.
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient, waitUntil } from './clients.ts'

const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'
const token = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode(SECRET))
const BRONZE_DOC = 'subscription BronzeEvents { events(channel: "bronze-31b") { seq } }'

describe('tierClaim beside a persisted operation\'s manifest tier', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: { tier: 'silver' } },
      persistedDocuments: { operations: { bronzeEvents: { document: BRONZE_DOC, tier: 'bronze' } } },
      routes: [
        {
          name: 'gql',
          upstream: be.url,
          websocket: { mode: 'terminate' },
          filters: [{ name: 'tenant', jwt: { secret: SECRET, claim: 'tenant', algorithms: ['HS256'] } }, { name: 'persisted' }, { name: 'subscriptions', tierClaim: 'tier' }],
        },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('the manifest tier stays the operation\'s; the claim is the connection\'s and that of operations without one', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init', payload: { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'u1', tier: 'gold' })}` } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'subscribe', id: 'b', payload: { query: BRONZE_DOC } })
      c.send({ type: 'subscribe', id: 'p', payload: { query: 'subscription { events(channel: "plain-31b") { seq } }' } })
      await waitUntil(() => be.active() === 2, 5_000, 'both backend subscriptions')
      expect(c.of((m) => m.type === 'error')).toEqual([])
      const during = await proxy.metricsText()
      expect(metricSum(during, 'igw_subscription_connections', 'tier="gold"')).toBe(1)
      c.send({ type: 'complete', id: 'b' })
      c.send({ type: 'complete', id: 'p' })
      const ended = (text: string, tier: string) => metricSum(text, 'igw_subscription_operations_total', `op="subscription",status="200",tier="${tier}"`)
      let text = ''
      await waitUntil(async () => ended((text = await proxy.metricsText()), 'gold') + ended(text, 'bronze') === 2, 5_000, 'both operations counted')
      // (the old code: 0 and 2 — the claim's gold overwrote the manifest's bronze)
      expect(ended(text, 'bronze')).toBe(1)
      expect(ended(text, 'gold')).toBe(1)
      expect(ended(text, 'silver')).toBe(0)
    } finally {
      c.end()
    }
  })
})
