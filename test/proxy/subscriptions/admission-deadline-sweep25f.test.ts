// A subscribe over a terminated socket was admitted with no deadline: a request-phase filter that
// never decided (a hung dependency: a Redis quota store that queues while it is down, a remote
// policy engine) left the operation unanswered for ever, holding its place toward
// maxSubscriptionsPerConnection, where an HTTP request or a relayed handshake gets a 504 at the
// route's timeouts.totalMs. Now the chain runs under that deadline; an admitted subscription
// still lives past it. Real WorkerProxy, real graphql-yoga backend, raw ws client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { filterModules, type FilterModules } from '../../../filters/registry.ts'
import type { Filter } from '../../../proxy/filter.ts'
import type { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { startWorkerProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

const TOTAL_MS = 300

describe('a subscribe whose filter never decides', () => {
  let be: SubscriptionBackend
  let proxy: WorkerProxy
  let url: string
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    // Hangs on the operations whose channel says so, like a dependency that stopped answering.
    const hang: Filter = { name: 'hang', onRequest: (ctx) => (ctx.subscription !== undefined && ctx.graphql?.query?.includes('"stuck"') ? new Promise(() => undefined) : undefined) }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => hang } }
    const config = validateConfig({
      log: { level: 'silent' },
      routes: [{ name: 'subs', upstream: be.url, timeouts: { totalMs: TOTAL_MS }, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }],
    })
    ;({ proxy, url } = await startWorkerProxy(config, modules))
  })
  afterAll(async () => {
    await proxy?.drain(500)
    await be?.close()
  })

  it('is answered with UPSTREAM_TIMEOUT at the route deadline; an admitted subscription outlives it', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      c.send({ type: 'subscribe', id: 'live', payload: { query: 'subscription { events(channel: "ok") { seq } }' } })
      await expect.poll(() => be.active(), { timeout: 5_000 }).toBe(1)
      c.send({ type: 'subscribe', id: 'stuck', payload: { query: 'subscription { events(channel: "stuck") { seq } }' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'stuck' && m.type === 'error'), 5_000, 'the stuck subscribe answered')
      const err = c.of((m) => m.id === 'stuck' && m.type === 'error')[0]!.payload as { message: string; extensions: { code: string } }[]
      expect(err[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
      expect(err[0]!.message).toContain(`${TOTAL_MS} ms`)
      // the admitted one, older than the deadline by now, still gets its events
      be.publish('ok')
      await c.wait((x) => x.messages.some((m) => m.id === 'live' && m.type === 'next'), 5_000, 'an event after the deadline')
      expect(c.of((m) => m.id === 'live' && (m.type === 'error' || m.type === 'complete'))).toEqual([])
      expect(c.close).toBeUndefined()
    } finally {
      c.end()
    }
  })
})
