// Sweep 36c: graphql-sse's single connection mode through a `graphql` route. The reference client
// (`createClient({ singleConnection: true })`) reserves a stream with a bodiless PUT (201 and a
// token), opens a GET event stream carrying the token, POSTs each operation with it (202, results
// on the stream) and stops one with DELETE ?operationId=. A graphql route refused PUT and DELETE
// with 405, so such a client behind igw could run nothing. Now PUT and DELETE are relayed through
// the chain (the tenant filter authenticates the reservation), the token stream is relayed as a
// subscription stream (no totalMs once its head is out, ended by a drain), the 202 passes through
// uncached. Where a DLP filter sits, whatever carries a token (the stream, an operation) is
// refused: an operation's results would leave on the shared stream, which DLP cannot tie to it.
import { mkdtempSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execute, GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString, subscribe, validate } from 'graphql'
import { createClient, NetworkError, type Client } from 'graphql-sse'
import { createHandler } from 'graphql-sse/lib/use/http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/** The backend: graphql-sse's own handler (both modes), counting executions and open subscriptions. */
const state = { queries: 0, ticking: 0, stopped: 0, seen: [] as { method: string; url: string; tenant: string | undefined; token: boolean }[] }
const schema = new GraphQLSchema({
  query: new GraphQLObjectType({
    name: 'Query',
    fields: {
      hello: {
        type: GraphQLString,
        args: { name: { type: GraphQLString } },
        resolve: (_s, { name }: { name?: string }) => (state.queries++, `hello ${name ?? 'world'}`),
      },
    },
  }),
  subscription: new GraphQLObjectType({
    name: 'Subscription',
    fields: {
      // `count` values (0: without end), one every `everyMs`; the backend notes when a stream stops.
      tick: {
        type: GraphQLInt,
        args: { count: { type: GraphQLInt }, everyMs: { type: GraphQLInt } },
        subscribe: async function* (_s, { count, everyMs }: { count: number; everyMs: number }) {
          state.ticking++
          try {
            for (let n = 1; count === 0 || n <= count; n++) {
              await new Promise((r) => setTimeout(r, everyMs))
              yield { tick: n }
            }
          } finally {
            state.ticking--
            state.stopped++
          }
        },
      },
    },
  }),
})

