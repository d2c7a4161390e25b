// Apollo Client's own BatchHttpLink under createPersistedQueryLink, through the gateway to a
// graphql-yoga backend with batching on and no APQ support: the batch end-to-end tests sent the
// arrays this link sends, not the link itself. Round 1: hash-only operations, answered per
// operation with PERSISTED_QUERY_NOT_FOUND by the gateway; the link resends them with their
// documents (registered); a second client's hash-only batch is resolved by the gateway, so the
// backend — which knows nothing of APQ — runs it.
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ApolloClient, InMemoryCache, gql } from '@apollo/client'
import { BatchHttpLink } from '@apollo/client/link/batch-http'
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { createSchema, createYoga } from 'graphql-yoga'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

describe('Apollo BatchHttpLink + createPersistedQueryLink through the gateway', () => {
  let server: Server
  let proxy: TestProxy
  const backendBatches: unknown[][] = []
  const wire: { items: Record<string, unknown>[]; codes: (string | null)[] }[] = []

  beforeAll(async () => {
    const yoga = createYoga({
      batching: true,
      maskedErrors: false,
      schema: createSchema({ typeDefs: 'type Query { hello(name: String!): String! }', resolvers: { Query: { hello: (_: unknown, a: { name: string }) => `hello ${a.name}` } } }),
    })
    server = createServer((req, res) => {
      // Record what the backend receives (a batch is a JSON array), then let yoga answer.
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as unknown
        if (Array.isArray(body)) backendBatches.push(body)
        const replay = new Request(`http://127.0.0.1${req.url}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
        void Promise.resolve(yoga.fetch(replay)).then(async (r) => {
          res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' })
          res.end(Buffer.from(await r.arrayBuffer()))
        })
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream, type: 'graphql', batching: { enabled: true }, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await new Promise((r) => server?.close(r))
  })

  const client = () => {
    const recording: typeof fetch = async (input, init) => {
      const res = await fetch(input, init)
      const items = JSON.parse(String(init!.body)) as Record<string, unknown>[]
      const json = (await res.clone().json()) as { errors?: { extensions?: { code?: string } }[] }[]
      wire.push({ items, codes: json.map((r) => r.errors?.[0]?.extensions?.code ?? null) })
      return res
    }
    const link = createPersistedQueryLink({ sha256 }).concat(new BatchHttpLink({ uri: `${proxy.url}/graphql`, fetch: recording, batchMax: 10, batchInterval: 20 }))
    return new ApolloClient({ link, cache: new InMemoryCache() })
  }
  const A = gql`query A { hello(name: "a") }`
  const B = gql`query B { hello(name: "b") }`

  it('not found per operation, resent with documents, then a hash-only batch runs on a backend without APQ', async () => {
    const c1 = client()
    const [a, b] = await Promise.all([c1.query({ query: A }), c1.query({ query: B })])
    expect([a.data, b.data]).toEqual([{ hello: 'hello a' }, { hello: 'hello b' }])
    // The link's first batch: both hash-only, each answered PERSISTED_QUERY_NOT_FOUND by the gateway.
    expect(wire[0]!.items).toHaveLength(2)
    expect(wire[0]!.items.every((i) => !('query' in i))).toBe(true)
    expect(wire[0]!.codes).toEqual(['PERSISTED_QUERY_NOT_FOUND', 'PERSISTED_QUERY_NOT_FOUND'])
    // Then the documents were sent (one batch or two, as the link's timer falls) and answered.
    const resent = wire.slice(1).flatMap((w) => w.items)
    expect(resent.map((i) => 'query' in i)).toEqual([true, true])
    expect(wire.slice(1).flatMap((w) => w.codes)).toEqual([null, null])

    // A second client (fresh cache): hash-only, one batch, resolved by the gateway.
    const before = backendBatches.length
    wire.length = 0
    const c2 = client()
    const [a2, b2] = await Promise.all([c2.query({ query: A }), c2.query({ query: B })])
    expect([a2.data, b2.data]).toEqual([{ hello: 'hello a' }, { hello: 'hello b' }])
    expect(wire).toHaveLength(1)
    expect(wire[0]!.items.every((i) => !('query' in i))).toBe(true)
    expect(wire[0]!.codes).toEqual([null, null])
    const got = backendBatches.slice(before).flat() as { query?: string; extensions?: Record<string, unknown> }[]
    expect(got).toHaveLength(2)
    for (const op of got) {
      expect(op.query).toMatch(/hello\(name: "[ab]"\)/)
      expect(op.extensions?.persistedQuery).toBeUndefined() // the hash is the gateway's business; the backend gets documents
    }
  })
})
