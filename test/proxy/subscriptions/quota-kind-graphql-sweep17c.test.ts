// On a terminate route whose quota counts kind `graphql` (the default), each open subscription held
// a graphql concurrency slot for its life: two open subscriptions with maxConcurrent 2 made the
// tenant's plain HTTP queries 429 "too many concurrent graphql requests" — the same defect a
// relayed WebSocket had (sweep 16). A subscription is admitted by a free slot and gives it back at
// once under another kind; under kind `subscriptions` it holds it (what that kind counts).
// Real igw, real graphql-yoga backend with graphql-ws, raw graphql-transport-ws client, undici.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

const EVENTS = (ch: string) => `subscription { events(channel: "${ch}") { seq note } }`

describe('terminated subscriptions and a graphql-kind concurrency limit', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { maxConcurrent: 2, rate: 100_000, burst: 100_000 } } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('two open subscriptions leave the tenant its HTTP requests', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      c.send({ type: 'subscribe', id: 'a', payload: { query: EVENTS('kind-a') } })
      c.send({ type: 'subscribe', id: 'b', payload: { query: EVENTS('kind-b') } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(2)
      expect(c.of((m) => m.type === 'error')).toEqual([])
      for (let i = 0; i < 3; i++) {
        const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ __typename }' }) })
        const text = await r.body.text()
        expect(r.statusCode, text).toBe(200)
      }
    } finally {
      c.end()
    }
  })
})
