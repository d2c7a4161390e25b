// Bench backend for the subscriptions scenario: graphql-yoga over graphql-ws with one
// subscription, ticks(channel), emitting RATE events per second in total, round-robin over
// CHANNELS channels. Each event carries its emit time (ms, sub-ms precision, comparable across
// processes on one machine) so the load generator measures end-to-end latency.
// argv: [port] ; env: RATE (default 100), CHANNELS (default 10), PAD (payload bytes, default 200)
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'
import type { Context, SubscribePayload } from 'graphql-ws'
import { useServer, type Extra } from 'graphql-ws/use/ws'
import { WebSocketServer } from 'ws'

const RATE = Number(process.env.RATE ?? 100)
const CHANNELS = Number(process.env.CHANNELS ?? 10)
const PAD = 'p'.repeat(Number(process.env.PAD ?? 200))

interface Tick {
  channel: number
  seq: number
  at: number
  pad: string
}

const listeners: Set<(t: Tick) => void>[] = Array.from({ length: CHANNELS }, () => new Set())

function ticks(channel: number): AsyncIterableIterator<{ ticks: Tick }> {
  const set = listeners[((channel % CHANNELS) + CHANNELS) % CHANNELS]!
  const queue: Tick[] = []
  let waiting: ((r: IteratorResult<{ ticks: Tick }>) => void) | undefined
  let done = false
  const push = (t: Tick) => {
    if (waiting) {
      const w = waiting
      waiting = undefined
      w({ value: { ticks: t }, done: false })
    } else queue.push(t)
  }
  set.add(push)
  const finish = () => {
    if (!done) {
      done = true
      set.delete(push)
      waiting?.({ value: undefined, done: true })
    }
    return Promise.resolve({ value: undefined, done: true } as IteratorResult<{ ticks: Tick }>)
  }
  return {
    next: () => (queue.length ? Promise.resolve({ value: { ticks: queue.shift()! }, done: false }) : done ? finish() : new Promise((r) => (waiting = r))),
    return: finish,
    throw: (e: unknown) => finish().then(() => Promise.reject(e)),
    [Symbol.asyncIterator]() {
      return this
    },
  }
}

const schema = createSchema({
  typeDefs: /* GraphQL */ `
    type Tick {
      channel: Int!
      seq: Int!
      at: Float!
      pad: String
    }
    type Query {
      ok: Boolean!
    }
    type Subscription {
      ticks(channel: Int!): Tick!
    }
  `,
  resolvers: {
    Query: { ok: () => true },
    Subscription: { ticks: { subscribe: (_: unknown, a: { channel: number }) => ticks(a.channel) } },
  },
})
const yoga = createYoga({ schema, logging: false, landingPage: false, graphiql: false })
const server = createServer((req, res) => void yoga.handle(req, res))
const wss = new WebSocketServer({ server, path: '/graphql' })
useServer(
  {
    schema,
    onSubscribe: (ctx: Context<Record<string, unknown> | undefined, Extra>, _id: string, params: SubscribePayload) => {
      const enveloped = yoga.getEnveloped({ req: ctx.extra.request, socket: ctx.extra.socket, params })
      const document = enveloped.parse(params.query)
      const errors = enveloped.validate(enveloped.schema, document)
      if (errors.length) return errors
      return { schema: enveloped.schema, operationName: params.operationName, document, variableValues: params.variables }
    },
  } as never,
  wss,
)

// Open-loop emission: every 5 ms, emit whatever is due by now (no drift, no bursts beyond 5 ms).
let seq = 0
const t0 = performance.now()
setInterval(() => {
  const due = Math.floor(((performance.now() - t0) * RATE) / 1000)
  while (seq < due) {
    const channel = seq % CHANNELS
    const tick: Tick = { channel, seq: ++seq, at: performance.timeOrigin + performance.now(), pad: PAD }
    for (const push of listeners[channel]!) push(tick)
  }
}, 5)

server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
