// Legacy graphql-ws keep-alives (`ka`) were written with ws.send directly, past the cap on replies
// written while the socket stays over its high-water mark: a client that keeps sending but never
// reads had its buffer grow by a `ka` every keepAliveMs, and was never closed for it. A `ka` now
// counts like every other reply, and the connection is closed with 1013 at the cap.
import type { Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, RawClient, waitUntil } from './clients.ts'

describe('legacy graphql-ws keep-alives and the unread-replies cap', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      // The reply cap is max(gold's maxQueueBytes, the connection's tier's): 16 bytes, two `ka`s.
      subscriptions: { keepAliveMs: 200, qos: { socketHighWaterBytes: 1024, gold: { maxQueueBytes: 16 }, silver: { maxQueueBytes: 16 } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('closes with 1013 a client that sends but never reads once its keep-alives pass the cap', async () => {
    const before = await proxy.metricsText()
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-ws'])
    let chatter: NodeJS.Timeout | undefined
    try {
      c.send({ type: 'connection_init', payload: {} })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'start', id: '1', payload: { query: EVENTS('ka-26g', 'seq blob') } })
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'ka-26g'), 5_000, 'the backend subscribe')
      // Stop reading, but keep talking (a `stop` for an unknown id has no reply): the liveness
      // ping's missing pong alone does not end it.
      ;(c.ws as unknown as { _socket: Socket })._socket.pause()
      chatter = setInterval(() => c.send({ type: 'stop', id: 'none' }), 20)
      // Events past what the kernel's socket buffers hold leave the gateway's socket over its
      // high-water mark (written, not replies: they do not count toward the cap themselves).
      for (let i = 0; i < 12; i++) be.publish('ka-26g', { bytes: 1024 * 1024 })
      const closes = async () => metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="1013"') - metricSum(before, 'igw_subscription_closes_total', 'code="1013"')
      await waitUntil(async () => (await closes()) > 0, 5_000, 'the 1013 close')
      expect(await closes()).toBe(1)
      await waitUntil(() => proxy.logs.find('client does not read its replies: closing with 1013').length === 1, 5_000, 'the log line')
    } finally {
      clearInterval(chatter)
      c.end()
    }
  })
})
