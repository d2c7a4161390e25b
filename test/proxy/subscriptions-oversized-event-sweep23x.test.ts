// An upstream event larger than the route's websocket.maxMessageBytes. ws drops the upstream
// connection mid-frame (the operation it was for cannot be read), and the streams on it reconnect
// with an epoch gap, as after any drop — none of them ends. What was missing: the cause. The
// operator saw only "upstream subscription connection lost; reconnecting" (the ws error was a
// debug line); a warning now names maxMessageBytes.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { GqlClient, waitUntil } from './subscriptions/clients.ts'

describe('an upstream event over maxMessageBytes', () => {
  const subs: { ws: WebSocket; id: string; query: string }[] = []
  const sockets = new Set<WebSocket>()
  let wss: WebSocketServer
  let proxy: TestProxy
  let url: string

  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    wss.on('connection', (ws) => {
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('error', () => undefined)
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string; payload?: { query?: string } }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        else if (m.type === 'subscribe') subs.push({ ws, id: m.id!, query: m.payload?.query ?? '' })
      })
    })
    await once(wss, 'listening')
    proxy = await startTestProxy({
      subscriptions: { upstream: { lingerMs: 0, retryInitialMs: 20, retryMaxMs: 40 } },
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, websocket: { mode: 'terminate', maxMessageBytes: 4096 } }],
    })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of sockets) ws.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  it('the streams on the connection go on after an epoch gap, and the drop is logged with its cause', async () => {
    const c = new GqlClient(url)
    const a = c.subscribe('subscription { a }')
    const b = c.subscribe('subscription { b }')
    await waitUntil(() => subs.length === 2, 5_000, 'both upstream subscribes')
    const find = (f: string) => subs.filter((s) => s.query.includes(`{ ${f} }`)).at(-1)!
    find('a').ws.send(JSON.stringify({ type: 'next', id: find('a').id, payload: { data: { a: 1 } } }))
    await a.received.wait((r) => r.payloads.length === 1)
    find('b').ws.send(JSON.stringify({ type: 'next', id: find('b').id, payload: { data: { b: 'x'.repeat(8192) } } }))
    await waitUntil(() => subs.length === 4, 5_000, 'the resubscribes after the reconnect')
    await a.received.wait((r) => r.gaps.length === 1)
    await b.received.wait((r) => r.gaps.length === 1)
    find('a').ws.send(JSON.stringify({ type: 'next', id: find('a').id, payload: { data: { a: 2 } } }))
    await a.received.wait((r) => r.payloads.length === 3)
    expect(a.received.payloads.map((p) => p.data ?? p.extensions?.gap?.reason)).toEqual([{ a: 1 }, 'epoch', { a: 2 }])
    expect([a.received.error, b.received.error, a.received.completed, b.received.completed]).toEqual([undefined, undefined, false, false])
    const warned = proxy.logs.find('upstream sent a message over the route\'s websocket.maxMessageBytes; dropping the connection')
    expect(warned).toHaveLength(1)
    expect(warned[0]).toMatchObject({ maxMessageBytes: 4096, streams: 2 })
    await c.dispose()
  })
})
