// The connection_init payload fills request headers a browser cannot set; it must not replace a
// header the upgrade request itself carries. An edge that pins the tenant (sets x-tenant-id on
// the upgrade after its own authentication) was bypassed: a client naming another tenant in its
// payload was served as that tenant, and the backend's connection carried it.
// Real igw, real graphql-ws backend, raw graphql-transport-ws client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

const EVENTS = (ch: string) => `subscription { events(channel: "${ch}") { seq note } }`

describe('connection_init payload vs the upgrade request headers', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {}, globex: {} },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('a header the upgrade carries wins over the payload; a header it lacks is filled from the payload', async () => {
    // pinned by the edge: acme; the client claims globex in its payload
    const pinned = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'], { 'x-tenant-id': 'acme' })
    // no header: the payload is all the client has (a browser)
    const browser = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      pinned.send({ type: 'connection_init', payload: { 'x-tenant-id': 'globex' } })
      browser.send({ type: 'connection_init', payload: { 'x-tenant-id': 'globex' } })
      for (const c of [pinned, browser]) await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      pinned.send({ type: 'subscribe', id: 'p', payload: { query: EVENTS('pinned') } })
      browser.send({ type: 'subscribe', id: 'b', payload: { query: EVENTS('browser') } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(2)
      // one upstream connection per tenant: the pinned client's is acme's, the browser's globex's
      const seen = be.connections.map((c) => String(c.headers['x-tenant-id']))
      expect(seen.sort()).toEqual(['acme', 'globex'])
    } finally {
      pinned.end()
      browser.end()
    }
  })
})

describe('connection_init payload claims the chain did not forward', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {}, evil: {} },
      // the resolved tenant goes upstream as x-org-id, not under the name the payload used
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant', forwardHeader: 'x-org-id' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('the client-claimed tenantId does not reach the backend beside the tenant the chain resolved', async () => {
    // the edge pinned acme on the upgrade; the payload claims evil
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'], { 'x-tenant-id': 'acme' })
    try {
      c.send({ type: 'connection_init', payload: { tenantId: 'evil', note: 'kept' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      c.send({ type: 'subscribe', id: 's', payload: { query: EVENTS('org') } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(1)
      const conn = be.connections.at(-1)!
      expect(conn.headers['x-org-id']).toBe('acme')
      const params = (conn.params ?? {}) as Record<string, unknown>
      expect(params.tenantId).toBeUndefined()
      expect(params.note).toBe('kept') // the rest of the payload is the client's to pass on
    } finally {
      c.end()
    }
  })
})