let backend: Server
let backendUrl: string
beforeAll(async () => {
  // Our graphql's execute, subscribe and validate: the handler's own import of graphql may be
  // another instance of the module (CJS beside vitest's ESM), which refuses our schema.
  const handle = createHandler({ schema, execute, subscribe, validate })
  backend = createServer((req: IncomingMessage, res) => {
    state.seen.push({ method: req.method!, url: req.url!, tenant: req.headers['x-tenant-id'] as string | undefined, token: req.headers['x-graphql-event-stream-token'] !== undefined })
    handle(req, res).catch(() => res.destroy())
  })
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r))
  backendUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`
})
afterAll(async () => {
  backend?.closeAllConnections()
  await new Promise<void>((r) => backend?.close(() => r()))
})

const tenantRoute = (extra: Record<string, unknown> = {}) => ({ name: 'g', upstream: backendUrl, type: 'graphql', filters: [{ name: 'tenant' }], ...extra })
/** What igw refused, read before the client aborts the response: each 4xx/5xx as method, status and body. */
type Refusal = { method: string; status: number; body: { errors: { message: string; extensions: { code: string } }[] } }
const client = (p: TestProxy, headers: Record<string, string> = { 'x-tenant-id': 'acme' }, refusals: Refusal[] = []): Client<true> =>
  createClient({
    url: `${p.url}/graphql`,
    singleConnection: true,
    retryAttempts: 0,
    // A fresh object each time: the client writes the token into the object it is given, so a
    // reconnect (lazy: after the last operation) would PUT with the old token, which the backend
    // refuses (409) while it has not yet seen the old stream close.
    headers: () => ({ ...headers }),
    fetchFn: async (url: string, init: RequestInit) => {
      const res = await fetch(url, init)
      if (res.status >= 400) refusals.push({ method: init.method!, status: res.status, body: (await res.clone().json()) as Refusal['body'] })
      return res
    },
  })

type Result = { data?: Record<string, unknown> | null; errors?: unknown[] }
async function collect(it: AsyncIterableIterator<unknown>): Promise<{ results: Result[]; error: unknown }> {
  const results: Result[] = []
  try {
    for await (const r of it) results.push(r as Result)
    return { results, error: undefined }
  } catch (error) {
    return { results, error }
  }
}

describe('graphql-sse single connection mode through a graphql route', () => {
  let p: TestProxy
  beforeAll(async () => {
    // totalMs well under the subscription's life: the token stream is a subscription, not a request.
    p = await startTestProxy({ tenants: { acme: {} }, routes: [tenantRoute({ timeouts: { totalMs: 800 } })] } as never)
  })
  afterAll(async () => {
    await p?.close()
  })

  it('a query and a subscription complete with their results; every request carries the tenant; the stream outlives totalMs', async () => {
    const c = client(p)
    const from = state.seen.length
    try {
      const [q, s] = await Promise.all([collect(c.iterate({ query: 'query ($n: String) { hello(name: $n) }', variables: { n: 'igw' } })), collect(c.iterate({ query: 'subscription { tick(count: 4, everyMs: 300) }' }))])
      expect(q).toEqual({ results: [{ data: { hello: 'hello igw' } }], error: undefined })
      expect(s).toEqual({ results: [1, 2, 3, 4].map((n) => ({ data: { tick: n } })), error: undefined })
    } finally {
      c.dispose()
    }
    const seen = state.seen.slice(from)
    expect(seen.filter((r) => r.method === 'PUT')).toHaveLength(1)
    expect(seen.filter((r) => r.method === 'GET' && r.token)).toHaveLength(1)
    expect(seen.filter((r) => r.method === 'POST' && r.token)).toHaveLength(2)
    expect(seen.every((r) => r.tenant === 'acme')).toBe(true)
  })

  it('a client without a tenant is refused at the reservation with a GraphQL-shaped error, and nothing reaches the backend', async () => {
    const refusals: Refusal[] = []
    const c = client(p, {}, refusals)
    const from = state.seen.length
    try {
      const { results, error } = await collect(c.iterate({ query: '{ hello }' }))
      expect(results).toEqual([])
      expect(error).toBeInstanceOf(NetworkError)
      expect(refusals.map((r) => [r.method, r.status, r.body.errors[0]!.extensions.code])).toEqual([['PUT', 403, 'UNKNOWN_TENANT']])
    } finally {
      c.dispose()
    }
    expect(state.seen.slice(from)).toEqual([])
  })

  it('unsubscribing mid-stream sends DELETE ?operationId=, which stops the backend\'s subscription', async () => {
    const c = client(p)
    const from = state.seen.length
    const stoppedBefore = state.stopped
    try {
      const got: number[] = []
      let unsubscribe!: () => void
      await new Promise<void>((resolve, reject) => {
        unsubscribe = c.subscribe<{ tick: number }>(
          { query: 'subscription { tick(count: 0, everyMs: 100) }' },
          {
            next: (r) => {
              got.push(r.data!.tick)
              if (got.length === 2) resolve()
            },
            error: reject,
            complete: () => {},
          },
        )
      })
      expect(state.ticking).toBe(1)
      unsubscribe()
      await expect.poll(() => state.stopped, { timeout: 5000, interval: 20 }).toBe(stoppedBefore + 1)
      expect(state.ticking).toBe(0)
      const del = state.seen.slice(from).filter((r) => r.method === 'DELETE')
      expect(del).toHaveLength(1)
      expect(del[0]).toMatchObject({ token: true, tenant: 'acme' })
      expect(del[0]!.url).toMatch(/^\/graphql\?operationId=./)
    } finally {
      c.dispose()
    }
  })

  it('the route still refuses other methods, with an Allow that names PUT and DELETE; a PUT with a body or a GraphQL operation is a 400', async () => {
    const patch = await request(`${p.url}/graphql`, { method: 'PATCH', headers: { 'x-tenant-id': 'acme' } })
    expect(patch.statusCode).toBe(405)
    expect(patch.headers.allow).toBe('GET, HEAD, POST, PUT, DELETE, OPTIONS')
    expect(((await patch.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('METHOD_NOT_ALLOWED')
    const from = state.seen.length
    const body = await request(`${p.url}/graphql`, { method: 'PUT', headers: { 'x-tenant-id': 'acme', 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
    expect(body.statusCode).toBe(400)
    expect(((await body.body.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/PUT request to a GraphQL route cannot carry a body/)
    const op = await request(`${p.url}/graphql?query=%7Bhello%7D`, { method: 'DELETE', headers: { 'x-tenant-id': 'acme' } })
    expect(op.statusCode).toBe(400)
    expect(((await op.body.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/carries no GraphQL operation/)
    expect(state.seen.slice(from)).toEqual([])
    const m = await p.metricsText()
    expect(m).toMatch(/igw_proxy_errors_total\{route="g",code="METHOD_NOT_ALLOWED"\} [1-9]/)
  })
})

describe('single connection mode with other filters', () => {
  it('the 202 of an operation is never cached: the same query twice runs twice upstream', async () => {
    const p = await startTestProxy({ tenants: { acme: {} }, routes: [tenantRoute({ filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60 }] })] } as never)
    const c = client(p)
    try {
      const before = state.queries
      for (let i = 0; i < 2; i++) expect(await collect(c.iterate({ query: '{ hello }' }))).toEqual({ results: [{ data: { hello: 'hello world' } }], error: undefined })
      expect(state.queries).toBe(before + 2)
    } finally {
      c.dispose()
      await p.close()
    }
  })

  it('a drain ends the open token stream at once, and the backend\'s subscriptions with it', async () => {
    const p = await startTestProxy({ tenants: { acme: {} }, shutdown: { drainTimeoutMs: 5000, idleGraceMs: 0 }, routes: [tenantRoute()] } as never)
    const c = client(p)
    const got: number[] = []
    let ended!: (e: unknown) => void
    const end = new Promise<unknown>((r) => (ended = r))
    try {
      await new Promise<void>((resolve, reject) => {
        c.subscribe<{ tick: number }>({ query: 'subscription { tick(count: 0, everyMs: 100) }' }, { next: (r) => (got.push(r.data!.tick), got.length === 2 && resolve()), error: (e) => (ended(e), reject(e as Error)), complete: () => ended(undefined) })
      })
      const started = performance.now()
      await p.close()
      expect(performance.now() - started).toBeLessThan(3000)
      expect(await end).toBeInstanceOf(NetworkError) // (graphql-sse's word for a stream that ended; with retries it reconnects)
      await expect.poll(() => state.ticking, { timeout: 5000, interval: 20 }).toBe(0)
      expect(p.logs.find('subscription stream ended: gateway draining').length).toBeGreaterThanOrEqual(1)
    } finally {
      c.dispose()
    }
  })

  it('where DLP sits, whatever carries a stream token is refused (results would leave unread on the shared stream)', async () => {
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-36c-')), 'keyring.json')
    const p = await startTestProxy({ tenants: { acme: {} }, dlp: { keyring: { file: keyring }, policy: { enabled: false } }, routes: [tenantRoute({ filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'mask_basic', exports: { graphql: { responsePaths: ['hello'] } } }] })] } as never)
    const refusals: Refusal[] = []
    const c = client(p, undefined, refusals)
    const before = state.queries
    try {
      const { results, error } = await collect(c.iterate({ query: '{ hello }' }))
      expect(results).toEqual([])
      expect(error).toBeInstanceOf(NetworkError)
      expect(refusals.map((r) => [r.method, r.status, r.body.errors[0]!.extensions.code])).toEqual([['POST', 403, 'DLP_BLOCKED']])
      expect(refusals[0]!.body.errors[0]!.message).toMatch(/single connection mode/)
      expect(state.queries).toBe(before)
      // So is an operation by GET beside a token (graphql-sse runs it and answers on the stream
      // too), and the stream itself, its token in the header or (an EventSource's) the URL.
      for (const [path, headers] of [
        ['/graphql?query=%7Bhello%7D', { 'x-graphql-event-stream-token': 't' }],
        ['/graphql', { 'x-graphql-event-stream-token': 't', accept: 'text/event-stream' }],
        ['/graphql?token=t', { accept: 'text/event-stream' }],
      ] as const) {
        const r = await request(`${p.url}${path}`, { headers: { 'x-tenant-id': 'acme', ...headers } })
        // (an event-stream-only client gets igw's error as a `next` event, status 200: README)
        const text = await r.body.text()
        expect([path, r.statusCode, /"code":"DLP_BLOCKED"/.test(text)]).toEqual([path, 'accept' in headers ? 200 : 403, true])
      }
      expect(state.queries).toBe(before)
      const m = await p.metricsText()
      // The client's token stream (refused as an event: it went on to POST) and its operation, and the three above.
      expect(metricSum(m, 'igw_dlp_exports_total', 'outcome="denied"')).toBe(5)
    } finally {
      c.dispose()
      await p.close()
    }
  })
})

// Follow-up: the filters that did not know the mode. `persisted` under enforce refused the PUT
// and DELETE (400 PERSISTED_QUERY_NOT_ALLOWED, "batched or non-JSON"); `quota` held the token's
// stream as a request in flight for its whole life, so with maxConcurrent: 1 every operation got
// 429; `dlp` refuses only what can be an export (an export operation by name), not the route.
describe('single connection mode beside persisted (enforce), quota (maxConcurrent: 1) and dlp (one export operation)', () => {
  let p: TestProxy
  const HELLO = 'query Hello { hello }'
  const TICK = 'subscription Tick { tick(count: 3, everyMs: 100) }'
  const EXPORT = 'query Export { hello(name: "export") }'
  beforeAll(async () => {
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-36c2-')), 'keyring.json')
    p = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { hello: { document: HELLO }, tick: { document: TICK }, export: { document: EXPORT } } },
      quotas: { tenants: { acme: { graphql: { maxConcurrent: 1, rate: 1000, burst: 1000 } } } },
      dlp: { keyring: { file: keyring }, policy: { enabled: false } },
      routes: [
        tenantRoute({
          filters: [{ name: 'tenant' }, { name: 'quota' }, { name: 'persisted', safelist: { mode: 'enforce' } }, { name: 'dlp', preset: 'mask_basic', exports: { graphql: { operations: ['Export'] } } }],
        }),
      ],
    } as never)
  })
  afterAll(async () => {
    await p?.close()
  })

  it('a safelisted query and subscription run while the stream is open; an unlisted one and the export operation are refused', async () => {
    const refusals: Refusal[] = []
    const c = client(p, undefined, refusals)
    try {
      // One after the other (two POSTs at once are two requests in flight: one over maxConcurrent),
      // the token stream open all along.
      const s = await collect(c.iterate({ query: TICK }))
      const q = await collect(c.iterate({ query: HELLO }))
      expect(q).toEqual({ results: [{ data: { hello: 'hello world' } }], error: undefined })
      expect(s).toEqual({ results: [1, 2, 3].map((n) => ({ data: { tick: n } })), error: undefined })
      expect(refusals).toEqual([])
      const unlisted = await collect(c.iterate({ query: '{ hello(name: "x") }' }))
      expect(unlisted.results).toEqual([])
      const exported = await collect(c.iterate({ query: EXPORT }))
      expect(exported.results).toEqual([])
      expect(refusals.map((r) => [r.method, r.status, r.body.errors[0]!.extensions.code])).toEqual([
        ['POST', 400, 'PERSISTED_QUERY_NOT_ALLOWED'],
        ['POST', 403, 'DLP_BLOCKED'],
      ])
    } finally {
      c.dispose()
    }
  })
})
