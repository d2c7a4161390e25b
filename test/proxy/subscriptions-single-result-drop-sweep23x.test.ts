// A query or mutation over the socket whose result arrived but whose `complete` had not when the
// upstream connection dropped. graphql-ws re-sends every operation still open once the connection
// is back: the query ran again and its client got a second result (and a mutation, which is not
// re-sent, got its result and then UPSTREAM_UNAVAILABLE saying it "may or may not have been
// executed"). The operation is over for the client once its result arrived: it completes.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { GqlClient, waitUntil } from './subscriptions/clients.ts'

describe('a query or mutation over the socket when the upstream drops after its result', () => {
  /** Subscribes the upstream received, by root field. */
  const received = new Map<string, number>()
  const sockets = new Set<WebSocket>()
  let connections = 0
  let wss: WebSocketServer
  let proxy: TestProxy
  let url: string

  beforeAll(async () => {
    // A scripted graphql-transport-ws upstream: it answers `q…`/`m…` with a result, and drops the
    // connection before the `complete` the first time it sees each.
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    wss.on('connection', (ws) => {
      connections++
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('error', () => undefined)
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string; payload?: { query?: string } }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        else if (m.type === 'subscribe') {
          const field = /\{\s*(\w+)/.exec(m.payload!.query!)![1]!
          const n = (received.get(field) ?? 0) + 1
          received.set(field, n)
          if (field.startsWith('slow') && n === 1) {
            // no result yet: the drop comes first
            setTimeout(() => ws.terminate(), 20)
            return
          }
          ws.send(JSON.stringify({ id: m.id, type: 'next', payload: { data: { [field]: n } } }))
          if (n === 1) setTimeout(() => ws.terminate(), 50)
          else ws.send(JSON.stringify({ id: m.id, type: 'complete' }))
        }
      })
    })
    await once(wss, 'listening')
    proxy = await startTestProxy({
      subscriptions: { upstream: { lingerMs: 0, retryInitialMs: 20, retryMaxMs: 40 } },
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, websocket: { mode: 'terminate' } }],
    })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of sockets) ws.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  it('a query completes with its one result: it is not re-sent for a second', async () => {
    const c = new GqlClient(url)
    // A subscription on the same upstream connection shows when the connection is back.
    const live = c.subscribe('subscription { tick }')
    await waitUntil(() => received.get('tick') === 1)
    const before = connections
    const q = c.subscribe('query { q1 }')
    await q.received.wait((r) => r.completed || r.error !== undefined, 5_000, 'the query to end')
    await live.received.wait((r) => r.gaps.length === 1, 5_000, 'the epoch gap after the reconnect')
    expect(connections).toBe(before + 1)
    expect(q.received.error).toBeUndefined()
    expect(q.received.payloads).toEqual([{ data: { q1: 1 } }])
    expect(received.get('q1')).toBe(1)
    await c.dispose()
  })

  it('a mutation completes with its result instead of ending with UPSTREAM_UNAVAILABLE', async () => {
    const c = new GqlClient(url)
    const m = c.subscribe('mutation { m1 }')
    await m.received.wait((r) => r.completed || r.error !== undefined, 5_000, 'the mutation to end')
    expect(m.received.error).toBeUndefined()
    expect(m.received.payloads).toEqual([{ data: { m1: 1 } }])
    expect(received.get('m1')).toBe(1)
    await c.dispose()
  })

  it('a query without its result yet is still re-sent and answered once', async () => {
    const c = new GqlClient(url)
    const q = c.subscribe('query { slow1 }')
    await q.received.wait((r) => r.completed || r.error !== undefined, 5_000, 'the query to end')
    expect(q.received.error).toBeUndefined()
    expect(q.received.payloads).toEqual([{ data: { slow1: 2 } }])
    expect(received.get('slow1')).toBe(2)
    await c.dispose()
  })
})
