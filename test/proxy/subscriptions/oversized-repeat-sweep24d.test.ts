// An upstream message over the route's websocket.maxMessageBytes that comes back on every
// resubscribe (a backend that sends its current state on subscribe): ws drops the connection on
// it, the hub reconnects and resubscribes, the same message drops it again — forever, on backoff,
// while the client heard only epoch gaps. After MAX_OVERSIZED_DROPS drops in a row the operation
// that may have sent it (it heard nothing before the drops) ends with an error naming the limit,
// counted; the other stream on the connection goes on.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { MAX_OVERSIZED_DROPS } from '../../../proxy/subscriptions/upstream.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { GqlClient, waitUntil } from './clients.ts'

describe('an oversized upstream message repeated on every resubscribe', () => {
  const sockets = new Set<WebSocket>()
  let connections = 0
  /** Subscribes for `b` the upstream saw: one per dropped connection, none after b ended. */
  let bSubscribes = 0
  let wss: WebSocketServer
  let proxy: TestProxy

  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    wss.on('connection', (ws) => {
      connections++
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('error', () => undefined)
      // Per socket: `a` gets a small event on subscribe; `b` its oversized state once `a` had its event.
      let a = false
      let b: string | undefined
      const big = () => {
        if (a && b !== undefined) ws.send(JSON.stringify({ type: 'next', id: b, payload: { data: { b: 'x'.repeat(8192) } } }))
      }
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string; payload?: { query?: string } }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        else if (m.type === 'subscribe' && m.payload?.query?.includes('{ a }')) {
          ws.send(JSON.stringify({ type: 'next', id: m.id, payload: { data: { a: connections } } }))
          a = true
          big()
        } else if (m.type === 'subscribe' && m.payload?.query?.includes('{ b }')) {
          bSubscribes++
          b = m.id
          big()
        }
      })
    })
    await once(wss, 'listening')
    proxy = await startTestProxy({
      subscriptions: { upstream: { lingerMs: 0, retryInitialMs: 20, retryMaxMs: 40 } },
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, websocket: { mode: 'terminate', maxMessageBytes: 4096 } }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of sockets) ws.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  it('ends the operation that keeps sending it with a clear error, and stops reconnecting for it', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    try {
      const a = c.subscribe('subscription { a }')
      const b = c.subscribe('subscription { b }')
      await b.received.wait((r) => r.error !== undefined, 5_000, 'b ends')
      const err = (b.received.error as { message: string; extensions: { code: string } }[])[0]!
      expect(err.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
      expect(err.message).toContain('maxMessageBytes (4096 bytes)')
      // (Not `connections`: on a busy machine the reconnect for `a` can land before b's error reaches the client.)
      expect(bSubscribes).toBe(MAX_OVERSIZED_DROPS)
      // `a` goes on: the next connection carries it alone and stays up.
      await waitUntil(() => connections === MAX_OVERSIZED_DROPS + 1 && sockets.size === 1, 5_000, 'the reconnect for a')
      await a.received.wait((r) => r.payloads.some((p) => p.data?.a === MAX_OVERSIZED_DROPS + 1), 5_000, 'a\'s event on the last connection')
      expect(bSubscribes, 'no reconnect resubscribed b').toBe(MAX_OVERSIZED_DROPS)
      expect(a.received.error).toBeUndefined()
      expect(a.received.completed).toBe(false)
      const text = await proxy.metricsText()
      expect(metricSum(text, 'igw_subscription_upstream_oversized_total')).toBe(1)
      expect(proxy.logs.find('upstream sent a message over the route\'s websocket.maxMessageBytes on every reconnect; ending the operations that may have sent it')).toHaveLength(1)
    } finally {
      await c.dispose()
    }
  })
})
