// Sweep 32c: entities keyed `_id` (MongoDB-style schemas; Apollo Client's default identifies an
// object by `id`, else `_id`) were stored untagged: a mutation returning one left the cached copy
// stale until its TTL. Now `_id` tags an entity as `id` does (aliases and the __typename rewrite
// included). Real proxy, a real graphql-yoga backend, undici.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { collectEntityTags, withTypenames } from '../../filters/cache/entity-tags.ts'
import { parse } from 'graphql'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('entities keyed _id are tagged and invalidated', () => {
  let server: Server
  let proxy: TestProxy
  const docs = new Map<string, string>([
    ['a1', 'first'],
    ['a2', 'second'],
  ])
  const seen: string[] = []

  beforeAll(async () => {
    const yoga = createYoga({
      schema: createSchema({
        typeDefs: /* GraphQL */ `
          type Doc { _id: ID! title: String! }
          type Query { doc(_id: ID!): Doc }
          type Mutation { retitle(_id: ID!, title: String!): Doc }
        `,
        resolvers: {
          Query: { doc: (_: unknown, a: { _id: string }) => (docs.has(a._id) ? { _id: a._id, title: docs.get(a._id) } : null) },
          Mutation: {
            retitle: (_: unknown, a: { _id: string; title: string }) => {
              docs.set(a._id, a.title)
              return { _id: a._id, title: a.title }
            },
          },
        },
      }),
      logging: false,
    })
    server = createServer((req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => (body += c.toString()))
      req.on('end', () => seen.push(body))
      void yoga(req, res)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    proxy = await startTestProxy({
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, filters: [{ name: 'cache', ttlSeconds: 300, requireTenant: false }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    server?.closeAllConnections()
    await new Promise((r) => server?.close(r))
  })

  async function post(query: string) {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })
    const text = await res.body.text()
    return { status: res.statusCode, cache: res.headers['x-cache'], data: (JSON.parse(text) as { data?: Record<string, unknown> }).data }
  }

  it('a mutation returning { _id } invalidates the cached query of that entity, and only it', async () => {
    const q1 = '{ doc(_id: "a1") { _id title } }'
    const q2 = '{ doc(_id: "a2") { _id title } }'
    expect(await post(q1)).toMatchObject({ cache: 'MISS', data: { doc: { _id: 'a1', title: 'first' } } })
    expect(await post(q2)).toMatchObject({ cache: 'MISS' })
    expect(await post(q1)).toMatchObject({ cache: 'HIT' })
    // The backend was asked for __typename next to _id (the rewrite; the client sees it, as for
    // `id`: docs/decisions/0007).
    expect(seen.some((b) => b.includes('__typename'))).toBe(true)
    expect((await post(q1)).data).toEqual({ doc: { _id: 'a1', title: 'first', __typename: 'Doc' } })
    expect((await post('mutation { retitle(_id: "a1", title: "renamed") { _id title } }')).status).toBe(200)
    // Before: HIT with "first" (the entry had no Doc:a1 tag).
    expect(await post(q1)).toMatchObject({ cache: 'MISS', data: { doc: { _id: 'a1', title: 'renamed' } } })
    expect(await post(q2)).toMatchObject({ cache: 'HIT', data: { doc: { _id: 'a2', title: 'second' } } })
  })

  it('an _id selected under an alias tags too', async () => {
    const q = '{ doc(_id: "a2") { key: _id title } }'
    expect(await post(q)).toMatchObject({ cache: 'MISS' })
    expect(await post(q)).toMatchObject({ cache: 'HIT' })
    await post('mutation { retitle(_id: "a2", title: "two") { _id } }')
    expect(await post(q)).toMatchObject({ cache: 'MISS', data: { doc: { key: 'a2', title: 'two' } } })
  })
})

describe('entity tags of _id, pure', () => {
  it('id wins over _id; _id alone tags; neither: no entity tag', () => {
    const out = new Set<string>()
    collectEntityTags({ a: { __typename: 'A', id: 1, _id: 'x' }, b: { __typename: 'B', _id: 'y' }, c: { __typename: 'C', name: 'n' } }, out, false)
    expect([...out].sort()).toEqual(['A:1', 'B:y'])
  })

  it('the __typename rewrite adds it beside a selected _id', () => {
    expect(withTypenames(parse('{ doc(_id: "1") { _id title } }'))).toContain('__typename')
    expect(withTypenames(parse('{ doc(_id: "1") { title } }'))).toBeUndefined()
  })
})
