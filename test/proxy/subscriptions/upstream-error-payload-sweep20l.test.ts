// An upstream `error` message whose payload is not the GraphQLError[] of PROTOCOL.md — what
// Hasura and Ballerina send ({"errors": […]}), Spring GraphQL, Ariadne and vert.x (one error
// object), or an empty list / entries without a message. graphql-ws (the hub's upstream client)
// refuses such a message by closing the whole shared upstream connection with 4004 (final): every
// other stream on it ended with UPSTREAM_UNAVAILABLE, and nothing reconnected. The operation it
// was for must get the errors its backend meant; the other streams on the connection go on.
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

describe('upstream `error` payloads that are not GraphQLError[]', () => {
  const subs: Sub[] = []
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

  it('reaches that operation as GraphQL errors; the other streams on the shared connection go on', async () => {
    const c = new GqlClient(url)
    const live = c.subscribe('subscription { tick }')
    const l = await upstreamSub('tick')
    let n = 0
    const tick = () => l.ws.send(JSON.stringify({ type: 'next', id: l.id, payload: { data: { tick: ++n } } }))
    tick()
    await live.received.wait((r) => r.payloads.length === 1)

    const cases: [string, unknown, unknown[]][] = [
      ['hasura', { errors: [{ message: 'field "hasura" not found in type: \'subscription_root\'', extensions: { code: 'validation-failed' } }] }, [{ message: 'field "hasura" not found in type: \'subscription_root\'', extensions: { code: 'validation-failed' } }]],
      ['spring', { message: 'Execution failed', extensions: { classification: 'DataFetchingException' } }, [{ message: 'Execution failed', extensions: { classification: 'DataFetchingException' } }]],
      ['empty', [], [{ message: 'upstream subscription failed', extensions: { code: 'INTERNAL_SERVER_ERROR' } }]],
      ['strings', ['boom'], [{ message: 'boom', extensions: { code: 'INTERNAL_SERVER_ERROR' } }]],
    ]
    for (const [field, payload, expected] of cases) {
      const other = c.subscribe(`subscription { ${field} }`)
      const o = await upstreamSub(field)
      expect(o.ws).toBe(l.ws) // the same upstream connection carries both
      o.ws.send(JSON.stringify({ type: 'error', id: o.id, payload }))
      await other.received.wait((r) => r.error !== undefined || r.completed, 5_000, `${field} to end`)
      expect(other.received.error, field).toEqual(expected)
      // the live stream on that connection is still live
      tick()
      await live.received.wait((r) => r.payloads.length === n || r.error !== undefined, 5_000, `tick ${n}`)
      expect(live.received.error, field).toBeUndefined()
    }
    expect(live.received.payloads.map((p) => (p.data as { tick: number }).tick)).toEqual([1, 2, 3, 4, 5])
    expect(connections).toBe(1)
    expect(proxy.logs.find('upstream subscription connection closed with a final code; not reconnecting, its operations end with UPSTREAM_UNAVAILABLE')).toEqual([])
    await c.dispose()
  })
})
