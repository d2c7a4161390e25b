// Sweep 17c: dedupClaims shares a stream "per user", and a user is a subject *of an issuer*
// (RFC 7519 §4.1.2, OIDC: iss + sub). With a verifier that accepts tokens of two issuers (no
// `issuer` set; a secret plus a JWKS, or one JWKS merging two IdPs), sub "42" of IdP A and sub
// "42" of IdP B shared one upstream subscription, opened with the first one's credentials: the
// second principal received what the backend sends the first. Failed on the code before the fix
// (one upstream subscription for both).
import { SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { dedupScope } from '../../../filters/subscriptions/index.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'
const token = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode(SECRET))

describe('subscriptions filter: dedupClaims scopes a subject by its issuer', () => {
  it('the same claims from two issuers are two scopes; one issuer, one scope', () => {
    expect(dedupScope({ iss: 'https://a.example', sub: '42' }, ['sub'])).not.toBe(dedupScope({ iss: 'https://b.example', sub: '42' }, ['sub']))
    expect(dedupScope({ iss: 'https://a.example', sub: '42', iat: 1 }, ['sub'])).toBe(dedupScope({ iss: 'https://a.example', sub: '42', iat: 2 }, ['sub']))
    // listed explicitly, it is not counted twice; tenant-wide sharing ignores it by design
    expect(dedupScope({ iss: 'a', sub: '42' }, ['iss', 'sub'])).not.toBe(dedupScope({ iss: 'b', sub: '42' }, ['iss', 'sub']))
    expect(dedupScope({ iss: 'a', sub: '42' }, [])).toBe('tenant')
    expect(dedupScope({ iss: 'a' }, ['sub'])).toBeUndefined()
  })

  it('sub "42" of two issuers gets two upstream subscriptions, each with its own token; refreshed tokens of one still share', async () => {
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
    const tokA = await token({ tenant: 'acme', sub: '42', iss: 'https://idp-a.example' })
    const tokB = await token({ tenant: 'acme', sub: '42', iss: 'https://idp-b.example' })
    const tokA2 = await token({ tenant: 'acme', sub: '42', iss: 'https://idp-a.example', jti: 'refreshed' })
    const a = new GqlClient(url, { authorization: `Bearer ${tokA}` })
    const b = new GqlClient(url, { authorization: `Bearer ${tokB}` })
    const a2 = new GqlClient(url, { authorization: `Bearer ${tokA2}` })
    try {
      const sa = a.subscribe(EVENTS('iss'))
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'iss').length === 1)
      const sb = b.subscribe(EVENTS('iss'))
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'iss').length === 2, 5_000, 'a second upstream subscription for the other issuer\'s subject')
      const auths = be.connections.map((c) => String(c.params?.authorization ?? c.headers.authorization ?? ''))
      expect(auths.some((x) => x.includes(tokA))).toBe(true)
      expect(auths.some((x) => x.includes(tokB))).toBe(true)
      // the same user (same issuer) with a refreshed token joins A's stream
      const sa2 = a2.subscribe(EVENTS('iss'))
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active') === 3, 5_000, 'three client subscriptions')
      be.publish('iss')
      await sa.received.wait((r) => r.events.length === 1)
      await sb.received.wait((r) => r.events.length === 1)
      await sa2.received.wait((r) => r.events.length === 1)
      expect(be.subscribes.filter((s) => s.channel === 'iss')).toHaveLength(2)
      expect(metricSum(await proxy.metricsText(), 'igw_subscription_upstreams')).toBe(2)
      expect(sa2.received.lastCursor).toBe(sa.received.lastCursor)
      expect(sb.received.lastCursor).not.toBe(sa.received.lastCursor)
    } finally {
      await a.dispose()
      await b.dispose()
      await a2.dispose()
      await proxy.close()
      await be.close()
    }
  })
})
