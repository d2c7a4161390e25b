// A real @apollo/server 5 backend, as an app team runs one: HTTP through executeHTTPGraphQLRequest
// (the code path of Apollo's own startStandaloneServer and express integrations: CORS, JSON body,
// CSRF prevention, APQ, cache-control hints) and subscriptions over graphql-ws on the same port
// (`graphql-ws/use/ws`, Apollo's documented setup). It can be stopped and started again on the
// same port (a backend restart under live subscriptions).
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ApolloServer, HeaderMap } from '@apollo/server'
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer'
import { makeExecutableSchema } from '@graphql-tools/schema'
import { GraphQLError } from 'graphql'
import { useServer } from 'graphql-ws/use/ws'
import { WebSocketServer } from 'ws'

export const APOLLO_TYPE_DEFS = /* GraphQL */ `
  enum CacheControlScope { PUBLIC PRIVATE }
  directive @cacheControl(maxAge: Int, scope: CacheControlScope, inheritMaxAge: Boolean) on FIELD_DEFINITION | OBJECT | INTERFACE | UNION
  type Author @cacheControl(maxAge: 60) { id: ID! name: String! }
  type Book @cacheControl(maxAge: 60) { id: ID! title: String! author: Author! }
  type Seen { clientName: String clientVersion: String authorization: String requestId: String tenant: String }
  type Query {
    book(id: ID!): Book
    books: [Book!]! @cacheControl(maxAge: 60)
    uncachedBook(id: ID!): Book
    boom: String
    coded: String
    partial: [Book]
    big(n: Int!, size: Int!): [String!]! @cacheControl(maxAge: 60)
    seen: Seen
  }
  type Mutation { renameBook(id: ID!, title: String!): Book! }
  type Subscription { bookRenamed: Book! }
`

export interface ApolloBackend {
  url: string
  wsUrl: string
  port: number
  /** Headers of every HTTP request the backend received, in order. */
  requests: { method: string; url: string; headers: IncomingHttpHeaders; body: unknown }[]
  /** Open graphql-ws subscriptions. */
  liveSubscriptions(): number
  /** Emits bookRenamed to every subscriber. */
  publish(book: { id: string; title: string }): void
  books: Map<string, string>
  stop(): Promise<void>
  /** Starts again on the same port after stop(). */
  start(): Promise<void>
}

