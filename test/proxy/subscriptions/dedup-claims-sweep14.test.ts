// Sweep 14: the subscriptions filter's dedupClaims widens sharing only between principals whose
// configured claims are present and equal. Two tokens that both lack the claim (machine tokens
// without \`sub\`) are not "the same user": they keep the credential scope, never one upstream
// subscription opened with the first one's credentials. Failed on the code before the fix.
import { SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { dedupScope } from '../../../filters/subscriptions/index.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

describe('subscriptions filter: dedupClaims never merges principals that lack the claim', () => {
  const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'
  const token = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode(SECRET))

  it('a configured claim absent (or null) gives no claim scope: the credential scope applies', () => {
    expect(dedupScope({ tenant: 'acme' }, ['sub'])).toBeUndefined()
    expect(dedupScope({ sub: null }, ['sub'])).toBeUndefined()
    expect(dedupScope({ sub: 'u1' }, ['sub', 'org.id'])).toBeUndefined()
    expect(dedupScope({ sub: 'u1', org: { id: 7 } }, ['sub', 'org.id'])).toBe(dedupScope({ sub: 'u1', iat: 3, org: { id: 7 } }, ['sub', 'org.id']))
    expect(dedupScope({}, [])).toBe('tenant')
  })

  it('two different tokens without `sub` get two upstream subscriptions, each opened with its own credentials', async () => {
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
    const tokA = await token({ tenant: 'acme', client_id: 'machine-a' })
    const tokB = await token({ tenant: 'acme', client_id: 'machine-b' })
    const a = new GqlClient(url, { authorization: `Bearer ${tokA}` })
    const b = new GqlClient(url, { authorization: `Bearer ${tokB}` })
    try {
      const sa = a.subscribe(EVENTS('nosub'))
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'nosub').length === 1)
      const sb = b.subscribe(EVENTS('nosub'))
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'nosub').length === 2, 5_000, 'a second upstream subscription for the other principal')
      // each backend connection carries its own principal's token, never the other's
      const auths = be.connections.map((c) => String(c.params?.authorization ?? c.headers.authorization ?? ''))
      expect(auths.some((x) => x.includes(tokA))).toBe(true)
      expect(auths.some((x) => x.includes(tokB))).toBe(true)
      be.publish('nosub')
      await sa.received.wait((r) => r.events.length === 1)
      await sb.received.wait((r) => r.events.length === 1)
      // and their cursors belong to two streams: one cannot resume on the other's
      expect(sa.received.lastCursor).not.toBe(sb.received.lastCursor)
      expect(metricSum(await proxy.metricsText(), 'igw_subscription_upstreams')).toBe(2)
    } finally {
      await a.dispose()
      await b.dispose()
      await proxy.close()
      await be.close()
    }
  })
})
