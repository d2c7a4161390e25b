// Operations over a terminated socket (websocket.mode: terminate):
//  - a persisted operation's manifest `tier` set the delivery tier of the whole connection when it
//    was the first operation: a gold manifest subscription on a bronze tenant's socket made every
//    other subscription on it gold (never dropped, gold's queue cap). The connection's tier is now
//    the tenant's (or a verified tier claim's); the manifest tier stays the operation's;
//  - a mutation sent over the socket did not invalidate the response cache (its write-through
//    invalidation ran in the HTTP response phase only): the next HTTP query was a stale HIT;
//  - a query or mutation over the socket had no time budget (the hub runs the chain without a
//    deadline, for subscriptions): against a backend that never answered, the client waited for
//    ever; now the route's timeouts.totalMs (or a persisted operation's timeoutMs) ends it with
//    UPSTREAM_TIMEOUT, as over HTTP;
//  - operations over the socket were in no per-operation metric (only the upgrade's 101 in
//    igw_requests_total): now igw_subscription_operations_total and, for queries and mutations,
//    igw_subscription_operation_duration_seconds — kept out of the HTTP SLO metrics.
// Real igw, real graphql-ws backends (graphql-yoga over HTTP + graphql-ws), raw ws and undici clients.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'
import { useServer } from 'graphql-ws/use/ws'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

const GOLD_DOC = 'subscription GoldEvents { events(channel: "gold-op") { seq } }'