export async function startApolloBackend(opts: { port?: number } = {}): Promise<ApolloBackend> {
  const books = new Map([
    ['1', 'Dune'],
    ['2', 'Emma'],
    ['3', 'Ulysses'],
  ])
  const authors: Record<string, string> = { '1': 'Herbert', '2': 'Austen', '3': 'Joyce' }
  const book = (id: string) => (books.has(id) ? { id, title: books.get(id)!, author: { id: `a${id}`, name: authors[id] ?? '?' } } : null)
  const listeners = new Set<(b: unknown) => void>()
  let live = 0
  const requests: ApolloBackend['requests'] = []

  const schema = makeExecutableSchema({
    typeDefs: APOLLO_TYPE_DEFS,
    resolvers: {
      Query: {
        book: (_: unknown, a: { id: string }) => book(a.id),
        uncachedBook: (_: unknown, a: { id: string }, _c: unknown, info: { cacheControl: { setCacheHint(h: { maxAge: number }): void } }) => {
          info.cacheControl.setCacheHint({ maxAge: 0 })
          return book(a.id)
        },
        books: () => [...books.keys()].map(book),
        boom: () => {
          throw new Error('the resolver threw')
        },
        coded: () => {
          throw new GraphQLError('not yours', { extensions: { code: 'FORBIDDEN', reason: 'owner_only', http: { status: 200 } } })
        },
        partial: () => [book('1'), Promise.reject(new GraphQLError('shelf 2 is locked', { extensions: { code: 'LOCKED' } })), book('3')],
        big: (_: unknown, a: { n: number; size: number }) => Array.from({ length: a.n }, (_x, i) => `${i}:`.padEnd(a.size, 'x')),
        seen: (_: unknown, _a: unknown, ctx: { headers: IncomingHttpHeaders }) => ({
          clientName: ctx.headers['apollographql-client-name'] ?? null,
          clientVersion: ctx.headers['apollographql-client-version'] ?? null,
          authorization: ctx.headers.authorization ?? null,
          requestId: ctx.headers['x-request-id'] ?? null,
          tenant: ctx.headers['x-tenant-id'] ?? null,
        }),
      },
      Mutation: {
        renameBook: (_: unknown, a: { id: string; title: string }) => {
          books.set(a.id, a.title)
          const b = book(a.id)!
          for (const l of listeners) l({ bookRenamed: b })
          return b
        },
      },
      Subscription: {
        bookRenamed: {
          subscribe: () => {
            const queue: unknown[] = []
            let wake: (() => void) | undefined
            const push = (v: unknown) => {
              queue.push(v)
              wake?.()
            }
            listeners.add(push)
            live++
            const done = () => {
              if (listeners.delete(push)) live--
            }
            return {
              [Symbol.asyncIterator]() {
                return this
              },
              async next() {
                while (queue.length === 0) await new Promise<void>((r) => (wake = r))
                return { value: queue.shift(), done: false }
              },
              async return() {
                done()
                wake?.()
                return { value: undefined, done: true }
              },
            }
          },
        },
      },
    },
  })

  let httpServer: Server
  let port = opts.port ?? 0
  let closeWs: (() => Promise<void>) | undefined
  let apollo: ApolloServer<{ headers: IncomingHttpHeaders }>

  async function start(): Promise<void> {
    httpServer = createServer((req, res) => void handle(req, res))
    const wss = new WebSocketServer({ server: httpServer, path: '/graphql' })
    const cleanup = useServer({ schema }, wss)
    apollo = new ApolloServer<{ headers: IncomingHttpHeaders }>({
      schema,
      includeStacktraceInErrorResponses: false,
      plugins: [ApolloServerPluginDrainHttpServer({ httpServer })],
    })
    await apollo.start()
    closeWs = async () => {
      for (const c of wss.clients) c.terminate()
      await cleanup.dispose()
    }
    await new Promise<void>((r) => httpServer.listen(port, '127.0.0.1', r))
    port = (httpServer.address() as AddressInfo).port
  }

  async function handle(req: IncomingMessage, res: import('node:http').ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    let body: unknown
    // as body-parser's json() in Apollo's integrations: only JSON bodies are parsed; a body that
    // does not parse is a 400 before Apollo Server sees it
    if (/^application\/(.+\+)?json/i.test(req.headers['content-type'] ?? '') && text.length > 0) {
      try {
        body = JSON.parse(text)
      } catch (e) {
        res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' })
        res.end(`<pre>SyntaxError: ${(e as Error).message}</pre>`)
        return
      }
    }
    requests.push({ method: req.method!, url: req.url!, headers: req.headers, body })
    const headers = new HeaderMap()
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v)
    const result = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: { method: req.method!.toUpperCase(), headers, search: new URL(req.url!, 'http://x').search, body },
      context: async () => ({ headers: req.headers }),
    })
    for (const [k, v] of result.headers) res.setHeader(k, v)
    res.statusCode = result.status ?? 200
    if (result.body.kind === 'complete') return void res.end(result.body.string)
    for await (const chunk of result.body.asyncIterator) res.write(chunk)
    res.end()
  }

  await start()
  return {
    get url() {
      return `http://127.0.0.1:${port}`
    },
    get wsUrl() {
      return `ws://127.0.0.1:${port}/graphql`
    },
    get port() {
      return port
    },
    requests,
    books,
    liveSubscriptions: () => live,
    publish: (b) => {
      for (const l of listeners) l({ bookRenamed: { ...b, author: { id: `a${b.id}`, name: authors[b.id] ?? '?' } } })
    },
    async stop() {
      await closeWs?.()
      httpServer.closeAllConnections()
      await apollo.stop()
    },
    start,
  }
}
