// Operations over a terminated socket never reached the tenant's usage: the upgrade has no tenant
// yet (it is resolved per operation from the connection_init payload), so usage reports,
// statements, budget alerts and usedToday without Redis showed nothing for terminate routes.
// Each admitted subscription now counts under kind subscriptions, a query over the socket as a
// request, and a refusal by its code. Real igw, real graphql-ws backend, raw client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

const EVENTS = (ch: string) => `subscription { events(channel: "${ch}") { seq note } }`

describe('usage of a terminated socket', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { subscriptions: { maxConcurrent: 2, rate: 100_000, burst: 100_000 } } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('counts each admitted subscription and each refusal under the tenant', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      c.send({ type: 'subscribe', id: 'a', payload: { query: EVENTS('use-a') } })
      c.send({ type: 'subscribe', id: 'b', payload: { query: EVENTS('use-b') } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(2)
      // the third is over maxConcurrent: refused, counted as a rejection
      c.send({ type: 'subscribe', id: 'c', payload: { query: EVENTS('use-c') } })
      await c.wait((x) => x.messages.some((m) => m.id === 'c' && m.type === 'error'), 5_000, 'the refusal')
      let usage: Record<string, { requests?: number; byKind?: Record<string, number>; rejections?: Record<string, number> }> = {}
      await expect
        .poll(async () => {
          const u = (await proxy.collectUsage()) as typeof usage
          for (const [t, v] of Object.entries(u)) {
            const acc = (usage[t] ??= { requests: 0, byKind: {}, rejections: {} })
            acc.requests! += v.requests ?? 0
            for (const [k, n] of Object.entries(v.byKind ?? {})) acc.byKind![k] = (acc.byKind![k] ?? 0) + n
            for (const [k, n] of Object.entries(v.rejections ?? {})) acc.rejections![k] = (acc.rejections![k] ?? 0) + n
          }
          return usage.acme?.byKind?.subscriptions ?? 0
        }, { timeout: 10_000 })
        .toBe(2)
      expect(usage.acme!.rejections!.RATE_LIMITED).toBe(1)
    } finally {
      c.end()
    }
  })
})
