// A subscribe whose payload has no `query` (only a `documentId`, or nothing) on a terminate route
// with the persisted filter: the filter read the missing query and threw, so the client got
// INTERNAL_SERVER_ERROR, igw_filter_errors_total{filter="persisted"} grew and an error was logged
// for every such message. Now it is the client's BAD_REQUEST, and the connection stays.
// Real igw, real graphql-ws backend, raw graphql-transport-ws client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

describe('persisted filter: a subscribe without a query', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'persisted' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('is a BAD_REQUEST for that operation; no filter error; the connection serves the next one', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      c.send({ type: 'subscribe', id: 'd', payload: { documentId: 'abc123' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'd' && m.type === 'error'), 5_000, 'the error')
      const err = c.of((m) => m.id === 'd' && m.type === 'error')[0]!.payload as { extensions?: { code?: string } }[]
      expect(err[0]!.extensions!.code).toBe('BAD_REQUEST')
      expect(metricSum(await proxy.metricsText(), 'igw_filter_errors_total')).toBe(0)
      c.send({ type: 'subscribe', id: 'ok', payload: { query: 'subscription { events(channel: "after") { seq } }' } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(1)
    } finally {
      c.end()
    }
  })
})
