// WebSocket passthrough to a graphql-ws backend that goes away mid-subscription without a close
// frame (killed: FIN; or reset: RST). ws reports no 'error' for a socket that fails once open,
// so the bridge cut the subscriber (1006, which graphql-ws clients retry) and left no trace at
// all: no log line, nothing in igw_proxy_errors_total — a crashed backend cutting every
// subscriber was invisible, where an HTTP upstream failing mid-response is a warning and a count.
// Real proxy, real graphql-yoga/graphql-ws backends, the real graphql-ws client.
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { createSchema } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './subscriptions/clients.ts'

/** A graphql-ws backend whose subscription never ends on its own; its sockets are kept to reset. */
async function startTickBackend(): Promise<{ url: string; server: Server; sockets: Set<WebSocket>; close(): void }> {
  const schema = createSchema({
    typeDefs: 'type Query { ok: Boolean } type Subscription { tick: Int! }',
    resolvers: {
      Subscription: {
        tick: {
          subscribe: async function* () {
            for (let i = 0; ; i++) {
              yield { tick: i }
              await new Promise((r) => setTimeout(r, 50))
            }
          },
        },
      },
    },
  })
  const server = createServer()
  const wss = new WebSocketServer({ server, path: '/tick' })
  const sockets = new Set<WebSocket>()
  wss.on('connection', (ws) => {
    sockets.add(ws)
    ws.on('close', () => sockets.delete(ws))
  })
  useServer({ schema }, wss)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    sockets,
    close() {
      for (const ws of sockets) ws.terminate()
      wss.close()
      server.closeAllConnections()
      server.close()
    },
  }
}

describe('passthrough: a graphql-ws backend lost mid-subscription', () => {
  let be: SubscriptionBackend
  let tick: Awaited<ReturnType<typeof startTickBackend>>
  let proxy: TestProxy
  const clients: GqlClient[] = []

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    tick = await startTickBackend()
    proxy = await startTestProxy({
      mode: 'ingress',
      routes: [
        { name: 'killed', match: { pathPrefix: '/graphql' }, upstream: be.url },
        { name: 'reset', match: { pathPrefix: '/tick' }, upstream: tick.url },
      ],
    } as never)
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await proxy?.close()
    await be?.close()
    tick?.close()
  })

  const lost = () => proxy.logs.find('websocket upstream connection lost; client cut')
  const counted = async (route: string) => metricSum(await proxy.metricsText(), 'igw_proxy_errors_total', `route="${route}",code="UPSTREAM_UNAVAILABLE"`)

  it('killed (FIN, no close frame): the subscriber is cut as before, and the loss is logged and counted', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    clients.push(c)
    const s = c.subscribe(EVENTS('lost-31b'))
    await waitUntil(() => be.active() === 1, 5_000, 'the backend subscription')
    be.publish('lost-31b')
    await s.received.wait((r) => r.events.length === 1)
    await be.stop()
    await waitUntil(() => c.closed !== undefined, 5_000, 'the client to be closed')
    expect(c.closed!.code).toBe(1006) // as the backend went (graphql-ws clients retry it)
    // (the old code: neither)
    await waitUntil(() => lost().length === 1, 5_000, 'the warning')
    expect(lost()[0]).toMatchObject({ level: 'warn', route: 'killed', side: 'upstream' })
    expect(typeof lost()[0]!.reqId).toBe('string')
    expect(await counted('killed')).toBe(1)
    await be.start()
  })

  it('reset (RST): the socket error is named in the log line', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/tick`)
    clients.push(c)
    const s = c.subscribe('subscription { tick }')
    await s.received.wait((r) => r.payloads.length >= 2, 5_000, 'ticks')
    expect(tick.sockets.size).toBe(1)
    for (const ws of tick.sockets) ((ws as unknown as { _socket: Socket })._socket).resetAndDestroy()
    await waitUntil(() => c.closed !== undefined, 5_000, 'the client to be closed')
    await waitUntil(() => lost().some((l) => l.route === 'reset'), 5_000, 'the warning')
    const line = lost().find((l) => l.route === 'reset')!
    expect((line.err as { code?: string }).code).toBe('ECONNRESET')
    expect(await counted('reset')).toBe(1)
  })

  it('a client that leaves, or a backend that closes with a close frame, is no upstream failure', async () => {
    const before = lost().length
    const countedBefore = await counted('reset')
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/tick`)
    const s = c.subscribe('subscription { tick }')
    await s.received.wait((r) => r.payloads.length >= 1, 5_000, 'a tick')
    await c.dispose()
    await waitUntil(() => tick.sockets.size === 0, 5_000, 'the backend to see the close')
    const d = new GqlClient(`ws://127.0.0.1:${proxy.port}/tick`)
    clients.push(d)
    const t = d.subscribe('subscription { tick }')
    await t.received.wait((r) => r.payloads.length >= 1, 5_000, 'a tick')
    for (const ws of tick.sockets) ws.close(1012, 'restarting')
    await waitUntil(() => d.closed !== undefined, 5_000, 'the client to be closed')
    expect(d.closed!.code).toBe(1012)
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_websocket_connections') === 0, 5_000, 'the bridges to end')
    expect(lost().length).toBe(before)
    expect(await counted('reset')).toBe(countedBefore)
  })
})
