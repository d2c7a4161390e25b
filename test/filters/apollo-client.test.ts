// A real Apollo Client (its HttpLink over fetch, with createPersistedQueryLink) through the
// gateway to a backend that knows nothing of APQ: the link's hash-only attempt, the
// PersistedQueryNotFound retry with the document, then hash-only hits; queries cached by the
// gateway; a mutation's write visible to the next query (read-your-writes).
import { createHash } from 'node:crypto'
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client'
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

describe('Apollo Client with createPersistedQueryLink', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  const seen: { body: Record<string, unknown>; status: number; cache: string | null; errorCode?: string }[] = []

  function client(useGETForHashedQueries: boolean) {
    // fetch that records what went over the wire (and what came back), then passes it on
    const recording: typeof fetch = async (input, init) => {
      const res = await fetch(input, init)
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
      const body = init?.body ? (JSON.parse(String(init.body)) as Record<string, unknown>) : Object.fromEntries([...url.searchParams].map(([k, v]) => [k, k === 'query' || k === 'operationName' ? v : JSON.parse(v)]))
      const json = (await res.clone().json()) as { errors?: { extensions?: { code?: string } }[] }
      seen.push({ body, status: res.status, cache: res.headers.get('x-cache'), errorCode: json.errors?.[0]?.extensions?.code })
      return res
    }
    const http = new HttpLink({ uri: `${proxy.url}/graphql`, fetch: recording, headers: { 'x-tenant-id': 'acme' } })
    return new ApolloClient({ link: createPersistedQueryLink({ sha256, useGETForHashedQueries }).concat(http), cache: new InMemoryCache() })
  }

  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'persisted' }, { name: 'cache' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('registers on PersistedQueryNotFound, then sends hashes only; the gateway caches the result', async () => {
    seen.length = 0
    const GET_ENTITY = gql`
      query GetEntity($id: ID!) {
        entity(id: $id) {
          id
          name
        }
      }
    `
    const c1 = client(false)
    const r1 = await c1.query({ query: GET_ENTITY, variables: { id: '4' }, fetchPolicy: 'network-only' })
    expect(r1.data).toEqual({ entity: { __typename: 'Entity', id: '4', name: 'Entity 4' } })
    // 1st: hash only → PERSISTED_QUERY_NOT_FOUND (HTTP 200); 2nd: hash + document
    expect(seen.map((s) => [s.status, s.errorCode ?? null, 'query' in s.body])).toEqual([
      [200, 'PERSISTED_QUERY_NOT_FOUND', false],
      [200, null, true],
    ])
    expect(seen[1]!.cache).toBe('MISS')
    // a second client (fresh Apollo cache) sends the hash only and is answered from the gateway's cache
    seen.length = 0
    const before = backend.stats.byField.get('entity') ?? 0
    const c2 = client(false)
    const r2 = await c2.query({ query: GET_ENTITY, variables: { id: '4' }, fetchPolicy: 'network-only' })
    expect(r2.data).toEqual(r1.data)
    expect(seen).toHaveLength(1)
    expect('query' in seen[0]!.body).toBe(false)
    expect(seen[0]!.cache).toBe('HIT')
    expect(backend.stats.byField.get('entity')).toBe(before)
  })

  it('works with GET for hashed queries, and a mutation is visible to the next query', async () => {
    seen.length = 0
    const c = client(true)
    const Q = gql`
      query Named($id: ID!) {
        entity(id: $id) {
          id
          name
        }
      }
    `
    const first = await c.query({ query: Q, variables: { id: '9' }, fetchPolicy: 'network-only' })
    expect(first.data).toEqual({ entity: { __typename: 'Entity', id: '9', name: 'Entity 9' } })
    expect((await c.query({ query: Q, variables: { id: '9' }, fetchPolicy: 'network-only' })).data).toEqual(first.data)
    expect(seen.at(-1)!.cache).toBe('HIT')
    const m = await c.mutate({
      mutation: gql`
        mutation Rename($id: ID!, $name: String!) {
          updateEntity(id: $id, name: $name) {
            id
            name
          }
        }
      `,
      variables: { id: '9', name: 'Nine' },
    })
    expect(m.data).toEqual({ updateEntity: { __typename: 'Entity', id: '9', name: 'Nine' } })
    const after = await c.query({ query: Q, variables: { id: '9' }, fetchPolicy: 'network-only' })
    expect(after.data).toEqual({ entity: { __typename: 'Entity', id: '9', name: 'Nine' } })
    expect(seen.at(-1)!.cache).toBe('MISS')
  })
})
