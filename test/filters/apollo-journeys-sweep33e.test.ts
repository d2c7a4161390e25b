// User journeys with Apollo Client 4 (HttpLink, PersistedQueryLink, BatchHttpLink, GraphQLWsLink
// over graphql-ws) through a full chain — request-id, tenant, persisted, quota, cache, dlp,
// subscriptions — in front of graphql-yoga backends (the demo one, and one with batching on).
// Defects these journeys found: a mutation returning its entity without an id invalidated
// nothing, so the refetch Apollo Client makes after it (refetchQueries) got the old cached
// answer; a batch of queries (BatchHttpLink) dropped the route's whole cache, for every client,
// each time; DLP's 403 was typed application/json whatever the client's Accept, which Apollo
// Client reads as a transport failure (ServerError) instead of the GraphQL error DLP_BLOCKED; and a
// refused batch was one error object, which BatchHttpLink turned into "server returned results
// with length 1, expected length of 2" for each operation, the code lost.
import { createHash } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from '@apollo/client'
import { BatchHttpLink } from '@apollo/client/link/batch-http'
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { GraphQLWsLink } from '@apollo/client/link/subscriptions'
import { createClient } from 'graphql-ws'
import { createSchema, createYoga } from 'graphql-yoga'
import { tap } from 'rxjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { sampleEntity } from '../../proxy/demo-backend.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

interface Exchange {
  method: string
  body: unknown
  status: number
  headers: Record<string, string>
  json: unknown
}

let demo: DemoBackend
let itemsServer: Server
const items = new Map([
  ['1', 'one'],
  ['2', 'two'],
  ['3', 'three'],
])
const itemReads = { count: 0 }
let proxy: TestProxy
const wire: Exchange[] = []

/** fetch that records each exchange as Apollo Client made it. */
const recording: typeof fetch = async (input, init) => {
  const res = await fetch(input, init)
  const text = await res.clone().text()
  wire.push({ method: init?.method ?? 'GET', body: init?.body ? JSON.parse(String(init.body)) : null, status: res.status, headers: Object.fromEntries(res.headers), json: JSON.parse(text) })
  return res
}

beforeAll(async () => {
  demo = await startDemoBackend()
  const yoga = createYoga({
    batching: true,
    maskedErrors: false,
    logging: false,
    graphqlEndpoint: '/items/graphql',
    schema: createSchema({
      typeDefs: 'type Item { id: ID! name: String! ssn: String } type Query { item(id: ID!): Item boom: String } type Mutation { renameItem(id: ID!, name: String!): Item! }',
      resolvers: {
        Query: {
          item: (_: unknown, a: { id: string }) => (itemReads.count++, items.has(a.id) ? { id: a.id, name: items.get(a.id), ssn: sampleEntity(Number(a.id)).ssn } : null),
          boom: () => {
            throw new Error('boom')
          },
        },
        Mutation: { renameItem: (_: unknown, a: { id: string; name: string }) => (items.set(a.id, a.name), { id: a.id, name: a.name }) },
      },
    }),
  })
  itemsServer = createServer((req, res) => void yoga.handle(req, res))
  await new Promise<void>((r) => itemsServer.listen(0, '127.0.0.1', r))
  const chain = [
    { name: 'request-id' },
    { name: 'tenant' },
    { name: 'persisted' },
    { name: 'quota', kind: 'graphql' },
    { name: 'cache', ttlSeconds: 30, invalidation: { mutationTags: { updateEntity: ['Query.entities'] } } },
    { name: 'dlp', preset: 'tok', exports: { graphql: { responsePaths: ['entities'] } } },
  ]
  proxy = await startTestProxy({
    mode: 'ingress',
    tenants: { acme: { tier: 'gold' }, globex: { tier: 'bronze' }, initech: {} },
    quotas: { tenants: { globex: { graphql: { rate: 0.05, burst: 2 } }, initech: { graphql: { rate: 0.05, burst: 2 } } } },
    dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-33e-')), 'keyring.json') }, presets: { tok: { email: 'tokenize', ssn_us: 'block' } }, policy: { enabled: false } },
    routes: [
      { name: 'items', match: { pathPrefix: '/items/' }, upstream: `http://127.0.0.1:${(itemsServer.address() as AddressInfo).port}`, type: 'graphql', batching: { enabled: true }, filters: chain },
      { name: 'graphql', match: { pathPrefix: '/' }, upstream: demo.url, type: 'graphql', websocket: { mode: 'terminate' }, filters: [...chain, { name: 'subscriptions' }] },
    ],
  } as never)
})
afterAll(async () => {
  await proxy?.close()
  await demo?.close()
  itemsServer?.closeAllConnections()
  await new Promise((r) => itemsServer?.close(r))
})

