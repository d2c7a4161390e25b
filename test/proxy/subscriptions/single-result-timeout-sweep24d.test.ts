// A query or mutation over a terminated socket whose result arrived but whose `complete` the
// upstream never sent: at the route's timeouts.totalMs it ended with UPSTREAM_TIMEOUT after its
// result (the client was told a query that answered had failed, and the 504 was counted). It
// completes instead, as when the connection drops in the same state.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { RawClient } from './clients.ts'

describe('a socket query whose upstream never completes after its result', () => {
  const sockets = new Set<WebSocket>()
  let wss: WebSocketServer
  let proxy: TestProxy

  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    wss.on('connection', (ws) => {
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('error', () => undefined)
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string; payload?: { query?: string } }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        // The result, and never the `complete` that should follow it.
        else if (m.type === 'subscribe' && m.payload?.query?.includes('hasResult')) ws.send(JSON.stringify({ type: 'next', id: m.id, payload: { data: { hasResult: 1 } } }))
      })
    })
    await once(wss, 'listening')
    proxy = await startTestProxy({
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, websocket: { mode: 'terminate' }, timeouts: { totalMs: 300 } }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of sockets) ws.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  it('completes at the time budget instead of erroring after the result', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init' })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
      c.send({ type: 'subscribe', id: 'q', payload: { query: '{ hasResult }' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'q' && (m.type === 'complete' || m.type === 'error')), 5_000, 'the end of q')
      expect(c.of((m) => m.id === 'q').map((m) => m.type)).toEqual(['next', 'complete'])
      // Still a timeout for one that got nothing.
      c.send({ type: 'subscribe', id: 'n', payload: { query: '{ nothing }' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'n' && m.type === 'error'), 5_000, 'the end of n')
      expect((c.of((m) => m.id === 'n')[0]!.payload as { extensions: { code: string } }[])[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
      await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_subscription_operations_total', 'status="504"'), { timeout: 5_000 }).toBe(1)
      const text = await proxy.metricsText()
      expect(metricSum(text, 'igw_subscription_operations_total', 'status="200"')).toBe(1)
      expect(metricSum(text, 'igw_proxy_errors_total', 'code="UPSTREAM_TIMEOUT"')).toBe(1)
    } finally {
      c.end()
    }
  })
})
