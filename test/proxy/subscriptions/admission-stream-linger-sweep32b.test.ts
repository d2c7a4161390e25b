// A subscribe opens its stream (hub.streamFor: created, registered, subscribed upstream) before
// it attaches to it. A throw in between (past the chain: the Subscription, usage counting, the
// ack) was answered with INTERNAL_SERVER_ERROR, but the new stream had no subscriber to detach,
// so it never lingered and never closed: its upstream subscription stayed open and it held a
// place under upstream.maxStreams for good (with maxStreams 1, every later new stream OVERLOADED).
// No client input reaches such a throw today (only a bug could), so one is injected at the
// usage-counting step on the real worker's TenantUsage. Real WorkerProxy, hub, graphql-yoga backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { filterModules } from '../../../filters/registry.ts'
import type { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { LogCapture, metricSum, startWorkerProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, RawClient, waitUntil } from './clients.ts'

for (const lingerMs of [500, 0]) {
  describe(`a subscribe that fails after its new stream was opened (lingerMs ${lingerMs})`, () => {
    let be: SubscriptionBackend
    let proxy: WorkerProxy
    let url: string
    let metrics: () => Promise<string>
    const logs = new LogCapture()

    beforeAll(async () => {
      be = await startSubscriptionBackend()
      const config = validateConfig({
        subscriptions: { upstream: { lingerMs, maxStreams: 1 } },
        routes: [{ name: 'subs', upstream: be.url, websocket: { mode: 'terminate' } }],
      })
      let registry
      ;({ proxy, url, registry } = await startWorkerProxy(config, filterModules, { logs }))
      metrics = () => registry.metrics()
    })
    afterAll(async () => {
      await proxy?.drain(500)
      await be?.close()
    })

    it('leaves a stream that closes like any unused one: upstream unsubscribed, its maxStreams place free', async () => {
      const c = await RawClient.open(url, ['graphql-transport-ws'])
      try {
        c.send({ type: 'connection_init' })
        await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
        // Only the admission's count fails (the upgrade's own count is made through it too).
        const usage = proxy.usage
        const count = usage.subscription.bind(usage)
        let failures = 1
        usage.subscription = (ctx, status) => {
          if (ctx.subscription !== undefined && failures-- > 0) throw new Error('injected: usage counting failed')
          count(ctx, status)
        }
        const logged = logs.find('subscribe failed after admission').length
        c.send({ type: 'subscribe', id: 'a', payload: { query: EVENTS('leak-a', 'seq') } })
        await c.wait((x) => x.messages.some((m) => m.id === 'a' && m.type === 'error'), 5_000, 'the failed subscribe answered')
        const err = c.of((m) => m.id === 'a' && m.type === 'error')[0]!.payload as { extensions: { code: string } }[]
        expect(err[0]!.extensions.code).toBe('INTERNAL_SERVER_ERROR')
        expect(logs.find('subscribe failed after admission').length).toBeGreaterThan(logged)
        // The stream closes after its linger time, and its upstream subscription with it.
        await waitUntil(async () => metricSum(await metrics(), 'igw_subscription_upstreams') === 0, 5_000, 'the stream closed')
        await waitUntil(() => be.active() === 0, 5_000, 'upstream unsubscribed')
        expect(proxy.subscriptions.streams.size).toBe(0)
        expect(metricSum(await metrics(), 'igw_subscriptions_active')).toBe(0)

        // Its place under maxStreams (1) is free: another stream is admitted and delivers.
        c.send({ type: 'subscribe', id: 'b', payload: { query: EVENTS('leak-b', 'seq') } })
        await waitUntil(() => be.subscribes.some((s) => s.channel === 'leak-b') || c.messages.some((m) => m.id === 'b'), 5_000, 'b admitted or refused')
        expect(c.of((m) => m.id === 'b' && m.type === 'error')).toEqual([])
        await waitUntil(() => be.active() === 1, 5_000, 'b upstream')
        const seq = be.publish('leak-b')
        await c.wait((x) => x.messages.some((m) => m.id === 'b' && m.type === 'next'), 5_000, 'b event')
        expect((c.of((m) => m.id === 'b' && m.type === 'next')[0]!.payload as { data: { events: { seq: number } } }).data.events.seq).toBe(seq)
        expect(metricSum(await metrics(), 'igw_subscription_rejections_total', 'code="OVERLOADED"')).toBe(0)
        expect(c.close).toBeUndefined()
      } finally {
        c.end()
      }
    })
  })
}
