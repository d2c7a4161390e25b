// The subscription hub (sweep 18c):
// - on shutdown, a query or mutation in flight over a terminated socket was cut by the 1001 close
//   without its result (graphql-ws clients then re-sent it on reconnect: a mutation ran twice).
//   The socket now waits for its in-flight queries and mutations, as HTTP drain waits for its
//   requests (up to the drain deadline), ending its subscriptions at once, then closes with 1001;
// - the subscriptions filter's maxPerConnection left out subscribes the client completed while
//   their admission still ran, which the hub's own per-connection limit counts: the two agree now;
// - legacy graphql-ws: a malformed `start` reusing the id of a running operation got an `error` for
//   that id (which ends it in subscriptions-transport-ws clients) while it ran on unseen, holding
//   its upstream subscription until the socket closed; it ends now, as that library's server does.
// Real WorkerProxy, the real hub, real graphql-ws backends (graphql-yoga + graphql-ws), raw ws clients.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { validateConfig } from '../../../config/load.ts'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { filterModules, type FilterModules } from '../../../filters/registry.ts'
import type { Filter } from '../../../proxy/filter.ts'
import { ProxyMetrics } from '../../../proxy/metrics.ts'
import { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { startSubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, RawClient } from './clients.ts'

async function start(doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>, modules: FilterModules = filterModules): Promise<{ proxy: WorkerProxy; url: string }> {
  const config = validateConfig({ subscriptions: { upstream: { lingerMs: 0 } }, ...doc } as never)
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics: new ProxyMetrics(new Registry()), shared: {}, modules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  return { proxy, url: `ws://127.0.0.1:${(proxy.server.address() as AddressInfo).port}/graphql` }
}

/** graphql-ws backend with a mutation that waits until the test releases it; counts its executions. */
async function slowBackend(): Promise<{ url: string; writes: () => number; reads: () => number; subscribed: () => number; release: () => void; close: () => Promise<void> }> {
  let writes = 0
  let reads = 0
  let subscribed = 0
  const waiting: (() => void)[] = []
  let released = false
  const schema = createSchema({
    typeDefs: /* GraphQL */ `
      type Query { ok: Boolean!, slowRead: String! }
      type Mutation { slowWrite: String! }
      type Subscription { ticks: Int! }
    `,
    resolvers: {
      Query: {
        ok: () => true,
        slowRead: async () => {
          reads++
          if (!released) await new Promise<void>((r) => waiting.push(r))
          return 'read'
        },
      },
      Mutation: {
        slowWrite: async () => {
          writes++
          if (!released) await new Promise<void>((r) => waiting.push(r))
          return 'written'
        },
      },
      Subscription: {
        ticks: {
          // never emits; the server's onSubscribe / onComplete count it
          // (an iterator whose return() settles at once, unlike a generator parked in an await)
          subscribe: (): AsyncIterableIterator<{ ticks: number }> => {
            let end: ((r: IteratorResult<{ ticks: number }>) => void) | undefined
            const done = { done: true, value: undefined } as const
            const it: AsyncIterableIterator<{ ticks: number }> = {
              next: () => new Promise((r) => (end = r)),
              return: () => {
                end?.(done)
                return Promise.resolve(done)
              },
              [Symbol.asyncIterator]: () => it,
            }
            return it
          },
        },
      },
    },
  })
  const yoga = createYoga({ schema, logging: false })
  const server: Server = createServer((req, res) => void yoga(req, res))
  const wss = new WebSocketServer({ server, path: '/graphql' })
  const isTicks = (q: string): boolean => q.includes('ticks')
  const disposable = useServer(
    {
      schema,
      onSubscribe: (_ctx, _id, payload) => void (isTicks(payload.query) && subscribed++),
      onComplete: (_ctx, _id, payload) => void (isTicks(payload.query) && subscribed--),
    },
    wss,
  )
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    writes: () => writes,
    reads: () => reads,
    subscribed: () => subscribed,
    release: () => {
      released = true
      for (const w of waiting.splice(0)) w()
    },
    close: async () => {
      await disposable.dispose()
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('subscription hub (sweep 18c)', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = []
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f()
  })

  it('shutdown waits for a mutation in flight over the socket, sends its result, then closes with 1001', async () => {
    const be = await slowBackend()
    cleanup.push(() => be.close())
    const s = await start({ routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
    let drained: Promise<void> | undefined
    cleanup.push(() => drained ?? s.proxy.drain(500))
    const c = await RawClient.open(s.url, ['graphql-transport-ws'])
    cleanup.push(() => c.end())
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'subscribe', id: 'sub', payload: { query: 'subscription { ticks }' } })
    await expect.poll(() => be.subscribed(), { timeout: 10_000 }).toBe(1)
    c.send({ type: 'subscribe', id: 'm', payload: { query: 'mutation { slowWrite }' } })
    await expect.poll(() => be.writes(), { timeout: 10_000 }).toBe(1)

    drained = s.proxy.drain(20_000)
    // the subscription ends at once upstream; the socket stays open for the mutation
    await expect.poll(() => be.subscribed(), { timeout: 10_000 }).toBe(0)
    await new Promise((r) => setTimeout(r, 200))
    expect(c.close).toBeUndefined()
    // a new operation sent while draining is not admitted (the client re-sends it after the 1001)
    c.send({ type: 'subscribe', id: 'late', payload: { query: 'mutation { slowWrite }' } })
    await new Promise((r) => setTimeout(r, 100))
    be.release()

    const close = await c.closed(10_000)
    expect(close).toEqual({ code: 1001, reason: 'gateway shutting down' })
    expect(c.of((m) => m.id === 'm')).toEqual([
      { type: 'next', id: 'm', payload: { data: { slowWrite: 'written' } } },
      { type: 'complete', id: 'm' },
    ])
    expect(c.of((m) => m.id === 'late')).toEqual([])
    expect(be.writes()).toBe(1)
    await drained
  })

  it('shutdown closes at once when the client stops its in-flight query', async () => {
    const be = await slowBackend()
    cleanup.push(() => be.close())
    const s = await start({ routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
    let drained: Promise<void> | undefined
    cleanup.push(() => drained ?? s.proxy.drain(500))
    const c = await RawClient.open(s.url, ['graphql-transport-ws'])
    cleanup.push(() => c.end())
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'subscribe', id: 'q', payload: { query: '{ slowRead }' } })
    await expect.poll(() => be.reads(), { timeout: 10_000 }).toBe(1)
    drained = s.proxy.drain(20_000)
    await new Promise((r) => setTimeout(r, 200))
    expect(c.close).toBeUndefined()
    c.send({ type: 'ping', payload: { at: 1 } })
    await c.wait((x) => x.messages.some((m) => m.type === 'pong'), 5_000, 'pong while draining')
    c.send({ type: 'complete', id: 'q' })
    expect(await c.closed(10_000)).toEqual({ code: 1001, reason: 'gateway shutting down' })
    await drained
    be.release()
  })

  it('maxPerConnection counts subscribes the client completed while their admission still ran, as the hub\'s limit does', async () => {
    const be = await slowBackend()
    cleanup.push(() => be.close())
    // A slow admission: the first filter holds every subscribe until the test opens the gate.
    const gates: (() => void)[] = []
    let open = false
    const slow: Filter = {
      name: 'slow',
      onRequest: () => (open ? undefined : new Promise<undefined>((r) => gates.push(() => r(undefined)))),
    }
    const modules = { ...filterModules, 'request-id': { create: () => slow } } as FilterModules
    const outcome = async (doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>): Promise<unknown[]> => {
      open = false
      const s = await start(doc, modules)
      try {
        const c = await RawClient.open(s.url, ['graphql-transport-ws'])
        try {
          c.send({ type: 'connection_init' })
          await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
          // two subscribe + complete bursts while admissions are slow, then a third subscribe
          for (const id of ['a', 'b']) {
            c.send({ type: 'subscribe', id, payload: { query: 'subscription { ticks }' } })
            c.send({ type: 'complete', id })
          }
          c.send({ type: 'subscribe', id: 'c', payload: { query: 'subscription { ticks }' } })
          await expect.poll(() => gates.length + c.messages.filter((m) => m.id === 'c').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(3)
          open = true
          for (const g of gates.splice(0)) g()
          // graphql-transport-ws answers an admitted subscription with nothing: it shows upstream
          await c.wait((x) => x.messages.some((m) => m.id === 'c') || be.subscribed() > 0, 10_000, 'an answer to c')
          if (be.subscribed() > 0) return ['admitted']
          return c.of((m) => m.id === 'c').map((m) => (m.payload as { extensions?: { code?: string } }[] | undefined)?.[0]?.extensions?.code ?? m.type)
        } finally {
          c.end()
        }
      } finally {
        open = true
        for (const g of gates.splice(0)) g()
        await s.proxy.drain(500)
      }
    }
    // The hub's own limit of 2 refuses "c": a and b still hold their places.
    const hub = await outcome({
      subscriptions: { maxSubscriptionsPerConnection: 2, upstream: { lingerMs: 0 } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }],
    } as never)
    expect(hub).toEqual(['QUOTA_EXCEEDED'])
    // The filter's limit of 2 says the same.
    const filter = await outcome({
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }, { name: 'subscriptions', maxPerConnection: 2 }] }],
    } as never)
    expect(filter).toEqual(['QUOTA_EXCEEDED'])
  })

  it('legacy graphql-ws: a malformed start reusing a running id ends that operation with its error', async () => {
    const be = await startSubscriptionBackend()
    cleanup.push(() => be.close())
    const s = await start({ routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
    cleanup.push(() => s.proxy.drain(500))
    const c = await RawClient.open(s.url, ['graphql-ws'])
    cleanup.push(() => c.end())
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'start', id: 'L', payload: { query: EVENTS('legacy-bad') } })
    c.send({ type: 'start', id: 'K', payload: { query: EVENTS('legacy-keep') } })
    await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(2)
    c.send({ type: 'start', id: 'L', payload: { query: 42 } })
    await c.wait((x) => x.messages.some((m) => m.type === 'error' && m.id === 'L'), 5_000, 'the error for L')
    // L is over on both sides: its upstream subscription goes, nothing more comes for it
    await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(1)
    be.publish('legacy-bad', { note: 'after' })
    be.publish('legacy-keep', { note: 'kept' })
    await c.wait((x) => x.messages.some((m) => m.type === 'data' && m.id === 'K'), 5_000, 'K still delivered')
    expect(c.of((m) => m.id === 'L').map((m) => m.type)).toEqual(['error'])
    expect(c.close).toBeUndefined()
  })
})
