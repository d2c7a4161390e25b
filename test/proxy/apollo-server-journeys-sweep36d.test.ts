// An app team on Apollo Client 4 (HttpLink + GraphQLWsLink split, PersistedQueryLink with
// sha256 from node:crypto) puts igw in front of its @apollo/server 5 backend (graphql-ws on the
// same port), with the config the README and config/examples give: sidecar mode, then ingress
// mode with JWT tenants and terminated subscriptions. Each journey runs twice, against the backend
// directly and through igw, and what Apollo Client hands the app must be the same, apart from
// what the docs announce (igw's own APQ answers, x-cache, the request id, gap notices).
import { createHash } from 'node:crypto'
import { ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from '@apollo/client'
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries'
import { GraphQLWsLink } from '@apollo/client/link/subscriptions'
import { createClient } from 'graphql-ws'
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { startApolloBackend, type ApolloBackend } from '../helpers/apollo-server.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')
const SECRET = 'sweep36d-apollo-journeys-secret-at-least-32-chars'

let be: ApolloBackend
let sidecar: TestProxy
let ingress: TestProxy
let token: string

interface Exchange {
  method: string
  status: number
  headers: Record<string, string>
  json: { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] }
}
const wire: Exchange[] = []
const recording: typeof fetch = async (input, init) => {
  const res = await fetch(input, init)
  wire.push({ method: init?.method ?? 'GET', status: res.status, headers: Object.fromEntries(res.headers), json: JSON.parse(await res.clone().text()) as Exchange['json'] })
  return res
}