function client(opts: { tenant?: string; path?: string; link?: 'http' | 'apq' | 'apq-get' | 'batch'; get?: boolean } = {}): ApolloClient {
  const uri = `${proxy.url}${opts.path ?? '/graphql'}`
  const headers = { 'x-tenant-id': opts.tenant ?? 'acme' }
  const http = opts.link === 'batch' ? new BatchHttpLink({ uri, fetch: recording, headers, batchInterval: 20, batchMax: 10 }) : new HttpLink({ uri, fetch: recording, headers, useGETForQueries: opts.get })
  const link = opts.link === 'apq' || opts.link === 'apq-get' ? new PersistedQueryLink({ sha256, useGETForHashedQueries: opts.link === 'apq-get' }).concat(http) : http
  return new ApolloClient({ link, cache: new InMemoryCache(), clientAwareness: { name: 'web', version: '1.2.3' } })
}

const codeOf = (x: Exchange) => (x.json as { errors?: { extensions?: { code?: string } }[] }).errors?.[0]?.extensions?.code ?? null

describe('Apollo Client 4 journeys through the full chain', () => {
  it('variables, fragments, @include/@skip, aliases: the second client is answered from the cache and normalizes it alike', async () => {
    const Q = gql`
      fragment Core on Entity {
        id
        name
      }
      query Page($id: ID!, $withEmail: Boolean!, $skipName: Boolean!) {
        main: entity(id: $id) {
          ...Core
          email @include(if: $withEmail)
        }
        other: entity(id: "2") {
          id
          name @skip(if: $skipName)
        }
        entities(first: 2) {
          id
          email
        }
      }
    `
    const variables = { id: '1', withEmail: false, skipName: true }
    wire.length = 0
    const a = client()
    const r1 = await a.query({ query: Q, variables })
    expect(r1.data).toMatchObject({ main: { __typename: 'Entity', id: '1', name: 'Entity 1' }, other: { __typename: 'Entity', id: '2' } })
    expect(r1.data).not.toHaveProperty('main.email')
    expect(r1.data).not.toHaveProperty('other.name')
    // the export path is tokenized (DLP), never the raw address
    const emails = (r1.data as { entities: { email: string }[] }).entities.map((e) => e.email)
    expect(emails.every((e) => e.startsWith('tok_email_'))).toBe(true)
    const b = client()
    const r2 = await b.query({ query: Q, variables })
    expect(r2.data).toEqual(r1.data)
    expect(b.cache.extract()).toEqual(a.cache.extract())
    expect(wire.map((w) => w.headers['x-cache'])).toEqual(['MISS', 'HIT'])
    const hit = wire[1]!
    expect(Number(hit.headers.age)).toBeGreaterThanOrEqual(0)
    expect(Number(hit.headers.age)).toBeLessThan(5)
    expect(hit.headers.date).toBeDefined()
    expect(hit.headers['content-type']).toMatch(/^application\/graphql-response\+json/)
    // other variables are another entry
    await b.query({ query: Q, variables: { ...variables, withEmail: true }, fetchPolicy: 'network-only' })
    expect(wire.at(-1)!.headers['x-cache']).toBe('MISS')
    // `main` is no export path: its e-mail comes as it is (Apollo Client's normalized Entity:1 then
    // holds whichever of the two spellings it wrote last: DLP by path, not by type)
    expect((wire.at(-1)!.json as { data: { main: { email: string } } }).data.main.email).toBe('user1@example.com')
  })

  it('a mutation that returns its entity without an id, then refetchQueries: the refetch is fresh, not the cached answer', async () => {
    const ONE = gql`
      query One($id: ID!) {
        entity(id: $id) {
          id
          name
        }
      }
    `
    const warm = client()
    await warm.query({ query: ONE, variables: { id: '4' } })
    const c = client()
    const watched = c.watchQuery({ query: ONE, variables: { id: '4' } })
    const sub = watched.subscribe(() => {})
    await waitUntil(() => watched.getCurrentResult().data !== undefined)
    expect(wire.at(-1)!.headers['x-cache']).toBe('HIT')
    const m = await c.mutate({
      mutation: gql`
        mutation Rename($id: ID!, $name: String!) {
          updateEntity(id: $id, name: $name) {
            name
          }
        }
      `,
      variables: { id: '4', name: 'Four' },
      refetchQueries: ['One'],
      awaitRefetchQueries: true,
    })
    expect(m.data).toEqual({ updateEntity: { __typename: 'Entity', name: 'Four' } })
    expect(wire.at(-1)!.body).toMatchObject({ operationName: 'One' })
    expect(wire.at(-1)!.headers['x-cache']).toBe('MISS')
    expect(watched.getCurrentResult().data).toEqual({ entity: { __typename: 'Entity', id: '4', name: 'Four' } })
    sub.unsubscribe()
    // a mutation with the id: Apollo Client updates its own cache, and the gateway's entry is gone
    await c.mutate({ mutation: gql`mutation { updateEntity(id: "4", name: "Vier") { id name } }` })
    expect((await warm.query({ query: ONE, variables: { id: '4' }, fetchPolicy: 'network-only' })).data).toEqual({ entity: { __typename: 'Entity', id: '4', name: 'Vier' } })
    expect(wire.at(-1)!.headers['x-cache']).toBe('MISS')
  })

  it.each(['apq', 'apq-get'] as const)('%s: PersistedQueryNotFound, the retry with the document, then hash-only hits', async (link) => {
    const Q = link === 'apq' ? gql`query ApqPost($id: ID!) { entity(id: $id) { id name } }` : gql`query ApqGet($id: ID!) { entity(id: $id) { id name } }`
    wire.length = 0
    for (let i = 0; i < 3; i++) {
      const r = await client({ link }).query({ query: Q, variables: { id: '5' } })
      expect(r.data).toEqual({ entity: { __typename: 'Entity', id: '5', name: 'Entity 5' } })
    }
    const hashed = link === 'apq' ? 'POST' : 'GET'
    expect(wire.map((w) => [w.method, w.status, codeOf(w), w.headers['x-cache'] ?? null])).toEqual([
      [hashed, 200, 'PERSISTED_QUERY_NOT_FOUND', null],
      ['POST', 200, null, 'MISS'],
      [hashed, 200, null, 'HIT'],
      [hashed, 200, null, 'HIT'],
    ])
    expect(wire[0]!.headers['cache-control']).toBe('private, no-cache, must-revalidate')
    expect(wire.every((w) => w.headers['x-request-id'] !== undefined)).toBe(true)
  })

  it('errors: a field error, a partial result, a quota refusal and an unknown tenant, as Apollo Client surfaces them', async () => {
    const c = client()
    const failed = await c.query({ query: gql`query Boom { boom }` }).catch((e: unknown) => e)
    expect(CombinedGraphQLErrors.is(failed)).toBe(true)
    expect((failed as CombinedGraphQLErrors).message).toBe('boom: this field always fails')
    const partial = await c.query({ query: gql`query Partial { hello boom }`, errorPolicy: 'all' })
    expect(partial.data).toEqual({ hello: 'Hello, world!', boom: null })
    expect(CombinedGraphQLErrors.is(partial.error)).toBe(true)
    expect(wire.at(-1)!.headers['x-cache']).toBe('MISS') // never stored (errors)

    const g = client({ tenant: 'globex' })
    const outcomes: unknown[] = []
    for (let i = 0; i < 3; i++) outcomes.push(await g.query({ query: gql`query Hi($n: String) { hello(name: $n) }`, variables: { n: `g${i}` } }).catch((e: unknown) => e))
    const refused = outcomes[2] as CombinedGraphQLErrors
    expect(CombinedGraphQLErrors.is(refused)).toBe(true)
    expect(refused.errors[0]!.extensions).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) })
    expect(wire.at(-1)!.status).toBe(429)
    expect(Number(wire.at(-1)!.headers['retry-after'])).toBe(refused.errors[0]!.extensions!.retryAfterSeconds)

    // DLP refuses an export holding SSNs: the same GraphQL error shape as every other refusal
    const blocked = await c.query({ query: gql`query Ssns { entities(first: 2) { id ssn } }` }).catch((e: unknown) => e)
    expect(CombinedGraphQLErrors.is(blocked)).toBe(true)
    expect((blocked as CombinedGraphQLErrors).errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', type: 'ssn_us' })
    expect(wire.at(-1)!.status).toBe(403)
    expect(wire.at(-1)!.headers['content-type']).toMatch(/^application\/graphql-response\+json/)

    const unknown = await client({ tenant: 'nobody' }).query({ query: gql`query Hello { hello }` }).catch((e: unknown) => e)
    expect(CombinedGraphQLErrors.is(unknown)).toBe(true)
    expect((unknown as CombinedGraphQLErrors).errors[0]!.extensions).toEqual({ code: 'UNKNOWN_TENANT' })
    expect(wire.at(-1)!.status).toBe(403)
  })

  it('BatchHttpLink: a batch of cached and uncached queries leaves the cache in place; a batch with a mutation drops it', async () => {
    const path = '/items/graphql'
    const C = gql`query Cached { item(id: "1") { id name } }`
    const single = client({ path })
    await single.query({ query: C })
    await single.query({ query: C, fetchPolicy: 'network-only' })
    expect(wire.at(-1)!.headers['x-cache']).toBe('HIT')

    const b = client({ path, link: 'batch' })
    const [cached, fresh, partial] = await Promise.all([
      b.query({ query: C }),
      b.query({ query: gql`query Fresh { item(id: "2") { id name } }` }),
      b.query({ query: gql`query Partial { item(id: "3") { id name } boom }`, errorPolicy: 'all' }),
    ])
    expect(Array.isArray(wire.at(-1)!.body)).toBe(true)
    expect(cached.data).toEqual({ item: { __typename: 'Item', id: '1', name: 'one' } })
    expect(fresh.data).toEqual({ item: { __typename: 'Item', id: '2', name: 'two' } })
    expect(partial.data).toEqual({ item: { __typename: 'Item', id: '3', name: 'three' }, boom: null })
    expect(CombinedGraphQLErrors.is(partial.error)).toBe(true)
    // nothing in the batch could write: the other client's entry is still there
    const reads = itemReads.count
    await single.query({ query: C, fetchPolicy: 'network-only' })
    expect(wire.at(-1)!.headers['x-cache']).toBe('HIT')
    expect(itemReads.count).toBe(reads)

    const [, renamed] = await Promise.all([
      b.query({ query: gql`query Other { item(id: "2") { id } }`, fetchPolicy: 'network-only' }),
      b.mutate({ mutation: gql`mutation { renameItem(id: "1", name: "uno") { id name } }` }),
    ])
    expect(renamed.data).toEqual({ renameItem: { __typename: 'Item', id: '1', name: 'uno' } })
    expect((await single.query({ query: C, fetchPolicy: 'network-only' })).data).toEqual({ item: { __typename: 'Item', id: '1', name: 'uno' } })
    expect(wire.at(-1)!.headers['x-cache']).toBe('MISS')
  })

  it('BatchHttpLink: a refused batch (quota, unknown tenant, DLP) fails each operation with the GraphQL error and its code', async () => {
    const path = '/items/graphql'
    const ops = (c: ApolloClient) =>
      Promise.all([c.query({ query: gql`query B1 { item(id: "1") { id } }` }).catch((e: unknown) => e), c.query({ query: gql`query B2 { item(id: "2") { id } }` }).catch((e: unknown) => e)])
    const codes = (outcomes: unknown[]) => outcomes.map((e) => (CombinedGraphQLErrors.is(e) ? e.errors[0]!.extensions?.code : String(e)))

    const unknown = await ops(client({ path, tenant: 'nobody', link: 'batch' }))
    expect(codes(unknown)).toEqual(['UNKNOWN_TENANT', 'UNKNOWN_TENANT'])
    expect(wire.at(-1)!.status).toBe(403)

    // initech's burst is 2 and its rate tiny: the first batch (cost 2) passes, the next is refused
    const passed = await ops(client({ path, tenant: 'initech', link: 'batch' }))
    expect(passed.map((r) => (r as { data?: unknown }).data)).toEqual([{ item: { __typename: 'Item', id: '1' } }, { item: { __typename: 'Item', id: '2' } }])
    const refused = await ops(client({ path, tenant: 'initech', link: 'batch' }))
    expect(codes(refused)).toEqual(['RATE_LIMITED', 'RATE_LIMITED'])
    expect(wire.at(-1)!.status).toBe(429)
    expect(Number(wire.at(-1)!.headers['retry-after'])).toBeGreaterThan(0)
    expect((refused[0] as CombinedGraphQLErrors).errors[0]!.extensions).toMatchObject({ retryAfterSeconds: Number(wire.at(-1)!.headers['retry-after']) })

    // DLP reads a batch whole: an SSN anywhere blocks it (403 after the upstream answered)
    const b = client({ path, link: 'batch' })
    const blocked = await Promise.all([b.query({ query: gql`query S1 { item(id: "1") { id ssn } }` }).catch((e: unknown) => e), b.query({ query: gql`query S2 { item(id: "2") { id } }` }).catch((e: unknown) => e)])
    expect(codes(blocked)).toEqual(['DLP_BLOCKED', 'DLP_BLOCKED'])
    expect(wire.at(-1)!.status).toBe(403)
  })

  it('subscriptions through GraphQLWsLink: a dropped socket reconnects and resumes from its cursor, nothing lost or doubled', async () => {
    const sockets: WebSocket[] = []
    class TrackedWebSocket extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols)
        sockets.push(this)
      }
    }
    let reconnect: (() => void) | undefined
    const ws = createClient({
      url: `ws://127.0.0.1:${proxy.port}/graphql`,
      webSocketImpl: TrackedWebSocket,
      connectionParams: { 'x-tenant-id': 'acme' },
      retryAttempts: 3,
      retryWait: () => new Promise<void>((r) => (reconnect = r)),
    })
    // docs/subscriptions.md: keep the payload's extensions.cursor at the last event's, so the
    // client's re-subscribe after a reconnect resumes there
    const cursors = new ApolloLink((op, forward) => {
      const ext = op.extensions as Record<string, unknown>
      return forward(op).pipe(tap((r) => void ((r as { extensions?: { cursor?: string } }).extensions?.cursor && (ext.cursor = (r as { extensions: { cursor: string } }).extensions.cursor))))
    })
    const http = new HttpLink({ uri: `${proxy.url}/graphql`, headers: { 'x-tenant-id': 'acme' } })
    const c = new ApolloClient({ link: ApolloLink.split((op) => op.operationType === 'subscription', cursors.concat(new GraphQLWsLink(ws)), http), cache: new InMemoryCache() })
    const names: string[] = []
    const sub = c
      .subscribe({ query: gql`subscription Changed($id: ID) { entityChanged(id: $id) { id name } }`, variables: { id: '8' } })
      .subscribe({ next: (v) => names.push((v.data as { entityChanged: { name: string } }).entityChanged.name), error: (e: unknown) => names.push(`error: ${String(e)}`) })
    const rename = (name: string) => c.mutate({ mutation: gql`mutation R($name: String!) { updateEntity(id: "8", name: $name) { id name } }`, variables: { name } })
    try {
      await waitUntil(() => demo.liveSubscriptions() > 0, 5_000, 'upstream subscription')
      await rename('a')
      await waitUntil(() => names.length === 1, 5_000, 'first event')
      sockets[0]!.terminate()
      await waitUntil(() => reconnect !== undefined, 5_000, 'client noticed the drop')
      await rename('b') // while the client is away
      await rename('c')
      reconnect!()
      await waitUntil(() => names.length === 3, 5_000, 'missed events replayed')
      await rename('d')
      await waitUntil(() => names.length === 4, 5_000, 'live event after the resume')
      expect(names).toEqual(['a', 'b', 'c', 'd'])
      expect(sockets).toHaveLength(2)
    } finally {
      sub.unsubscribe()
      await ws.dispose()
    }
  })
})
