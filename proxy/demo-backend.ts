// The sample GraphQL backend `igw demo` puts behind the gateway (and the tests use as a real
// backend): graphql-yoga over HTTP, graphql-ws for subscriptions, and NDJSON/CSV export
// endpoints whose records carry e-mails, phone numbers and SSN-like values for DLP.
import { getEventListeners, setMaxListeners } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { GraphQLError } from 'graphql'
import { createPubSub, createSchema, createYoga, filter, pipe, Repeater } from 'graphql-yoga'
import type { Context, SubscribePayload } from 'graphql-ws'
import { useServer, type Extra } from 'graphql-ws/use/ws'
import { WebSocketServer } from 'ws'

export interface Entity {
  id: string
  name: string
  email: string
  phone: string
  ssn: string
  updatedAt: string
}

const typeDefs = /* GraphQL */ `
  type Entity {
    id: ID!
    name: String!
    email: String
    phone: String
    ssn: String
    updatedAt: String!
  }
  "What the backend received: lets you see what the gateway adds (headers, extensions)."
  type RequestEcho {
    header(name: String!): String
    extensions: String
  }
  type Query {
    hello(name: String): String!
    entity(id: ID!): Entity
    entities(first: Int = 10): [Entity!]!
    "Resolves after the given delay; for timeouts and caching demos."
    slow(ms: Int!): String!
    echo: RequestEcho!
    "Fails on purpose (an error response must never be cached)."
    boom: String
  }
  type Mutation {
    updateEntity(id: ID!, name: String!): Entity!
  }
  type Subscription {
    entityChanged(id: ID): Entity!
    "Emits n, n-1 … 1 then completes; one value per intervalMs (0 to 60000)."
    countdown(from: Int!, intervalMs: Int = 100): Int!
  }
`

/** Deterministic sample records (a fixed LCG, so every run shows the same data). */
export function sampleEntity(i: number): Entity {
  const n = (i * 7919 + 104729) % 1_000_000
  const area = 100 + (n % 565) // valid SSN areas: 001-665 minus 000/666, 9xx excluded
  const group = 10 + (n % 89)
  const serial = 1000 + (n % 8999)
  return {
    id: String(i),
    name: `Entity ${i}`,
    email: `user${i}@example.com`,
    phone: `+1202555${String(1000 + (n % 9000)).padStart(4, '0')}`,
    ssn: `${area}-${group}-${serial}`,
    updatedAt: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
  }
}

interface Ctx {
  request: Request
  extensions?: Record<string, unknown>
}

export interface DemoBackend {
  readonly server: Server
  readonly port: number
  readonly url: string
  /** Resolver executions (not cache hits upstream of it): the tests count these. */
  readonly stats: { operations: number; byField: Map<string, number> }
  /** Subscriptions still holding a pubsub listener or a countdown timer: 0 once all are closed. */
  liveSubscriptions(): number
  close(): Promise<void>
}

