// Sharing upstream subscriptions: identical subscribes share one, and nothing crosses tenants or
// credentials (adversarially: spoofed tenant headers, other tokens, other tenants' cursors).
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'
const key = new TextEncoder().encode(SECRET)

function token(claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('10m').sign(key)
}

const subscribesOn = (be: SubscriptionBackend, channel: string) => be.subscribes.filter((s) => s.channel === channel)

describe('subscription hub: tenant-safe upstream dedup', () => {
  let be: SubscriptionBackend
  let byCredential: TestProxy
  let byClaims: TestProxy
  const clients: GqlClient[] = []

  const client = (p: TestProxy, params: Record<string, unknown>) => {
    const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, params)
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    const doc = (dedupClaims: string[] | undefined) => ({
      tenants: { acme: {}, globex: {} },
      subscriptions: { upstream: { lingerMs: 200 } },
      routes: [
        {
          name: 'gql',
          upstream: be.url,
          websocket: { mode: 'terminate' as const },
          filters: [{ name: 'tenant' as const, jwt: { secret: SECRET, claim: 'tenant', algorithms: ['HS256' as const] } }, { name: 'subscriptions' as const, ...(dedupClaims ? { dedupClaims } : {}) }],
        },
      ],
    })
    byCredential = await startTestProxy(doc(undefined))
    byClaims = await startTestProxy(doc(['sub']))
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await byCredential?.close()
    await byClaims?.close()
    await be?.close()
  })

  it('N identical clients → one upstream subscription, every client gets every event (same cursors)', async () => {
    const auth = { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'u1' })}` }
    const subs = Array.from({ length: 20 }, () => client(byCredential, auth).subscribe(EVENTS('dedup')))
    let metrics = ''
    for (let i = 0; i < 100 && metricSum(metrics, 'igw_subscriptions_active') < 20; i++) {
      await new Promise((r) => setTimeout(r, 20))
      metrics = await byCredential.metricsText()
    }
    expect(metricSum(metrics, 'igw_subscriptions_active')).toBe(20)
    expect(metricSum(metrics, 'igw_subscription_upstreams')).toBe(1)
    await waitUntil(() => subscribesOn(be, 'dedup').length === 1)
    for (let i = 0; i < 5; i++) be.publish('dedup')
    await Promise.all(subs.map((s) => s.received.wait((r) => r.events.length === 5)))
    const first = subs[0]!.received
    for (const s of subs) {
      expect(s.received.seqs).toEqual(first.seqs)
      expect(s.received.events.map((e) => e.extensions!.cursor)).toEqual(first.events.map((e) => e.extensions!.cursor))
    }
    // still exactly one upstream subscription after all that
    expect(subscribesOn(be, 'dedup')).toHaveLength(1)
    for (const s of subs) s.stop()
    // the last client gone, the stream lingers (lingerMs) and then ends upstream
    await waitUntil(() => be.active() === 0, 5_000, 'upstream subscription to end after linger')
    expect(metricSum(await byCredential.metricsText(), 'igw_subscription_upstreams')).toBe(0)
  })

  it('tenants never share: same document, one upstream subscription each, tenant-scoped events stay home', async () => {
    const acme = client(byCredential, { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'u1' })}` }).subscribe(EVENTS('iso'))
    const globex = client(byCredential, { authorization: `Bearer ${await token({ tenant: 'globex', sub: 'u1' })}` }).subscribe(EVENTS('iso'))
    await waitUntil(() => subscribesOn(be, 'iso').length === 2)
    expect(subscribesOn(be, 'iso').map((s) => s.tenant).sort()).toEqual(['acme', 'globex'])
    be.publish('iso', { tenant: 'acme', note: 'acme only' })
    be.publish('iso', { tenant: 'globex', note: 'globex only' })
    be.publish('iso', { note: 'everyone' })
    await acme.received.wait((r) => r.events.length === 2)
    await globex.received.wait((r) => r.events.length === 2)
    expect(acme.received.events.map((e) => e.data!.events!.note)).toEqual(['acme only', 'everyone'])
    expect(globex.received.events.map((e) => e.data!.events!.note)).toEqual(['globex only', 'everyone'])
    acme.stop()
    globex.stop()
  })

  it('a tenant claimed in the connection_init payload never beats the verified token, and never reaches the backend', async () => {
    const honest = client(byCredential, { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'u1' })}` }).subscribe(EVENTS('spoof'))
    const spoofer = client(byCredential, {
      authorization: `Bearer ${await token({ tenant: 'globex', sub: 'u1' })}`,
      'x-tenant-id': 'acme',
      tenantId: 'acme',
      headers: { 'X-Tenant-Id': 'acme' },
    }).subscribe(EVENTS('spoof'))
    await waitUntil(() => subscribesOn(be, 'spoof').length === 2)
    expect(subscribesOn(be, 'spoof').map((s) => s.tenant).sort()).toEqual(['acme', 'globex'])
    // what the backend saw on the spoofer's connection: globex everywhere
    const seen = be.connections.filter((c) => JSON.stringify(c.params ?? {}).includes('X-Tenant-Id'))
    expect(seen.length).toBeGreaterThan(0)
    for (const c of seen) {
      expect(c.headers['x-tenant-id']).toBe('globex')
      expect(c.params).toMatchObject({ 'x-tenant-id': 'globex', tenantId: 'globex', headers: { 'X-Tenant-Id': 'globex' } })
    }
    be.publish('spoof', { tenant: 'acme', note: 'secret' })
    be.publish('spoof', { note: 'public' })
    await spoofer.received.wait((r) => r.events.length === 1)
    await honest.received.wait((r) => r.events.length === 2)
    expect(spoofer.received.events.map((e) => e.data!.events!.note)).toEqual(['public'])
    honest.stop()
    spoofer.stop()
  })

  it('by default only identical credentials share (two users of one tenant get two upstream subscriptions)', async () => {
    const u1 = await token({ tenant: 'acme', sub: 'u1' })
    const u2 = await token({ tenant: 'acme', sub: 'u2' })
    const a = client(byCredential, { authorization: `Bearer ${u1}` }).subscribe(EVENTS('cred'))
    const b = client(byCredential, { authorization: `Bearer ${u1}` }).subscribe(EVENTS('cred'))
    await waitUntil(() => subscribesOn(be, 'cred').length === 1)
    const c = client(byCredential, { authorization: `Bearer ${u2}` }).subscribe(EVENTS('cred'))
    await waitUntil(() => subscribesOn(be, 'cred').length === 2)
    await new Promise((r) => setTimeout(r, 100))
    expect(subscribesOn(be, 'cred')).toHaveLength(2)
    for (const s of [a, b, c]) s.stop()
  })

  it('dedupClaims: ["sub"] shares across different token strings of one user, never across users', async () => {
    // Different tokens (the second one carries another claim), same tenant and sub: shared.
    const t1 = await token({ tenant: 'acme', sub: 'u1' })
    const t2 = await token({ tenant: 'acme', sub: 'u1', scope: 'read' })
    expect(t1).not.toBe(t2)
    const a = client(byClaims, { authorization: `Bearer ${t1}` }).subscribe(EVENTS('claims'))
    const b = client(byClaims, { authorization: `Bearer ${t2}` }).subscribe(EVENTS('claims'))
    await waitUntil(() => subscribesOn(be, 'claims').length === 1)
    await new Promise((r) => setTimeout(r, 100))
    expect(subscribesOn(be, 'claims')).toHaveLength(1)
    const other = client(byClaims, { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'u2' })}` }).subscribe(EVENTS('claims'))
    const otherTenant = client(byClaims, { authorization: `Bearer ${await token({ tenant: 'globex', sub: 'u1' })}` }).subscribe(EVENTS('claims'))
    await waitUntil(() => subscribesOn(be, 'claims').length === 3)
    be.publish('claims')
    for (const s of [a, b, other, otherTenant]) await s.received.wait((r) => r.events.length === 1)
    expect(metricSum(await byClaims.metricsText(), 'igw_subscription_upstreams')).toBe(3)
    for (const s of [a, b, other, otherTenant]) s.stop()
  })

  it("another tenant's cursor is refused as invalid and replays nothing of that tenant's log", async () => {
    const acme = client(byCredential, { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'u1' })}` }).subscribe(EVENTS('cur'))
    await waitUntil(() => subscribesOn(be, 'cur').length === 1)
    for (let i = 0; i < 3; i++) be.publish('cur', { tenant: 'acme', note: 'acme secret' })
    await acme.received.wait((r) => r.events.length === 3)
    const stolen = acme.received.events[0]!.extensions!.cursor!
    const thief = client(byCredential, { authorization: `Bearer ${await token({ tenant: 'globex', sub: 'u1' })}` }).subscribe(EVENTS('cur'), { cursor: stolen })
    await thief.received.wait((r) => r.payloads.length >= 1)
    expect(thief.received.gaps).toEqual([{ reason: 'invalid', from: null, to: expect.any(String) }])
    await waitUntil(() => subscribesOn(be, 'cur').length === 2)
    be.publish('cur', { note: 'public' })
    await thief.received.wait((r) => r.events.length === 1)
    expect(thief.received.events.map((e) => e.data!.events!.note)).toEqual(['public'])
    expect(metricSum(await byCredential.metricsText(), 'igw_replay_gaps_total', 'reason="invalid"')).toBeGreaterThanOrEqual(1)
    acme.stop()
    thief.stop()
  })
})
