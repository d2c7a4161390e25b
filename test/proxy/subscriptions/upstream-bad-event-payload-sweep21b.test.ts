// An upstream `next` whose payload is not an object (5, null, a string, a list). graphql-ws (the
// hub's upstream client) refuses such a message by closing the whole shared upstream connection
// with 4004 (final): every other stream multiplexed on it ended with UPSTREAM_UNAVAILABLE and
// nothing reconnected (a list got through instead, as broken JSON). Only that operation ends, with
// an error to its subscriber; the backend is told to stop it; the connection and the rest go on.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { GqlClient, waitUntil } from './clients.ts'

interface Sub {
  ws: WebSocket
  id: string
  query: string
}

describe('upstream `next` payloads that are not objects', () => {
  const subs: Sub[] = []
  const completes: string[] = []
  const sockets = new Set<WebSocket>()
  let connections = 0
  let wss: WebSocketServer
  let proxy: TestProxy
  let url: string

  beforeAll(async () => {
    // A scripted graphql-transport-ws upstream: graphql-ws's own server cannot send these payloads.
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    wss.on('connection', (ws) => {
      connections++
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('error', () => undefined)
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string; payload?: { query?: string } }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        else if (m.type === 'ping') ws.send('{"type":"pong"}')
        else if (m.type === 'subscribe') subs.push({ ws, id: m.id!, query: m.payload?.query ?? '' })
        else if (m.type === 'complete') completes.push(m.id!)
      })
    })
    await once(wss, 'listening')
    proxy = await startTestProxy({
      subscriptions: { upstream: { lingerMs: 0 } },
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, websocket: { mode: 'terminate' } }],
    })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of sockets) ws.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  const upstreamSub = async (field: string): Promise<Sub> => {
    await waitUntil(() => subs.some((s) => s.query.includes(field)), 5_000, `the upstream subscribe of ${field}`)
    return subs.find((s) => s.query.includes(field))!
  }

  it('ends that operation alone with an error; the shared connection and its other streams go on', async () => {
    const c = new GqlClient(url)
    const live = c.subscribe('subscription { tick }')
    const l = await upstreamSub('tick')
    let n = 0
    const tick = () => l.ws.send(JSON.stringify({ type: 'next', id: l.id, payload: { data: { tick: ++n } } }))
    tick()
    await live.received.wait((r) => r.payloads.length === 1)

    const cases: [string, string, string][] = [
      ['num', '5', 'a number'],
      ['nul', 'null', 'null'],
      ['str', '"x"', 'a string'],
      ['list', '[{"data":{"list":1}}]', 'a list'],
      ['big', '123456789012345678901234567890', 'a number'],
    ]
    for (const [field, payload, got] of cases) {
      const other = c.subscribe(`subscription { ${field} }`)
      const o = await upstreamSub(field)
      expect(o.ws).toBe(l.ws) // the same upstream connection carries both
      o.ws.send(`{"type":"next","id":${JSON.stringify(o.id)},"payload":${payload}}`)
      await other.received.wait((r) => r.error !== undefined || r.completed, 5_000, `${field} to end`)
      expect(other.received.payloads, field).toEqual([])
      expect(other.received.error, field).toEqual([
        { message: `upstream subscription failed: the upstream sent an event without an object payload (got ${got})`, extensions: { code: 'UPSTREAM_UNAVAILABLE' } },
      ])
      // the backend is told to stop it (graphql-ws itself sends no complete after an error)
      await waitUntil(() => completes.includes(o.id), 5_000, `complete for ${field}`)
      // the live stream on that connection is still live
      tick()
      await live.received.wait((r) => r.payloads.length === n || r.error !== undefined, 5_000, `tick ${n}`)
      expect(live.received.error, field).toBeUndefined()
    }
    expect(live.received.payloads.map((p) => (p.data as { tick: number }).tick)).toEqual([1, 2, 3, 4, 5, 6])
    expect(connections).toBe(1)
    expect(proxy.logs.find('upstream subscription connection closed with a final code; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE')).toEqual([])
    expect(proxy.logs.find('upstream sent an event without an object payload; ending that operation with UPSTREAM_UNAVAILABLE')).toHaveLength(cases.length)
    await c.dispose()
  })
})
