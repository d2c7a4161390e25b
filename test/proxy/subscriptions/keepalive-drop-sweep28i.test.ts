// A client that answers no keep-alive ping was cut with ws.terminate() and nothing else: no
// igw_subscription_closes_total count, no log line, so an operator could not tell a network (or a
// middlebox eating pongs) dropping clients from clients leaving. Now counted as code="keepalive"
// and logged, one line per window with how many were dropped (an outage drops many at once).
import { WebSocket } from 'ws'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { waitUntil } from './clients.ts'

const LINE = 'client answered no keep-alive ping within keepAliveMs: connection dropped'

describe('clients dropped by the keep-alive', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({ subscriptions: { keepAliveMs: 100 }, routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('counts them as closes with code="keepalive" and logs them, rate-limited; a client that answers stays', async () => {
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const before = metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="keepalive"')
    const deaf = [new WebSocket(url, { autoPong: false }), new WebSocket(url, { autoPong: false })]
    const alive = new WebSocket(url)
    const sockets = [...deaf, alive]
    try {
      await Promise.all(sockets.map((ws) => once(ws, 'open')))
      const closed = deaf.map((ws) => once(ws, 'close'))
      const [a, b] = await Promise.all(closed)
      expect(a![0]).toBe(1006) // terminated: no close frame
      expect(b![0]).toBe(1006)
      const count = async () => metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="keepalive"') - before
      await waitUntil(async () => (await count()) === 2, 5_000, 'both keep-alive drops counted')
      await waitUntil(() => proxy.logs.find(LINE).length > 0, 5_000, 'the log line')
      const lines = proxy.logs.find(LINE)
      expect(lines).toHaveLength(1) // the second one, within the window, is held back
      expect(lines[0]).toMatchObject({ route: 'gql', keepAliveMs: 100, dropped: 1 })
      expect(alive.readyState).toBe(WebSocket.OPEN)
    } finally {
      for (const ws of sockets) ws.terminate()
    }
  })
})
