// Bench backend for the cache scenario: graphql-yoga whose resolvers each take 20 ms (a
// database round trip), with the five operations the scenario persists. Prints "listening <port>".
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'

const DELAY_MS = Number(process.env.RESOLVER_MS ?? 20)
const wait = () => new Promise((r) => setTimeout(r, DELAY_MS))
const product = (id: string) => ({ id, name: `Product ${id}`, price: (Number(id) % 97) + 0.99, category: `c${Number(id) % 10}` })

const yoga = createYoga({
  schema: createSchema({
    typeDefs: /* GraphQL */ `
      type Product { id: ID! name: String! price: Float! category: String! }
      type Review { id: ID! stars: Int! text: String! }
      type User { id: ID! name: String! }
      type Query {
        product(id: ID!): Product
        category(name: String!): [Product!]!
        reviews(productId: ID!): [Review!]!
        user(id: ID!): User
        search(term: String!): [Product!]!
      }
    `,
    resolvers: {
      Query: {
        product: async (_: unknown, a: { id: string }) => (await wait(), product(a.id)),
        category: async (_: unknown, a: { name: string }) => (await wait(), [1, 2, 3, 4, 5].map((i) => product(`${a.name.length * 10 + i}`))),
        reviews: async (_: unknown, a: { productId: string }) => (await wait(), [1, 2, 3].map((i) => ({ id: `${a.productId}-${i}`, stars: (i % 5) + 1, text: `review ${i} of ${a.productId}` }))),
        user: async (_: unknown, a: { id: string }) => (await wait(), { id: a.id, name: `User ${a.id}` }),
        search: async (_: unknown, a: { term: string }) => (await wait(), [1, 2].map((i) => product(`${a.term.length}${i}`))),
      },
    },
  }),
  graphqlEndpoint: '/graphql',
  logging: false,
  landingPage: false,
  graphiql: false,
})

const server = createServer(yoga)
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
