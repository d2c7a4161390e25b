// The subscriptions filter took settings that can never apply without a word: on a passthrough
// route (the default websocket.mode) the hub never runs the chain per subscribe, so a
// `maxPerConnection` limited nothing (a graphql-ws client ran as many subscriptions as it liked
// on one socket); before the tenant filter no claim is verified yet, so `dedupClaims` and
// `tierClaim` never applied. Each is now a warning naming the config path. Real igw, a real
// graphql-yoga/graphql-ws backend, the real graphql-ws client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from '../proxy/subscriptions/clients.ts'

describe('subscriptions filter settings that cannot apply', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      routes: [
        { name: 'relayed', match: { pathPrefix: '/graphql' }, upstream: be.url, filters: [{ name: 'subscriptions', maxPerConnection: 1 }] },
        { name: 'misordered', match: { pathPrefix: '/late' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'subscriptions', tierClaim: 'tier', dedupClaims: ['sub'] }, { name: 'tenant' }] },
        { name: 'no-tenant', match: { pathPrefix: '/none' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'subscriptions', dedupClaims: [] }] },
        // fine: a limit needs no claims; claims read after the tenant filter
        { name: 'limit', match: { pathPrefix: '/limit' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'subscriptions', maxPerConnection: 2 }] },
        { name: 'ok', match: { pathPrefix: '/ok' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'subscriptions', tierClaim: 'tier' }] },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  const warnings = () => proxy.logs.lines.filter((l) => l.level === 'warn' && String(l.msg).startsWith('subscriptions filter: '))

  it('warns once per setting that does nothing, naming its config path; correct chains are quiet', async () => {
    await waitUntil(() => warnings().length >= 3, 5_000, 'the warnings')
    const byRoute = Object.fromEntries(warnings().map((l) => [l.route, String(l.msg)]))
    // (the old code: no warning at all)
    expect(Object.keys(byRoute).sort()).toEqual(['misordered', 'no-tenant', 'relayed'])
    expect(byRoute.relayed).toMatch(/^subscriptions filter: routes\[0\]\.filters\[0\]: route "relayed" relays WebSockets as they are \(websocket\.mode: passthrough\)/)
    expect(byRoute.misordered).toMatch(/^subscriptions filter: routes\[1\]\.filters\[0\]: dedupClaims and tierClaim read verified token claims, which the tenant filter sets: it runs after this filter/)
    expect(byRoute['no-tenant']).toMatch(/routes\[2\]\.filters\[0\]: dedupClaims read verified token claims, which the tenant filter sets: none runs on this route/)
    expect(warnings()).toHaveLength(3)
  })

  it('the passthrough route still relays (a warning, not a refusal): its subscriptions run as before', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    try {
      const a = c.subscribe(EVENTS('relayed-31b'))
      const b = c.subscribe(EVENTS('relayed-31b'))
      await waitUntil(() => be.active() === 2, 5_000, 'both backend subscriptions')
      be.publish('relayed-31b')
      await a.received.wait((r) => r.events.length === 1)
      await b.received.wait((r) => r.events.length === 1)
    } finally {
      await c.dispose()
    }
  })
})
