// Persisted filter sweep 28p: APQ answers under GraphQL over HTTP. PersistedQueryNotFound /
// NotSupported are 200 for Apollo's contract, which is legal only as application/json (§7.1.2:
// in application/graphql-response+json a response without `data` MUST be 4xx/5xx). The proxy
// re-typed them to graphql-response+json for a client that prefers it (Apollo Client 4's default
// Accept), a 200 without data in that type; a client taking only graphql-response+json got the
// same. Now: 200 application/json to whoever takes application/json, 404 / 400 in
// graphql-response+json to a client that takes only that (as graphql-yoga's APQ plugin).
// Real igw, the demo backend (knows no APQ), undici and a real Apollo Client.
import { createHash } from 'node:crypto'
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client'
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')
const AC4_ACCEPT = 'application/graphql-response+json,application/json;q=0.9'
const STRICT = 'application/graphql-response+json'

describe('persisted filter sweep 28p: APQ errors and the negotiated media type', () => {
  let backend: DemoBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        { name: 'apq', match: { pathPrefix: '/apq' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted' }] as never },
        { name: 'noapq', match: { pathPrefix: '/noapq' }, upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', apq: { enabled: false } }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function ask(path: string, accept: string | undefined, body: unknown) {
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (accept !== undefined) headers.accept = accept
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
    const json = (await res.body.json()) as { data?: unknown; errors?: { extensions: { code: string } }[] }
    return { status: res.statusCode, type: String(res.headers['content-type']), cc: res.headers['cache-control'], json }
  }

  it('a response without data is 200 only as application/json, else 4xx in graphql-response+json', async () => {
    const hashOnly = { extensions: { persistedQuery: { version: 1, sha256Hash: sha256('{ entity(id: "never") { id } }') } } }
    const q = '{ entities(first: 1) { id } }'
    const both = { query: q, extensions: { persistedQuery: { version: 1, sha256Hash: sha256(q) } } }
    const cases = [
      ['/apq/graphql', undefined, hashOnly, 200, 'application/json', 'PERSISTED_QUERY_NOT_FOUND'],
      ['/apq/graphql', AC4_ACCEPT, hashOnly, 200, 'application/json', 'PERSISTED_QUERY_NOT_FOUND'],
      ['/apq/graphql', STRICT, hashOnly, 404, STRICT, 'PERSISTED_QUERY_NOT_FOUND'],
      ['/noapq/graphql', AC4_ACCEPT, both, 200, 'application/json', 'PERSISTED_QUERY_NOT_SUPPORTED'],
      ['/noapq/graphql', STRICT, both, 400, STRICT, 'PERSISTED_QUERY_NOT_SUPPORTED'],
    ] as const
    for (const [path, accept, body, status, type, code] of cases) {
      const r = await ask(path, accept, body)
      expect({ accept, status: r.status, type: r.type.split(';')[0], code: r.json.errors?.[0]?.extensions.code }).toEqual({ accept, status, type, code })
      expect(r.json.data).toBeUndefined()
      expect(r.cc).toBe('private, no-cache, must-revalidate')
    }
  })

  it("Apollo Client's persisted-query link registers and runs with either Accept", async () => {
    for (const accept of [AC4_ACCEPT, STRICT]) {
      const statuses: number[] = []
      const recording: typeof fetch = async (input, init) => {
        const res = await fetch(input, init)
        statuses.push(res.status)
        return res
      }
      const http = new HttpLink({ uri: `${proxy.url}/apq/graphql`, fetch: recording, headers: { accept } })
      const client = new ApolloClient({ link: new PersistedQueryLink({ sha256 }).concat(http), cache: new InMemoryCache() })
      const id = accept === STRICT ? '11' : '12'
      const r = await client.query({ query: gql(`query E${id} { entity(id: "${id}") { id name } }`), fetchPolicy: 'network-only' })
      expect(r.data).toEqual({ entity: { __typename: 'Entity', id, name: `Entity ${id}` } })
      expect(statuses).toEqual([accept === STRICT ? 404 : 200, 200])
    }
  })
})