export async function startDemoBackend(opts: { host?: string; port?: number; entities?: number } = {}): Promise<DemoBackend> {
  const store = new Map<string, Entity>()
  for (let i = 1; i <= (opts.entities ?? 50); i++) store.set(String(i), sampleEntity(i))
  const events = new EventTarget()
  // Every open entityChanged subscription holds one listener: Node's default limit of ten warned of
  // a leak at the eleventh client. Leaks are what liveSubscriptions() shows; no count means one here.
  setMaxListeners(0, events)
  const pubsub = createPubSub<{ entityChanged: [Entity] }>({ eventTarget: events })
  let countdowns = 0
  const stats = { operations: 0, byField: new Map<string, number>() }
  const count = (field: string) => {
    stats.operations++
    stats.byField.set(field, (stats.byField.get(field) ?? 0) + 1)
  }

  const schema = createSchema<Ctx>({
    typeDefs,
    resolvers: {
      Query: {
        hello: (_: unknown, a: { name?: string }) => (count('hello'), `Hello, ${a.name ?? 'world'}!`),
        entity: (_: unknown, a: { id: string }) => (count('entity'), store.get(a.id) ?? null),
        entities: (_: unknown, a: { first: number }) => (count('entities'), [...store.values()].slice(0, Math.max(0, Math.min(a.first, 1000)))),
        slow: async (_: unknown, a: { ms: number }) => {
          count('slow')
          await new Promise((r) => setTimeout(r, Math.min(a.ms, 60_000)))
          return `waited ${a.ms} ms`
        },
        echo: (_: unknown, _a: unknown, ctx: Ctx) => (count('echo'), { ctx }),
        boom: () => {
          count('boom')
          throw new Error('boom: this field always fails')
        },
      },
      RequestEcho: {
        header: (p: { ctx: Ctx }, a: { name: string }) => p.ctx.request.headers.get(a.name),
        extensions: (p: { ctx: Ctx }) => JSON.stringify(p.ctx.extensions ?? null),
      },
      Mutation: {
        updateEntity: (_: unknown, a: { id: string; name: string }) => {
          count('updateEntity')
          const prev = store.get(a.id) ?? sampleEntity(Number(a.id) || 0)
          const next = { ...prev, id: a.id, name: a.name, updatedAt: new Date().toISOString() }
          store.set(a.id, next)
          pubsub.publish('entityChanged', next)
          return next
        },
      },
      Subscription: {
        entityChanged: {
          subscribe: (_: unknown, a: { id?: string }) => {
            const it = pubsub.subscribe('entityChanged')
            if (a.id === undefined || a.id === null) return it
            // A Repeater, not an async generator: a generator's return() waits for its pending
            // next(), i.e. for a change of this id, keeping the pubsub listener past the unsubscribe.
            return pipe(it, filter((e: Entity) => e.id === a.id))
          },
          resolve: (e: Entity) => e,
        },
        countdown: {
          subscribe: (_: unknown, a: { from: number; intervalMs: number | null }) => {
            const ms = a.intervalMs ?? 100
            // Unbounded, one subscription held a timer for up to Int's 2^31-1 ms (24.8 days), and Node
            // ran a negative interval at 1 ms.
            if (ms < 0 || ms > 60_000) throw new GraphQLError(`countdown: intervalMs must be from 0 to 60000, got ${ms}`)
            // A Repeater, not an async generator: a generator's return() waits for the pending
            // timer, so an unsubscribe kept it running for up to intervalMs.
            return new Repeater<{ countdown: number }>(async (push, stop) => {
              countdowns++
              let stopped = false
              void stop.then(() => (stopped = true))
              let timer: NodeJS.Timeout | undefined
              try {
                for (let i = a.from; i >= 1 && !stopped; i--) {
                  await push({ countdown: i })
                  await Promise.race([stop, new Promise((r) => (timer = setTimeout(r, ms)))])
                  clearTimeout(timer)
                }
              } finally {
                countdowns--
                stop()
              }
            })
          },
        },
      },
    },
  })

  const yoga = createYoga<Ctx>({
    schema,
    graphqlEndpoint: '/graphql',
    graphiql: false,
    logging: false,
    maskedErrors: false,
    landingPage: false,
    context: async ({ request, params }: { request: Request; params?: { extensions?: Record<string, unknown> } }) => ({ request, extensions: params?.extensions }),
  })

  const server = createServer((req, res) => {
    if (req.url?.startsWith('/export/')) {
      serveExport(req, res)
      return
    }
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end('ok')
      return
    }
    void yoga.handle(req, res)
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve)
  })
  // Attached once the port is ours: attached before, a taken port would also reach graphql-ws's
  // own error handler, which prints a stack trace about an "internal error" beside our one line.
  const wss = new WebSocketServer({ server, path: '/graphql' })
  // graphql-ws listens with `once`: a second server error (an accept failure) would otherwise be
  // an unhandled 'error' event ending the demo.
  wss.on('error', () => undefined)
  useServer(
    {
      execute: (args: { rootValue: { execute: (a: unknown) => unknown } }) => args.rootValue.execute(args),
      subscribe: (args: { rootValue: { subscribe: (a: unknown) => unknown } }) => args.rootValue.subscribe(args),
      onSubscribe: async (ctx: Context<Record<string, unknown> | undefined, Extra>, _id: string, params: SubscribePayload) => {
        const enveloped = yoga.getEnveloped({ ...ctx, req: ctx.extra.request, socket: ctx.extra.socket, params })
        const document = enveloped.parse(params.query)
        const errors = enveloped.validate(enveloped.schema, document)
        if (errors.length) return errors
        count('subscribe')
        return {
          schema: enveloped.schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await enveloped.contextFactory(),
          rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
        }
      },
    } as never,
    wss,
  )

  const port = (server.address() as AddressInfo).port
  return {
    server,
    port,
    url: `http://${urlHost(opts.host ?? '127.0.0.1')}:${port}`,
    stats,
    liveSubscriptions: () => getEventListeners(events, 'entityChanged').length + countdowns,
    close: async () => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/**
 * The host of the backend's URL, which `igw demo` gives the control plane as the upstream and
 * prints. An IPv6 address goes in brackets (`http://::1:4000` is no URL: the demo died with the
 * control plane's validation stack trace), and a wildcard address is reached on loopback.
 */
export function urlHost(host: string): string {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  if (h === '' || h === '0.0.0.0' || h === '*') return '127.0.0.1'
  if (h === '::') return '[::1]'
  return h.includes(':') ? `[${h}]` : h
}

/**
 * GET /export/entities.ndjson?count=N and /export/entities.csv?count=N: N generated records
 * (0 to 50,000,000, default 100), written with backpressure so any size streams in constant
 * memory. HEAD answers the headers only; other methods are a 405, a bad count a 400.
 */
function serveExport(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://backend')
  const csv = url.pathname.endsWith('.csv')
  if (!csv && !url.pathname.endsWith('.ndjson')) return fail(res, 404, 'try /export/entities.ndjson or /export/entities.csv')
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD')
    return fail(res, 405, `${req.method ?? ''} not allowed: use GET`)
  }
  const raw = url.searchParams.get('count') ?? '100'
  // Number() would take "abc" as NaN (then 0: a 200 with no records), "1e3" and "0x10" as numbers.
  const total = /^\d{1,8}$/.test(raw) ? Number(raw) : NaN
  if (!(total <= 50_000_000)) return fail(res, 400, 'count must be an integer from 0 to 50000000')
  res.writeHead(200, { 'content-type': csv ? 'text/csv; charset=utf-8' : 'application/x-ndjson' })
  // Node drops a HEAD response's body but not the work: the loop below would generate every
  // record, synchronously, with no backpressure to pause it (50M took the backend minutes).
  if (req.method === 'HEAD') {
    res.end()
    return
  }
  if (csv) res.write('id,name,email,phone,ssn,note\n')
  let i = 1
  const pump = () => {
    while (i <= total) {
      const e = sampleEntity(i)
      const note = `order ${100000 + i} shipped`
      const line = csv ? `${e.id},${e.name},${e.email},${e.phone},${e.ssn},${note}\n` : `${JSON.stringify({ ...e, note })}\n`
      i++
      if (!res.write(line)) {
        res.once('drain', pump)
        return
      }
    }
    res.end()
  }
  res.on('close', () => {
    i = total + 1 // client went away: stop generating
  })
  pump()
}

function fail(res: ServerResponse, status: number, error: string): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ error }))
}
