// A test-only GraphQL backend for the subscription hub: graphql-yoga's schema and execution
// over graphql-ws (like the demo backend), with what the hub's tests need to observe and to
// provoke: per-tenant event delivery, a record of every upstream connection (headers and
// connection_init payload) and subscribe, events of any size, stop/start on the same port
// (an outage), and optionally resumable streams (extensions.eventId / lastEventId / resumedFrom).
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'
import type { Context, SubscribePayload } from 'graphql-ws'
import { useServer, type Extra } from 'graphql-ws/use/ws'
import { WebSocketServer } from 'ws'

export interface BackendEvent {
  seq: number
  channel: string
  tenant: string | null
  note: string | null
  blob: string | null
}

export interface SeenConnection {
  headers: IncomingMessage['headers']
  params: Record<string, unknown> | undefined
}

export interface SeenSubscribe {
  channel: string
  tenant: string | null
  lastEventId: string | undefined
}

export interface SubscriptionBackend {
  port: number
  url: string
  connections: SeenConnection[]
  subscribes: SeenSubscribe[]
  /** Subscriptions currently open on the backend. */
  active(): number
  /** Emit one event on a channel (only to that tenant's subscribers when `tenant` is set); returns its seq. */
  publish(channel: string, opts?: { tenant?: string; note?: string; bytes?: number }): number
  /** Kill every connection and stop listening (an outage). */
  stop(): Promise<void>
  /** Listen again on the same port. */
  start(): Promise<void>
  close(): Promise<void>
}

const typeDefs = /* GraphQL */ `
  type Event {
    seq: Int!
    channel: String!
    tenant: String
    note: String
    blob: String
  }
  type Query {
    ok: Boolean!
  }
  type Subscription {
    events(channel: String!): Event!
  }
`

interface Listener {
  channel: string
  tenant: string | null
  push(e: BackendEvent): void
}

interface SubCtx {
  tenant: string | null
  lastEventId: string | undefined
  resumedFrom: string | undefined
}

/**
 * An async iterator fed by push(); ends when the consumer returns. Hand-written rather than an
 * async generator: a generator parked on an await cannot be returned until it wakes up, so an
 * unsubscribe would not reach the backend until the next event.
 */
function channelIterator(register: (push: (e: BackendEvent) => void) => () => void): AsyncIterableIterator<{ events: BackendEvent }> {
  const queue: BackendEvent[] = []
  let waiting: ((r: IteratorResult<{ events: BackendEvent }>) => void) | undefined
  let done = false
  const unregister = register((e) => {
    if (done) return
    if (waiting !== undefined) {
      const w = waiting
      waiting = undefined
      w({ value: { events: e }, done: false })
    } else queue.push(e)
  })
  const finish = (): Promise<IteratorResult<{ events: BackendEvent }>> => {
    if (!done) {
      done = true
      unregister()
      waiting?.({ value: undefined, done: true })
      waiting = undefined
    }
    return Promise.resolve({ value: undefined, done: true })
  }
  return {
    next: () => {
      if (queue.length > 0) return Promise.resolve({ value: { events: queue.shift()! }, done: false })
      if (done) return Promise.resolve({ value: undefined, done: true })
      return new Promise((resolve) => (waiting = resolve))
    },
    return: finish,
    throw: (err: unknown) => finish().then(() => Promise.reject(err)),
    [Symbol.asyncIterator]() {
      return this
    },
  }
}

export async function startSubscriptionBackend(opts: { resumable?: boolean } = {}): Promise<SubscriptionBackend> {
  const listeners = new Set<Listener>()
  const history: BackendEvent[] = []
  const connections: SeenConnection[] = []
  const subscribes: SeenSubscribe[] = []
  let seq = 0

  const schema = createSchema<{ sub: SubCtx }>({
    typeDefs,
    resolvers: {
      Query: { ok: () => true },
      Subscription: {
        events: {
          subscribe: (_: unknown, a: { channel: string }, ctx: { sub: SubCtx }) => {
            const { tenant, lastEventId } = ctx.sub
            subscribes.push({ channel: a.channel, tenant, lastEventId })
            return channelIterator((push) => {
              // A resumable backend first re-sends what came after the client's last event.
              if (opts.resumable && lastEventId !== undefined) {
                ctx.sub.resumedFrom = lastEventId
                for (const e of history) if (e.seq > Number(lastEventId) && e.channel === a.channel && (e.tenant === null || e.tenant === tenant)) push(e)
              }
              const l: Listener = { channel: a.channel, tenant, push }
              listeners.add(l)
              return () => listeners.delete(l)
            })
          },
        },
      },
    },
  })
  const yoga = createYoga({ schema, graphqlEndpoint: '/graphql', logging: false, maskedErrors: false, landingPage: false, graphiql: false })

  let server: Server
  let wss: WebSocketServer
  let port = 0
  const start = async () => {
    server = createServer((req, res) => void yoga.handle(req, res))
    wss = new WebSocketServer({ server, path: '/graphql' })
    wss.on('error', () => undefined)
    useServer(
      {
        schema,
        onConnect: (ctx: Context<Record<string, unknown> | undefined, Extra>) => {
          connections.push({ headers: ctx.extra.request.headers, params: ctx.connectionParams })
          return true
        },
        onSubscribe: (ctx: Context<Record<string, unknown> | undefined, Extra>, _id: string, params: SubscribePayload) => {
          const enveloped = yoga.getEnveloped({ req: ctx.extra.request, socket: ctx.extra.socket, params })
          const document = enveloped.parse(params.query)
          const errors = enveloped.validate(enveloped.schema, document)
          if (errors.length) return errors
          const header = ctx.extra.request.headers['x-tenant-id']
          const lastEventId = (params.extensions as { lastEventId?: unknown } | undefined)?.lastEventId
          const sub: SubCtx = { tenant: typeof header === 'string' ? header : null, lastEventId: typeof lastEventId === 'string' ? lastEventId : undefined, resumedFrom: undefined }
          return { schema: enveloped.schema, operationName: params.operationName, document, variableValues: params.variables, contextValue: { sub } }
        },
        onNext: (_ctx: unknown, _id: string, _payload: unknown, args: { contextValue: unknown }, result: { data?: unknown; errors?: unknown; extensions?: Record<string, unknown> }) => {
          if (!opts.resumable) return undefined
          const data = result.data as { events?: { seq?: number } } | undefined
          const sub = (args.contextValue as { sub: SubCtx }).sub
          const extensions: Record<string, unknown> = { ...result.extensions, eventId: String(data?.events?.seq ?? '') }
          if (sub.resumedFrom !== undefined) {
            extensions.resumedFrom = sub.resumedFrom
            sub.resumedFrom = undefined
          }
          return { ...result, extensions } as never
        },
      } as never,
      wss,
    )
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', resolve)
    })
    port = (server.address() as AddressInfo).port
  }
  const stop = async () => {
    for (const c of wss.clients) c.terminate()
    wss.close()
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
  }
  await start()
  return {
    get port() {
      return port
    },
    get url() {
      return `http://127.0.0.1:${port}`
    },
    connections,
    subscribes,
    active: () => listeners.size,
    publish(channel, o = {}) {
      const e: BackendEvent = { seq: ++seq, channel, tenant: o.tenant ?? null, note: o.note ?? null, blob: o.bytes ? 'x'.repeat(o.bytes) : null }
      history.push(e)
      if (history.length > 10_000) history.shift()
      for (const l of listeners) if (l.channel === channel && (e.tenant === null || e.tenant === l.tenant)) l.push(e)
      return e.seq
    },
    stop,
    start,
    close: stop,
  }
}
