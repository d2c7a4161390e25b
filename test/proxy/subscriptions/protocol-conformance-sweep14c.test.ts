// graphql-transport-ws conformance of the terminated hub, against what graphql-ws's own server
// (useServer) and a real graphql-ws client do:
//  - a protocol violation closes the socket with the library's code even when the close reason
//    quotes client input in non-ASCII characters (ws refuses a reason over 123 bytes of UTF-8;
//    the hub used to count characters, ws threw, and the socket stayed open but deaf);
//  - ping and pong payloads must be objects (or null/absent), else 4400, like the reference;
//  - legacy graphql-ws: a `start` for an id already running replaces that operation, as
//    subscriptions-transport-ws does (an `error` ended it in the client while it ran on);
//  - a mutation sent over the socket is never re-sent upstream after the upstream connection
//    dropped with it in flight (graphql-ws resubscribes every open operation on reconnect: the
//    backend ran the mutation twice).
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, RawClient, waitUntil, type NextPayload } from './clients.ts'

describe('terminated protocols: conformance probes, beside graphql-ws\'s own server', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  let url: string
  let ref: string

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({ routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
    // The backend is graphql-ws's reference server (useServer): the same probes, straight to it.
    ref = `${be.url.replace(/^http/, 'ws')}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  const active = async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active')

  it('an unknown message type of multi-byte characters closes with 4400 (reason within 123 bytes), not a socket left open and deaf', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    c.send({ type: '€'.repeat(60) })
    const closed = await c.closed(5_000)
    expect(closed.code).toBe(4400)
    expect(closed.reason.startsWith('unknown message type "€€€')).toBe(true)
    expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123)
    expect(metricSum(await proxy.metricsText(), 'igw_subscription_closes_total', 'code="4400"')).toBeGreaterThanOrEqual(1)
  })

  it('a duplicate subscribe id of multi-byte characters closes with 4409 "Subscriber for … already exists", and its subscription ends', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    c.send({ type: 'connection_init' })
    const id = 'é'.repeat(100) // 100 characters, 200 bytes: a valid id
    const sub = { type: 'subscribe', id, payload: { query: EVENTS('dup-long') } }
    c.send(sub)
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'dup-long'), 5_000, 'the upstream subscribe')
    await waitUntil(async () => (await active()) === 1, 5_000, 'one active subscription')
    c.send(sub)
    const closed = await c.closed(5_000)
    expect(closed.code).toBe(4409)
    expect(closed.reason.startsWith(`Subscriber for ${id.slice(0, 20)}`)).toBe(true)
    expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123)
    // The connection is gone on the gateway too: its subscription released.
    await waitUntil(async () => (await active()) === 0, 5_000, 'no active subscription left')
  })

  it('ping/pong payloads: objects are echoed, null/absent give a bare pong, anything else closes with 4400 — as graphql-ws\'s server does', async () => {
    const probe = async (target: string, ping: unknown): Promise<{ pong: unknown; close: number | undefined }> => {
      const c = await RawClient.open(target, ['graphql-transport-ws'])
      try {
        c.ws.send(JSON.stringify(ping))
        await c.wait((x) => x.messages.length > 0 || x.close !== undefined, 5_000, 'a pong or a close')
        return { pong: c.messages[0], close: c.close?.code }
      } finally {
        c.end()
      }
    }
    const cases: [unknown, { pong: unknown; close: number | undefined }][] = [
      [{ type: 'ping', payload: { n: 1 } }, { pong: { type: 'pong', payload: { n: 1 } }, close: undefined }],
      [{ type: 'ping', payload: null }, { pong: { type: 'pong' }, close: undefined }],
      [{ type: 'ping' }, { pong: { type: 'pong' }, close: undefined }],
      [{ type: 'ping', payload: 'x' }, { pong: undefined, close: 4400 }],
      [{ type: 'ping', payload: [1] }, { pong: undefined, close: 4400 }],
      [{ type: 'pong', payload: 5 }, { pong: undefined, close: 4400 }],
    ]
    for (const [ping, want] of cases) {
      expect(await probe(ref, ping), `reference server, ${JSON.stringify(ping)}`).toEqual(want)
      expect(await probe(url, ping), `gateway, ${JSON.stringify(ping)}`).toEqual(want)
    }
    // A graphql-ws client's own pings (none, or an object payload) are answered as before.
    const ok = await RawClient.open(url, ['graphql-transport-ws'])
    ok.send({ type: 'pong', payload: { n: 2 } })
    ok.send({ type: 'ping', payload: { n: 3 } })
    await ok.wait((x) => x.messages.length === 1)
    expect(ok.messages).toEqual([{ type: 'pong', payload: { n: 3 } }])
    expect(ok.close).toBeUndefined()
    ok.end()
  })

  it('legacy graphql-ws: a start with an id already running replaces that operation (as subscriptions-transport-ws does), instead of an error that ends it for the client while it runs on unseen', async () => {
    const c = await RawClient.open(url, ['graphql-ws'])
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    c.send({ type: 'start', id: 'L', payload: { query: EVENTS('legacy-old') } })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'legacy-old'), 5_000, 'the first upstream subscribe')
    c.send({ type: 'start', id: 'L', payload: { query: EVENTS('legacy-new') } })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'legacy-new'), 5_000, 'the second upstream subscribe')
    // One operation for id L: the old one gave its slot back.
    await waitUntil(async () => (await active()) === 1, 5_000, 'one active subscription')
    be.publish('legacy-old', { note: 'old' })
    be.publish('legacy-new', { note: 'new' })
    await c.wait((x) => x.messages.some((m) => m.type === 'data'))
    await sleep(200)
    const forL = c.messages.filter((m) => m.id === 'L')
    expect(forL.map((m) => m.type)).toEqual(['data'])
    expect((forL[0]!.payload as NextPayload).data!.events!.note).toBe('new')
    c.send({ type: 'stop', id: 'L' })
    await waitUntil(async () => (await active()) === 0, 5_000, 'no active subscription left')
    expect(c.close).toBeUndefined()
    c.end()
  })
})

interface PayBackend {
  url: string
  /** Times each mutation/query resolver ran, by name. */
  runs: Map<string, number>
  /** The next resolver to run drops every WebSocket connection first. */
  dropNext: boolean
  close(): Promise<void>
}

/**
 * graphql-ws's own server (useServer) over a schema with a `pay` mutation and a `slowHello` query
 * that answer after a moment; armed (dropNext), the next one to run drops every WebSocket
 * connection first (the backend has begun executing it).
 */
async function startPayBackend(): Promise<PayBackend> {
  const runs = new Map<string, number>()
  let wss: WebSocketServer | undefined
  const run = async (name: string, answer: (n: number) => unknown) => {
    const n = (runs.get(name) ?? 0) + 1
    runs.set(name, n)
    if (backend.dropNext) {
      backend.dropNext = false
      for (const ws of wss!.clients) ws.terminate()
    }
    await sleep(100)
    return answer(n)
  }
  const schema = createSchema({
    typeDefs: 'type Query { slowHello: String! }  type Mutation { pay(amount: Int!): Int! }',
    resolvers: {
      Query: { slowHello: () => run('slowHello', (n) => `hello #${n}`) },
      Mutation: { pay: (_: unknown, a: { amount: number }) => run(`pay ${a.amount}`, (n) => n) },
    },
  })
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  wss = new WebSocketServer({ server, path: '/graphql' })
  useServer({ schema }, wss)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const backend: PayBackend = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    runs,
    dropNext: false,
    async close() {
      for (const ws of wss!.clients) ws.terminate()
      wss!.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
  return backend
}