beforeAll(async () => {
  be = await startApolloBackend()
  token = await new SignJWT({ tenant_id: 'acme', sub: 'u1' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(new TextEncoder().encode(SECRET))
  // README's sidecar: one upstream, the docs' chain order (docs/persisted-and-cache.md)
  sidecar = await startTestProxy({
    mode: 'sidecar',
    upstreams: { app: { url: be.url, healthCheck: { enabled: true } } },
    tenants: { demo: { tier: 'gold' } },
    routes: [
      {
        name: 'graphql',
        upstream: 'app',
        type: 'graphql',
        filters: [{ name: 'request-id' }, { name: 'tenant', header: 'x-tenant-id', defaultTenant: 'demo' }, { name: 'persisted' }, { name: 'quota', kind: 'graphql' }, { name: 'cache', ttlSeconds: 30 }],
      },
    ],
  })
  // ingress: JWT tenants (config/examples/ingress.yaml, with a shared secret), terminated subscriptions
  ingress = await startTestProxy({
    mode: 'ingress',
    upstreams: { graph: { url: be.url, healthCheck: { enabled: false } } },
    tenants: { acme: { tier: 'gold' } },
    subscriptions: { upstream: { retryInitialMs: 100, retryMaxMs: 500 } },
    routes: [
      {
        name: 'api',
        match: { pathPrefix: '/graphql' },
        upstream: 'graph',
        type: 'graphql',
        websocket: { mode: 'terminate' },
        filters: [{ name: 'request-id' }, { name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }, { name: 'persisted' }, { name: 'cache' }, { name: 'subscriptions' }],
      },
    ],
  })
})
afterAll(async () => {
  await sidecar?.close()
  await ingress?.close()
  await be?.stop()
})

function client(base: string, opts: { apq?: 'post' | 'get'; headers?: Record<string, string> } = {}): ApolloClient {
  const http = new HttpLink({ uri: `${base}/graphql`, fetch: recording, headers: opts.headers })
  const link = opts.apq ? (new PersistedQueryLink({ sha256, useGETForHashedQueries: opts.apq === 'get' }).concat(http) as ApolloLink) : http
  return new ApolloClient({ link, cache: new InMemoryCache(), clientAwareness: { name: 'web', version: '1.2.3' } })
}

/** What the app sees of a result or a failure. */
const seen = (p: Promise<{ data?: unknown; error?: unknown }>) =>
  p.then(
    (r) => ({ data: r.data, errors: CombinedGraphQLErrors.is(r.error) ? r.error.errors : undefined }),
    (e: unknown) => ({ thrown: CombinedGraphQLErrors.is(e) ? e.errors : String(e) }),
  )

const BOOK = gql`
  fragment BookParts on Book {
    id
    title
    author {
      id
      name
    }
  }
  query Book($id: ID!) {
    book(id: $id) {
      ...BookParts
    }
  }
`

async function readJourney(base: string): Promise<unknown[]> {
  const c = client(base)
  return [
    await seen(c.query({ query: BOOK, variables: { id: '1' } })),
    await seen(c.query({ query: gql`query Boom { boom }` })),
    await seen(c.query({ query: gql`query Coded { coded }`, errorPolicy: 'all' })),
    await seen(c.query({ query: gql`query Partial { partial { id title } }`, errorPolicy: 'all' })),
    await seen(c.query({ query: gql`query Invalid { nope }` })),
    await seen(c.query({ query: gql`query Big { big(n: 2000, size: 1000) }` })),
  ]
}

describe('Apollo Client 4 → igw → @apollo/server 5, compared with the backend direct', () => {
  it('sidecar: variables and fragments, resolver errors with their extensions, partial data, a validation error, a 2 MB answer', async () => {
    const direct = await readJourney(be.url)
    wire.length = 0
    expect(await readJourney(sidecar.url)).toEqual(direct)
    // igw's additions only: its request id on every answer; the statuses are the backend's
    expect(wire.map((w) => w.status)).toEqual([200, 200, 200, 200, 400, 200])
    expect(wire.every((w) => /^[0-9a-f-]{36}$/.test(w.headers['x-request-id'] ?? ''))).toBe(true)
    expect((direct[3] as { errors: unknown }).errors).toEqual([{ message: 'shelf 2 is locked', locations: [{ line: 2, column: 3 }], path: ['partial', 1], extensions: { code: 'LOCKED' } }])
  })

  it('sidecar: the headers the app relies on reach the backend; its x-request-id comes back', async () => {
    const q = gql`query Seen { seen { clientName clientVersion authorization requestId tenant } }`
    const headers = { authorization: 'Bearer app-session', 'x-request-id': 'page-load-42' }
    const direct = (await client(be.url, { headers }).query({ query: q })).data
    const via = (await client(sidecar.url, { headers }).query({ query: q })).data
    expect(direct).toEqual({ seen: { __typename: 'Seen', clientName: 'web', clientVersion: '1.2.3', authorization: 'Bearer app-session', requestId: 'page-load-42', tenant: null } })
    expect(via).toEqual({ seen: { ...(direct as { seen: object }).seen, tenant: 'demo' } })
    expect(wire.at(-1)!.headers['x-request-id']).toBe('page-load-42')
  })

  it.each(['get', 'post'] as const)('sidecar: APQ (%s) not found → register → hash hits, as Apollo Client does it', async (apq) => {
    const Q = apq === 'get' ? gql`query ApqGet($id: ID!) { book(id: $id) { id title } }` : gql`query ApqPost($id: ID!) { book(id: $id) { id title } }`
    wire.length = 0
    const results: unknown[] = []
    for (let i = 0; i < 3; i++) results.push((await client(sidecar.url, { apq }).query({ query: Q, variables: { id: '2' } })).data)
    expect(results.every((r) => JSON.stringify(r) === JSON.stringify(results[0]))).toBe(true)
    const hashed = apq === 'get' ? 'GET' : 'POST'
    expect(wire.map((w) => [w.method, w.status, w.json.errors?.[0]?.extensions?.code ?? null, w.headers['x-cache'] ?? null])).toEqual([
      [hashed, 200, 'PERSISTED_QUERY_NOT_FOUND', null],
      ['POST', 200, null, 'MISS'],
      [hashed, 200, null, 'HIT'],
      [hashed, 200, null, 'HIT'],
    ])
  })

  it('sidecar: a mutation, then the query: fresh (the entry it changed was dropped)', async () => {
    const c = client(sidecar.url)
    const read = async () => (await c.query({ query: BOOK, variables: { id: '3' }, fetchPolicy: 'network-only' })).data
    await read()
    await read()
    expect(wire.at(-1)!.headers['x-cache']).toBe('HIT')
    await c.mutate({ mutation: gql`mutation Rename { renameBook(id: "3", title: "Dubliners") { id title } }` })
    expect(await read()).toMatchObject({ book: { id: '3', title: 'Dubliners' } })
    expect(wire.at(-1)!.headers['x-cache']).toBe('MISS')
  })

  it('sidecar: a malformed body is a GraphQL error naming the problem, with the request id', async () => {
    const direct = await fetch(`${be.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": "{ books { id } }"' })
    expect(direct.status).toBe(400)
    const r = await fetch(`${sidecar.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json,application/json;q=0.9' }, body: '{"query": "{ books { id } }"' })
    expect(r.status).toBe(400)
    expect(r.headers.get('content-type')).toMatch(/^application\/graphql-response\+json/)
    expect(r.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
    expect(((await r.json()) as Exchange['json']).errors![0]).toMatchObject({ message: expect.stringMatching(/^Malformed JSON body/), extensions: { code: 'BAD_REQUEST' } })
  })

  it('ingress: the JWT reaches the backend as the app sent it, next to the tenant igw resolved', async () => {
    const q = gql`query Seen { seen { authorization tenant } }`
    const data = (await client(ingress.url, { headers: { authorization: `Bearer ${token}` } }).query({ query: q })).data
    expect(data).toEqual({ seen: { __typename: 'Seen', authorization: `Bearer ${token}`, tenant: 'acme' } })
    const refused = await seen(client(ingress.url).query({ query: q }))
    expect(refused).toMatchObject({ thrown: [{ extensions: { code: 'UNAUTHENTICATED' } }] })
  })

  it('subscriptions through GraphQLWsLink across a backend restart: passthrough (sidecar) as direct; terminated (ingress) with the documented gap notice', async () => {
    const run = async (base: string, connectionParams?: Record<string, string>, lingers = false) => {
      const ws = createClient({ url: `${base.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, connectionParams, retryAttempts: 10, retryWait: () => sleep(200) })
      const http = new HttpLink({ uri: `${base}/graphql`, headers: connectionParams })
      const c = new ApolloClient({ link: ApolloLink.split((op) => op.operationType === 'subscription', new GraphQLWsLink(ws), http), cache: new InMemoryCache() })
      const got: string[] = []
      const live = be.liveSubscriptions()
      const sub = c
        .subscribe({ query: gql`subscription Renamed { bookRenamed { id title } }` })
        .subscribe({ next: (v) => got.push(v.data ? (v.data as { bookRenamed: { title: string } }).bookRenamed.title : `gap: ${String((v.error as CombinedGraphQLErrors).errors[0]!.extensions!.code)}`) })
      try {
        await waitUntil(() => be.liveSubscriptions() > live, 5_000, 'subscribed upstream')
        be.publish({ id: '1', title: 'before' })
        await waitUntil(() => got.length === 1, 5_000, 'first event')
        await be.stop()
        await be.start()
        // the client (passthrough) or igw (terminated) subscribes again
        await waitUntil(() => be.liveSubscriptions() > live, 10_000, 'subscribed again')
        be.publish({ id: '1', title: 'after' })
        await waitUntil(() => got.includes('after'), 5_000, 'event after the restart')
        return got
      } finally {
        sub.unsubscribe()
        await ws.dispose()
        // a terminated stream stays upstream for subscriptions.upstream.lingerMs after its last client
        if (!lingers) await waitUntil(() => be.liveSubscriptions() === live, 5_000, 'unsubscribed')
      }
    }
    const direct = await run(be.url)
    expect(direct).toEqual(['before', 'after'])
    expect(await run(sidecar.url)).toEqual(direct)
    // docs/subscriptions.md, "Upstream outages": the client's subscription stays; an epoch gap says events may be missing
    expect(await run(ingress.url, { authorization: `Bearer ${token}` }, true)).toEqual(['before', 'gap: STREAM_GAP', 'after'])
  })
})
