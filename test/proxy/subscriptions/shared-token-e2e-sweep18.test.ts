// Sweep 18, end to end: with dedupClaims, a shared upstream subscription kept the first
// subscriber's credentials for its whole life. After that subscriber left (or its token expired)
// and the backend restarted, the stream reconnected with the stale token, even though the sharer
// still attached held a fresh one. It now reconnects over the connection of the sharer that joined
// last (the usual epoch gap, then events). Failed before the fix: the backend's last connection
// carried the first client's token.
import { SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'
const token = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode(SECRET))

describe('a shared upstream subscription follows the credentials of a sharer still attached', () => {
  it('the opener leaves, the backend restarts: the stream comes back with the remaining sharer\'s token', async () => {
    const be = await startSubscriptionBackend()
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        {
          name: 'gql',
          upstream: be.url,
          websocket: { mode: 'terminate' },
          filters: [{ name: 'tenant', jwt: { secret: SECRET, claim: 'tenant', algorithms: ['HS256'] } }, { name: 'subscriptions', dedupClaims: ['sub'] }],
        },
      ],
    })
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const old = await token({ tenant: 'acme', sub: 'u1', jti: 'old' })
    const fresh = await token({ tenant: 'acme', sub: 'u1', jti: 'new' })
    const a = new GqlClient(url, { authorization: `Bearer ${old}` })
    const b = new GqlClient(url, { authorization: `Bearer ${fresh}` })
    const auth = (c: { headers: Record<string, unknown>; params?: Record<string, unknown> | null }) => String(c.params?.authorization ?? c.headers.authorization ?? '')
    try {
      a.subscribe(EVENTS('tok'))
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'tok').length === 1)
      const sb = b.subscribe(EVENTS('tok'))
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active') === 2, 5_000, 'two client subscriptions')
      be.publish('tok')
      await sb.received.wait((r) => r.events.length === 1)
      // one upstream subscription for both (same user), opened with the first token
      expect(be.subscribes.filter((s) => s.channel === 'tok')).toHaveLength(1)
      expect(auth(be.connections.at(-1)!)).toContain(old)
      await a.dispose()
      const before = be.connections.length
      await be.stop()
      await be.start()
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'tok').length === 2, 15_000, 'the stream resubscribed after the restart')
      expect(be.connections.length).toBeGreaterThan(before)
      expect(auth(be.connections.at(-1)!)).toContain(fresh)
      expect(be.connections.slice(before).some((c) => auth(c).includes(old))).toBe(false)
      await sb.received.wait((r) => r.gaps.length >= 1, 10_000)
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active') === 1, 5_000, 'one client subscription left')
      be.publish('tok')
      await sb.received.wait((r) => r.events.length === 2, 10_000)
    } finally {
      await b.dispose()
      await proxy.close()
      await be.close()
    }
  })
})
