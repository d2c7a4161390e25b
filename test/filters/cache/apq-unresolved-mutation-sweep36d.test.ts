// An app on Apollo Client with PersistedQueryLink, behind igw, in front of an @apollo/server
// backend that handles APQ itself: the route runs `cache` without `persisted` (the docs'
// sidecar chain plus the cache). The second time a mutation runs, Apollo's link sends it as a
// hash only — no document for the gateway to read. The cache let it through as "not a query"
// without reading its result, so the entities it changed stayed cached: the next read of the
// book by any client without APQ (a server-side renderer, a script) was a HIT with the old title,
// where the backend itself answered the new one.
import { createHash } from 'node:crypto'
import { ApolloClient, HttpLink, InMemoryCache, gql, type ApolloLink } from '@apollo/client'
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApolloBackend, type ApolloBackend } from '../../helpers/apollo-server.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

let be: ApolloBackend
let proxy: TestProxy
const xcache: (string | null)[] = []

beforeAll(async () => {
  be = await startApolloBackend()
  proxy = await startTestProxy({
    mode: 'sidecar',
    upstreams: { app: { url: be.url, healthCheck: { enabled: false } } },
    tenants: { demo: { tier: 'gold' } },
    routes: [{ name: 'graphql', upstream: 'app', type: 'graphql', filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'demo' }, { name: 'cache', ttlSeconds: 30 }] }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await be?.stop()
})

/** The reader's view: x-cache of each of its requests. */
const recording: typeof fetch = async (input, init) => {
  const res = await fetch(input, init)
  xcache.push(res.headers.get('x-cache'))
  return res
}

function client(base: string, apq: boolean, useGETForHashedQueries = true): ApolloClient {
  const http = new HttpLink({ uri: `${base}/graphql`, fetch: apq ? fetch : recording })
  const link = apq ? (new PersistedQueryLink({ sha256, useGETForHashedQueries }).concat(http) as ApolloLink) : http
  return new ApolloClient({ link, cache: new InMemoryCache(), clientAwareness: { name: 'web', version: '1.0.0' } })
}

const BOOK = gql`
  query Book($id: ID!) {
    book(id: $id) {
      id
      title
    }
  }
`
const RENAME = gql`
  mutation Rename($id: ID!, $title: String!) {
    renameBook(id: $id, title: $title) {
      id
      title
    }
  }
`

/** Renames a book twice through `base` with APQ, reading it after each rename without APQ. */
async function journey(base: string, id: string): Promise<string[]> {
  const reader = client(base, false)
  const read = async () => ((await reader.query({ query: BOOK, variables: { id }, fetchPolicy: 'network-only' })).data as { book: { title: string } }).book.title
  const titles = [await read(), await read()]
  // the first rename: hash only, PersistedQueryNotFound, then the document (which registers it)
  await client(base, true).mutate({ mutation: RENAME, variables: { id, title: `${base}-1` } })
  titles.push(await read())
  // the second, from another page load: the backend knows the hash, so the hash alone runs it
  await client(base, true).mutate({ mutation: RENAME, variables: { id, title: `${base}-2` } })
  titles.push(await read())
  return titles
}

describe('a mutation sent as an APQ hash the gateway does not resolve', () => {
  it('invalidates what it returns, as the same mutation with its document does', async () => {
    xcache.length = 0
    const before = be.books.get('3')
    const viaIgw = await journey(proxy.url, '3')
    expect(viaIgw).toEqual([before, before, `${proxy.url}-1`, `${proxy.url}-2`])
    // each rename drops the reader's entry: its next read is a miss
    expect(xcache).toEqual(['MISS', 'HIT', 'MISS', 'MISS'])
    // what the backend answers directly, for the same steps
    const was = be.books.get('2')
    expect(await journey(be.url, '2')).toEqual([was, was, `${be.url}-1`, `${be.url}-2`])
  })

  // Sweep 36 (follow-up): the cache remembers the type of a hash whose registration (hash and
  // document, the hash checked) it saw, so Apollo's hashed queries by POST do not empty it.
  it('a hash-only POST of a query it saw registered drops nothing', async () => {
    const reader = client(proxy.url, false)
    await reader.query({ query: BOOK, variables: { id: '1' } })
    const app = client(proxy.url, true, false)
    for (let i = 0; i < 3; i++) await app.query({ query: BOOK, variables: { id: '1' }, fetchPolicy: 'network-only' })
    xcache.length = 0
    await reader.query({ query: BOOK, variables: { id: '1' }, fetchPolicy: 'network-only' })
    expect(xcache).toEqual(['HIT'])
  })

  it('a registration without __typename reaches the backend as hashed, its hash-only rerun still invalidates, and a lying registration teaches nothing', async () => {
    const reader = client(proxy.url, false)
    await reader.query({ query: BOOK, variables: { id: '2' } })
    const post = (body: unknown) => fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const mutation = 'mutation R($id: ID!, $title: String!) { renameBook(id: $id, title: $title) { id title } }'
    const pq = { persistedQuery: { version: 1, sha256Hash: sha256(mutation) } }
    // The registration: the document reaches the backend byte for byte (a __typename added by
    // the cache made it answer 400 "provided sha does not match query").
    const reg = await post({ query: mutation, variables: { id: '2', title: 'renamed-2' }, extensions: pq })
    expect(reg.status).toBe(200)
    await reg.arrayBuffer()
    await reader.query({ query: BOOK, variables: { id: '2' }, fetchPolicy: 'network-only' }) // refilled
    // A client names the mutation's hash with a query's document (the backend refuses it): the
    // cache must not learn "query" for that hash.
    await (await post({ query: '{ book(id: "2") { id title } }', extensions: pq })).arrayBuffer()
    // The mutation by hash alone: its result (no __typename) drops what it may have changed.
    const again = await post({ variables: { id: '2', title: 'renamed-2b' }, extensions: pq })
    expect(((await again.json()) as { data: { renameBook: { title: string } } }).data.renameBook.title).toBe('renamed-2b')
    const read = await reader.query({ query: BOOK, variables: { id: '2' }, fetchPolicy: 'network-only' })
    expect((read.data as { book: { title: string } }).book.title).toBe('renamed-2b')
  })

  it('an answer that ran nothing (PersistedQueryNotFound) drops nothing', async () => {
    const reader = client(proxy.url, false)
    await reader.query({ query: BOOK, variables: { id: '1' } })
    xcache.length = 0
    await reader.query({ query: BOOK, variables: { id: '1' }, fetchPolicy: 'network-only' })
    expect(xcache).toEqual(['HIT'])
    const unknownHash = { extensions: { persistedQuery: { version: 1, sha256Hash: sha256('mutation Never { renameBook(id: "1", title: "x") { id } }') } } }
    const r = await fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(unknownHash) })
    expect(((await r.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('PERSISTED_QUERY_NOT_FOUND')
    expect(r.headers.get('x-cache')).toBe('BYPASS')
    await reader.query({ query: BOOK, variables: { id: '1' }, fetchPolicy: 'network-only' })
    expect(xcache).toEqual(['HIT', 'HIT'])
  })
})
