// The Host of the hub's upstream WebSocket handshake: a route's hostRewrite names it, as it does
// for HTTP requests and passthrough sockets, and a Host sent upstream is part of what a shared
// stream is, whatever the sharing scope (a backend may serve each Host its own data).
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './subscriptions/clients.ts'

const SECRET = 'a-test-hmac-secret-of-at-least-32-characters'

describe('subscription hub: the upstream handshake Host', () => {
  let be: SubscriptionBackend
  let rewrite: TestProxy
  let forwarded: TestProxy
  const gql: GqlClient[] = []
  const raw: RawClient[] = []

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    rewrite = await startTestProxy({
      subscriptions: { upstream: { lingerMs: 0 } },
      routes: [{ name: 'gql', upstream: be.url, hostRewrite: 'api.internal.test', websocket: { mode: 'terminate' } }],
    })
    forwarded = await startTestProxy({
      tenants: { acme: {} },
      // The client's Host goes upstream (forwardHeaders); one tenant-wide sharing scope.
      subscriptions: { upstream: { lingerMs: 0, forwardHeaders: ['authorization', 'host'] } },
      routes: [
        {
          name: 'gql',
          upstream: be.url,
          websocket: { mode: 'terminate' },
          filters: [{ name: 'tenant', jwt: { secret: SECRET, claim: 'tenant', algorithms: ['HS256'] } }, { name: 'subscriptions', dedupClaims: [] }],
        },
      ],
    })
  })
  afterAll(async () => {
    for (const c of raw) c.end()
    await Promise.all(gql.map((c) => c.dispose()))
    await rewrite?.close()
    await forwarded?.close()
    await be?.close()
  })

  it('sends the route hostRewrite as Host, as HTTP and passthrough do', async () => {
    const before = be.connections.length
    const c = new GqlClient(`ws://127.0.0.1:${rewrite.port}/graphql`)
    gql.push(c)
    const s = c.subscribe(EVENTS('host-rewrite'))
    await waitUntil(() => be.subscribes.some((x) => x.channel === 'host-rewrite'))
    expect(be.connections.slice(before).map((x) => x.headers.host)).toEqual(['api.internal.test'])
    be.publish('host-rewrite')
    await s.received.wait((r) => r.events.length === 1)
    expect(s.received.error).toBeUndefined()
  })

  it('never shares one stream between two Hosts, even under a tenant-wide scope', async () => {
    const auth = `Bearer ${await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(new TextEncoder().encode(SECRET))}`
    const open = async (host: string): Promise<RawClient> => {
      const c = await RawClient.open(`ws://127.0.0.1:${forwarded.port}/graphql`, ['graphql-transport-ws'], { host, authorization: auth })
      raw.push(c)
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ id: '1', type: 'subscribe', payload: { query: EVENTS('by-host') } })
      return c
    }
    await open('a.example.test')
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'by-host').length === 1)
    await open('b.example.test')
    // One upstream subscription per Host, each on a handshake that named it.
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'by-host').length === 2, 5_000, 'a second upstream subscription')
    const hosts = be.connections.map((x) => x.headers.host)
    expect(hosts).toContain('a.example.test')
    expect(hosts).toContain('b.example.test')
  })
})