describe('a persisted operation\'s tier on a terminated socket', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: { tier: 'bronze' } },
      persistedDocuments: { operations: { goldEvents: { document: GOLD_DOC, tier: 'gold' } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'persisted' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('does not make the bronze tenant\'s whole connection gold', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    try {
      c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
      await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
      // the manifest operation first (its exact text is matched to its id, so its policy applies)
      c.send({ type: 'subscribe', id: 'g', payload: { query: GOLD_DOC } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(1)
      c.send({ type: 'subscribe', id: 'b', payload: { query: 'subscription { events(channel: "plain") { seq } }' } })
      await expect.poll(() => be.active(), { timeout: 10_000 }).toBe(2)
      const m = await proxy.metricsText()
      expect(metricSum(m, 'igw_subscription_connections', 'tier="bronze"')).toBe(1)
      expect(metricSum(m, 'igw_subscription_connections', 'tier="gold"')).toBe(0)
      expect(metricSum(m, 'igw_subscriptions_active', 'tier="bronze"')).toBe(2)
      expect(c.of((x) => x.type === 'error')).toEqual([])
    } finally {
      c.end()
    }
  })
})

/** graphql-yoga over HTTP and graphql-ws over WebSocket on one port, /graphql; counts HTTP executions. */
async function entityBackend(): Promise<{ url: string; httpCalls: () => number; close: () => Promise<void> }> {
  const names = new Map<string, string>()
  let httpCalls = 0
  const schema = createSchema({
    typeDefs: /* GraphQL */ `
      type Entity { id: ID! name: String! }
      type Query { entity(id: ID!): Entity, hang: String }
      type Mutation { rename(id: ID!, name: String!): Entity, hangWrite: String }
      type Subscription { never: Int }
    `,
    resolvers: {
      Query: {
        entity: (_: unknown, a: { id: string }) => ({ id: a.id, name: names.get(a.id) ?? `Entity ${a.id}` }),
        // a backend that never answers this one
        hang: () => new Promise<string>(() => undefined),
      },
      Mutation: {
        rename: (_: unknown, a: { id: string; name: string }) => {
          names.set(a.id, a.name)
          return { id: a.id, name: a.name }
        },
        hangWrite: () => new Promise<string>(() => undefined),
      },
    },
  })
  const yoga = createYoga({ schema, logging: false })
  const server: Server = createServer((req, res) => {
    httpCalls++
    void yoga(req, res)
  })
  const wss = new WebSocketServer({ server, path: '/graphql' })
  const disposable = useServer({ schema }, wss)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    httpCalls: () => httpCalls,
    close: async () => {
      await disposable.dispose()
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('a mutation over a terminated socket', () => {
  let be: Awaited<ReturnType<typeof entityBackend>>
  let proxy: TestProxy
  beforeAll(async () => {
    be = await entityBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300 }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  const ENTITY = 'query E($id: ID!) { entity(id: $id) { id name } }'
  async function ask(id: string) {
    const res = await request(`${proxy.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' },
      body: JSON.stringify({ query: ENTITY, variables: { id } }),
    })
    const json = (await res.body.json()) as { data?: { entity?: { name?: string } } }
    return { status: res.statusCode, cache: res.headers['x-cache'], name: json.data?.entity?.name }
  }

  async function mutateOverSocket(id: string, name: string): Promise<RawClient> {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'subscribe', id: 'm', payload: { query: 'mutation R($id: ID!, $n: String!) { rename(id: $id, name: $n) { id name } }', variables: { id, n: name } } })
    await c.wait((x) => x.messages.some((m) => m.id === 'm' && m.type === 'complete'), 10_000, 'the mutation\'s complete')
    return c
  }

  it('invalidates the cached entities it returned, like the same mutation over HTTP', async () => {
    expect(await ask('1')).toMatchObject({ status: 200, cache: 'MISS', name: 'Entity 1' })
    expect(await ask('1')).toMatchObject({ status: 200, cache: 'HIT', name: 'Entity 1' })
    const c = await mutateOverSocket('1', 'Renamed')
    try {
      const next = c.of((m) => m.id === 'm' && m.type === 'next')
      expect(next).toHaveLength(1)
      expect((next[0]!.payload as { data: { rename: { name: string } } }).data.rename.name).toBe('Renamed')
      // read-your-writes: once the client has the result, the cache no longer answers the old name
      expect(await ask('1')).toMatchObject({ status: 200, cache: 'MISS', name: 'Renamed' })
      expect(await ask('1')).toMatchObject({ status: 200, cache: 'HIT', name: 'Renamed' })
    } finally {
      c.end()
    }
  })

  it('is counted per operation, apart from the HTTP request metrics', async () => {
    const before = await proxy.metricsText()
    const c = await mutateOverSocket('2', 'Two')
    try {
      await expect
        .poll(async () => metricSum(await proxy.metricsText(), 'igw_subscription_operations_total', 'op="mutation",status="200"') - metricSum(before, 'igw_subscription_operations_total', 'op="mutation",status="200"'), { timeout: 10_000 })
        .toBe(1)
      const after = await proxy.metricsText()
      const count = (t: string) => metricSum(t, 'igw_subscription_operation_duration_seconds_count', 'op="mutation"')
      expect(count(after) - count(before)).toBe(1)
      expect(after).toMatch(/igw_subscription_operations_total\{[^}]*route="gql"[^}]*\} /)
      // HTTP's read-latency SLO metric and the availability SLO's request count see only HTTP
      expect(metricSum(after, 'igw_request_duration_seconds_count', 'op="mutation"')).toBe(0)
      expect(metricSum(after, 'igw_requests_total', 'status="200"') - metricSum(before, 'igw_requests_total', 'status="200"')).toBe(0)
    } finally {
      c.end()
    }
  })
})

describe('a query over a terminated socket to a backend that never answers', () => {
  let be: Awaited<ReturnType<typeof entityBackend>>
  let proxy: TestProxy
  const HANG_DOC = 'query Hang { hang }'
  beforeAll(async () => {
    be = await entityBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { hangFast: { document: 'query HangFast { hang }', timeoutMs: 300 } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, timeouts: { totalMs: 1500 }, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'cache', ttlSeconds: 300 }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  async function open(): Promise<RawClient> {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    return c
  }
  const codeOf = (c: RawClient, id: string) => ((c.of((m) => m.id === id && m.type === 'error')[0]?.payload as { extensions?: { code?: string } }[] | undefined)?.[0]?.extensions?.code)

  it('ends with UPSTREAM_TIMEOUT after the route\'s timeouts.totalMs; the socket stays usable', async () => {
    const c = await open()
    try {
      c.send({ type: 'subscribe', id: 'q', payload: { query: HANG_DOC } })
      await c.wait((x) => x.messages.some((m) => m.id === 'q' && m.type === 'error'), 15_000, 'the timeout error')
      expect(codeOf(c, 'q')).toBe('UPSTREAM_TIMEOUT')
      expect(c.close).toBeUndefined()
      // the id is free again and the connection answers the next operation
      c.send({ type: 'subscribe', id: 'q', payload: { query: '{ entity(id: "9") { name } }' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'q' && m.type === 'complete'), 10_000, 'the next operation')
      await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_subscription_operations_total', 'status="504"'), { timeout: 10_000 }).toBe(1)
    } finally {
      c.end()
    }
  })

  it('a persisted operation\'s timeoutMs applies, as over HTTP', async () => {
    const c = await open()
    try {
      const t0 = performance.now()
      c.send({ type: 'subscribe', id: 'p', payload: { query: 'query HangFast { hang }' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'p' && m.type === 'error'), 15_000, 'the timeout error')
      expect(codeOf(c, 'p')).toBe('UPSTREAM_TIMEOUT')
      // its own 300 ms budget, not the route's 1500 ms (loose bound: a loaded machine may be slow)
      const msg = (c.of((m) => m.id === 'p' && m.type === 'error')[0]!.payload as { message: string }[])[0]!.message
      expect(msg).toContain('300 ms')
      expect(performance.now() - t0).toBeGreaterThan(250)
    } finally {
      c.end()
    }
  })

  it('a mutation that timed out may have run: the route\'s cached entries go, as for an HTTP mutation\'s 504', async () => {
    const ask = async () => {
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ entity(id: "5") { id name } }' }) })
      await res.body.dump()
      return res.headers['x-cache']
    }
    expect(await ask()).toBe('MISS')
    expect(await ask()).toBe('HIT')
    const c = await open()
    try {
      c.send({ type: 'subscribe', id: 'w', payload: { query: 'mutation { hangWrite }' } })
      await c.wait((x) => x.messages.some((m) => m.id === 'w' && m.type === 'error'), 15_000, 'the timeout error')
      expect(codeOf(c, 'w')).toBe('UPSTREAM_TIMEOUT')
      expect(await ask()).toBe('MISS')
    } finally {
      c.end()
    }
  })
})
