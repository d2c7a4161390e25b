// Persisted filter sweep 31d: a registration whose text is a manifest document but for formatting
// and definition order (matched since sweep 30h) was admitted as its manifest id but never kept
// under the client's hash. Every later hash-only request of Apollo's persisted-queries link was
// answered PersistedQueryNotFound and resent with its text (two round trips per operation, for
// good, and a POST in place of the GET of useGETForHashedQueries), under every safelist mode;
// in a batch the same. Now the client's text is kept, and a hit runs, is priced and is safelisted
// as its id. Real Apollo Client, real proxy, real graphql-yoga backends.
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client'
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { print } from 'graphql'
import { createSchema, createYoga } from 'graphql-yoga'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

// As a manifest is written by hand: one line, fragments sorted by name.
const MANIFEST_DOC =
  'query EntityCard($id: ID!) { entity(id: $id) { ...Names ...Ids __typename } echo { extensions __typename } } fragment Ids on Entity { id __typename } fragment Names on Entity { name __typename }'

const IDS = gql`
  fragment Ids on Entity {
    id
  }
`
const NAMES = gql`
  fragment Names on Entity {
    name
  }
`
// Apollo Client prints it with its fragments in the order they were composed.
const ENTITY_CARD = gql`
  query EntityCard($id: ID!) {
    entity(id: $id) {
      ...Names
      ...Ids
    }
    echo {
      extensions
    }
  }
  ${NAMES}
  ${IDS}
`

interface Seen {
  method: string
  hasQuery: boolean
  code: string | null
}

describe('APQ with a manifest document in the client’s own text', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  const seen: Seen[] = []

  function client(tenant: string) {
    const recording: typeof fetch = async (input, init) => {
      const res = await fetch(input, init)
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
      const hasQuery = init?.body ? 'query' in (JSON.parse(String(init.body)) as object) : url.searchParams.has('query')
      const json = (await res.clone().json()) as { errors?: { extensions?: { code?: string } }[] }
      seen.push({ method: init?.method ?? 'GET', hasQuery, code: json.errors?.[0]?.extensions?.code ?? null })
      return res
    }
    const http = new HttpLink({ uri: `${proxy.url}/graphql`, fetch: recording, headers: { 'x-tenant-id': tenant } })
    return new ApolloClient({ link: createPersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(http), cache: new InMemoryCache() })
  }
  const byId = async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_persisted_operation_requests_total', 'persisted_id="entityCard"')

  beforeAll(async () => {
    backend = await startDemoBackend({ entities: 3 })
    proxy = await startTestProxy({
      persistedDocuments: { operations: { entityCard: { document: MANIFEST_DOC, costUnits: 4 } } },
      tenants: { strict: {}, open: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted', safelist: { mode: 'off', tenants: { strict: 'enforce' } } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  /** One query through a fresh client (a fresh Apollo cache); what went over the wire in `seen`. */
  async function card(tenant: string, id: string) {
    seen.length = 0
    const before = await byId()
    const r = await client(tenant).query({ query: ENTITY_CARD, variables: { id }, fetchPolicy: 'network-only' })
    const data = r.data as { entity: unknown; echo: { extensions: string } }
    expect(data.entity).toEqual({ __typename: 'Entity', id, name: `Entity ${id}` })
    // Run as its id: the backend got the id's hints (its costUnits), and the id is counted.
    expect(JSON.parse(data.echo.extensions)).toMatchObject({ costHints: { id: 'entityCard', cost: 4, costSource: 'hint' } })
    await expect.poll(byId, { timeout: 3000 }).toBe(before + 1)
  }

  it('enforce: once registered, a hash-only GET is answered at once, as its manifest id', async () => {
    // The very first time: the hash is unknown, the link resends it with its text (a POST).
    await card('strict', '1')
    expect(seen).toEqual([
      { method: 'GET', hasQuery: false, code: 'PERSISTED_QUERY_NOT_FOUND' },
      { method: 'POST', hasQuery: true, code: null },
    ])
    // Another client sends the hash only: one GET, no retry.
    await card('strict', '2')
    expect(seen).toEqual([{ method: 'GET', hasQuery: false, code: null }])
  })

  it('safelist off: the same hash-only GET is answered at once', async () => {
    await card('open', '3')
    expect(seen).toEqual([{ method: 'GET', hasQuery: false, code: null }])
  })

  it('a text registered by a freeform request is still refused under enforce', async () => {
    const query = '{ hello }'
    const pq = { persistedQuery: { version: 1, sha256Hash: sha256(query) } }
    const post = (tenant: string, body: unknown) => request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify(body) })
    expect((await post('open', { query, extensions: pq })).statusCode).toBe(200)
    const refused = await post('strict', { extensions: pq })
    expect(refused.statusCode).toBe(400)
    expect(((await refused.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('PERSISTED_QUERY_NOT_ALLOWED')
  })
})

describe('APQ with a manifest document in the client’s own text, in a batch', () => {
  let server: Server
  let proxy: TestProxy
  // The text Apollo Client sends (what the link hashes): fragments as composed, __typename added.
  const clientText = print(gql`
    query Greet {
      hello(name: "b")
      ...Extra
    }
    fragment Extra on Query {
      other: hello(name: "a")
    }
  `)
  const MANIFEST = 'fragment Extra on Query { other: hello(name: "a") } query Greet { hello(name: "b") ...Extra }'

  beforeAll(async () => {
    const yoga = createYoga({ batching: true, schema: createSchema({ typeDefs: 'type Query { hello(name: String!): String! }', resolvers: { Query: { hello: (_: unknown, a: { name: string }) => `hello ${a.name}` } } }) })
    server = createServer(yoga)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    proxy = await startTestProxy({
      persistedDocuments: { operations: { greet: { document: MANIFEST } } },
      tenants: { acme: {} },
      routes: [
        {
          name: 'graphql',
          upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          type: 'graphql',
          batching: { enabled: true },
          filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', safelist: { mode: 'enforce' } }] as never,
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    server?.closeAllConnections()
    await new Promise((r) => server?.close(r))
  })

  it('a batch registration keeps the text, and a later hash-only batch runs under enforce', async () => {
    const pq = { persistedQuery: { version: 1, sha256Hash: sha256(clientText) } }
    const batch = async (items: unknown[]) => {
      const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(items) })
      return (await r.body.json()) as { data?: unknown; errors?: { extensions?: { code?: string } }[] }[]
    }
    const registered = await batch([{ query: clientText, extensions: pq }])
    expect(registered[0]!.data).toEqual({ hello: 'hello b', other: 'hello a' })
    const hashOnly = await batch([{ extensions: pq }, { extensions: pq }])
    expect(hashOnly.map((r) => r.errors?.[0]?.extensions?.code ?? null)).toEqual([null, null])
    expect(hashOnly.map((r) => r.data)).toEqual([
      { hello: 'hello b', other: 'hello a' },
      { hello: 'hello b', other: 'hello a' },
    ])
  })
})