describe('terminated graphql-transport-ws: single operations when the upstream connection drops', () => {
  let be: PayBackend
  let proxy: TestProxy
  let url: string

  beforeAll(async () => {
    be = await startPayBackend()
    // Fast reconnects: a re-sent mutation would reach the backend well within the test's window.
    proxy = await startTestProxy({
      subscriptions: { upstream: { retryInitialMs: 20, retryMaxMs: 50 } },
      routes: [{ name: 'pay', upstream: be.url, websocket: { mode: 'terminate' } }],
    } as never)
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('a mutation in flight is not re-sent after the reconnect: it runs once and ends with UPSTREAM_UNAVAILABLE; the next one runs normally', async () => {
    const c = new GqlClient(url)
    be.dropNext = true
    const { received } = c.subscribe('mutation { pay(amount: 1) }')
    await received.wait((r) => r.error !== undefined || r.completed, 10_000, 'the mutation to end')
    // A re-sent mutation would have run by now (reconnects within 50 ms); give it ample time.
    await sleep(500)
    expect(be.runs.get('pay 1')).toBe(1)
    expect(received.payloads).toEqual([])
    const errors = received.error as { message: string; extensions?: { code?: string } }[]
    expect(Array.isArray(errors)).toBe(true)
    expect(errors[0]!.extensions?.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(errors[0]!.message).toContain('not re-sent')

    // The next mutation runs normally, once (over a new upstream connection).
    const again = c.subscribe('mutation { pay(amount: 2) }')
    await again.received.wait((r) => r.completed, 10_000, 'the second mutation to complete')
    expect(again.received.payloads).toEqual([{ data: { pay: 1 } }])
    expect(be.runs.get('pay 2')).toBe(1)
    await c.dispose()
  })

  it('a query in flight is still retried over the restored connection (queries have no side effects)', async () => {
    const c = new GqlClient(url)
    be.dropNext = true
    const { received } = c.subscribe('query { slowHello }')
    await received.wait((r) => r.completed || r.error !== undefined, 10_000, 'the query to end')
    expect(received.error).toBeUndefined()
    expect(received.payloads).toEqual([{ data: { slowHello: 'hello #2' } }])
    await c.dispose()
  })
})
