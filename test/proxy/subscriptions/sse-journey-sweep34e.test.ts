// Sweep 34e: a web team's journey with the reference GraphQL-over-SSE client (graphql-sse's
// createClient, distinct connections mode) and a browser-like EventSource (undici's), through igw
// in front of a real graphql-yoga backend (the demo backend, which answers SSE natively).
//
// Defect fixed here (proxy/runtime.ts): every open SSE subscription (or any event stream, an
// `http` route's EventSource too) held one of the upstream pool's `connections` for its whole
// life, so that many idle subscribers (128 per worker by default) left no connection for
// requests: every request to that upstream waited for headersMs and got 504. Streams now have
// connections of their own.
//
// Defects fixed in sweep 34f (proxy/exchange.ts, proxy/worker-proxy.ts; the last two tests): a
// subscription relayed over HTTP was cut at the route's timeouts.totalMs (60 s by default) like a
// slow request; and on SIGTERM it held the drain for all of drainTimeoutMs, where a WebSocket gets
// 1001 at once. More in sse-subscription-lifetime-sweep34f.test.ts.
//
// What igw does not do for SSE, documented in docs/subscriptions.md: it relays SSE as HTTP (the
// subscription hub, replay cursors and QoS delivery tiers are WebSocket-only; Last-Event-ID is
// passed to the backend as any header). Since sweep 36c a `graphql` route relays graphql-sse's
// single connection mode (sse-single-connection-sweep36c.test.ts); graphql-yoga without its
// graphql-sse plugin (this demo backend) refuses the PUT reservation with 405 itself.
import { createClient, NetworkError } from 'graphql-sse'
import { SignJWT } from 'jose'
import { EventSource, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, testProxyConfig, type TestProxy } from '../../helpers/proxy.ts'

let be: DemoBackend
beforeAll(async () => {
  be = await startDemoBackend({ port: 0 })
})
afterAll(async () => {
  await be?.close()
})

/** The plain graphql route: one proxy for the tests that neither reconfigure, load nor close it. */
let plain: Promise<TestProxy> | undefined
const plainProxy = () => (plain ??= startTestProxy({ routes: [{ name: 'g', upstream: be.url, type: 'graphql' }] } as never))
afterAll(async () => {
  await (await plain)?.close()
})

type Result = { data?: Record<string, unknown> | null; errors?: { message: string }[] }

/** Every result of one operation, or the error the client ended with. */
async function collect(it: AsyncIterableIterator<unknown>, max = Infinity): Promise<{ results: Result[]; error: unknown }> {
  const results: Result[] = []
  try {
    for await (const r of it) {
      results.push(r as Result)
      if (results.length >= max) break
    }
    return { results, error: undefined }
  } catch (error) {
    return { results, error }
  }
}

const SECRET = 'sweep34e-sse-journey-secret-of-32-chars-or-more'
const sign = (tenant: string) => new SignJWT({ tenant_id: tenant }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))

/**
 * What a refused operation's client saw, however igw frames its own error for an SSE client (the
 * framing is another sweep's): a 429 head (graphql-sse's NetworkError) or the error as an event.
 */
function refusal(r: { results: Result[]; error: unknown }): string | undefined {
  if (r.error instanceof NetworkError) return (r.error as NetworkError<Response>).response?.status === 429 ? 'RATE_LIMITED' : String(r.error)
  return (r.results[0]?.errors?.[0] as { extensions?: { code?: string } } | undefined)?.extensions?.code
}

const COUNTDOWN = (from: number, ms: number) => `subscription { countdown(from: ${from}, intervalMs: ${ms}) }`
const countdowns = (rs: Result[]) => rs.map((r) => r.data?.countdown)

describe('graphql-sse, distinct connections mode, through igw', () => {
  it('queries, mutations and subscriptions; the tenant from a JWT in the headers option; a subscription costs one request and holds one slot until the client leaves', async () => {
    const p = await startTestProxy({
      tenants: { acme: { tier: 'gold' } },
      quotas: { tenants: { acme: { subscriptions: { maxConcurrent: 1, rate: 1000, burst: 1000 } } } },
      // A route that terminates WebSocket subscriptions relays SSE as HTTP all the same.
      routes: [{ name: 'g', upstream: be.url, type: 'graphql', websocket: { mode: 'terminate' }, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
    // As a web app does: a fresh token for every request (graphql-sse calls `headers` for each).
    const client = createClient({ url: `${p.url}/graphql`, headers: async () => ({ authorization: `Bearer ${await sign('acme')}` }), retryAttempts: 0 })
    try {
      expect(await collect(client.iterate({ query: '{ echo { header(name: "x-tenant-id") } }' }))).toEqual({ results: [{ data: { echo: { header: 'acme' } } }], error: undefined })
      expect(await collect(client.iterate({ query: 'mutation { updateEntity(id: "7", name: "sse") { id name } }' }))).toEqual({ results: [{ data: { updateEntity: { id: '7', name: 'sse' } } }], error: undefined })
      const all = await collect(client.iterate({ query: COUNTDOWN(5, 20) }))
      expect(all.error).toBeUndefined()
      expect(countdowns(all.results)).toEqual([5, 4, 3, 2, 1])
      // Usage counts each operation once: a subscription is one request however many events it sends.
      let requests = 0
      await expect
        .poll(async () => (requests += ((await p.collectUsage()) as Record<string, { requests?: number }>).acme?.requests ?? 0), { timeout: 5000, interval: 50 })
        .toBeGreaterThanOrEqual(3)
      expect(requests).toBe(3)

      // One subscription open holds the tenant's one slot: a second is refused...
      const first = client.iterate({ query: COUNTDOWN(100, 200) })
      expect((await first.next()).value).toEqual({ data: { countdown: 100 } })
      const refused = await collect(client.iterate({ query: COUNTDOWN(3, 10) }))
      expect(refusal(refused)).toBe('RATE_LIMITED')
      // ...and the client leaving (iterator return: graphql-sse aborts the fetch) ends the
      // backend's subscription and gives the slot back.
      await first.return!()
      await expect.poll(() => be.liveSubscriptions(), { timeout: 5000, interval: 20 }).toBe(0)
      await expect.poll(async () => (await collect(client.iterate({ query: COUNTDOWN(2, 10) }))).results.length, { timeout: 5000, interval: 50 }).toBe(2)
    } finally {
      client.dispose()
      await p.close()
    }
  })

  it('a browser EventSource (GET) gets next events and the complete event; a relayed Last-Event-ID is the backend\'s to read', async () => {
    const p = await plainProxy()
    const es = new EventSource(`${p.url}/graphql?query=${encodeURIComponent(COUNTDOWN(3, 20))}`)
    const got = await new Promise<string[]>((resolve, reject) => {
      const data: string[] = []
      es.addEventListener('next', (e) => data.push((e as MessageEvent<string>).data))
      es.addEventListener('complete', () => (es.close(), resolve(data)))
      es.onerror = () => (es.close(), reject(new Error(`EventSource failed after ${data.length} events`)))
    })
    expect(got.map((d) => (JSON.parse(d) as Result).data)).toEqual([{ countdown: 3 }, { countdown: 2 }, { countdown: 1 }])
    // igw keeps no event ids for SSE: a reconnecting EventSource's Last-Event-ID reaches the backend as it is.
    const res = await request(`${p.url}/graphql?query=${encodeURIComponent('{ echo { header(name: "last-event-id") } }')}`, { headers: { accept: 'text/event-stream', 'last-event-id': '41' } })
    expect(await res.body.text()).toContain('data: {"data":{"echo":{"header":"41"}}}')
  })

  it('keep-alive comments reach the client and keep an idle stream alive past bodyIdleMs', async () => {
    const p = await startTestProxy({ routes: [{ name: 'g', upstream: be.url, type: 'graphql', timeouts: { bodyIdleMs: 500 } }] } as never)
    try {
      // yoga pings (`:\n\n`) every 300 ms under NODE_ENV=test (12 s otherwise); events come 1.2 s apart, over
      // two bodyIdleMs (the idle watch checks at that interval).
      const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { accept: 'text/event-stream', 'content-type': 'application/json' }, body: JSON.stringify({ query: COUNTDOWN(2, 1200) }) })
      expect(res.statusCode).toBe(200)
      const text = await res.body.text()
      expect(text).toContain('event: next\ndata: {"data":{"countdown":1}}')
      expect(text).toMatch(/event: complete\n/)
      expect(text.split(':\n\n').length).toBeGreaterThan(4)
    } finally {
      await p.close()
    }
  })

  it('many open subscriptions do not take the upstream connections requests need (fails before sweep 34e)', async () => {
    const p = await startTestProxy({
      upstreams: { api: { url: be.url, connections: 4 } },
      routes: [{ name: 'g', upstream: 'api', type: 'graphql', timeouts: { headersMs: 2000 } }],
    } as never)
    const clients = Array.from({ length: 4 }, () => createClient({ url: `${p.url}/graphql`, retryAttempts: 0 }))
    const subs = clients.map((c) => c.iterate({ query: COUNTDOWN(100, 10_000) }))
    // Subscriptions POSTed without Accept: text/event-stream (yoga answers them with SSE all the same).
    const plain = await Promise.all(
      Array.from({ length: 4 }, () => request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: COUNTDOWN(100, 10_000) }) })),
    )
    try {
      // More open subscriptions than the pool has connections: all of them are served...
      const firsts = await Promise.all(subs.map((s) => s.next()))
      expect(firsts.map((f) => f.value)).toEqual(Array(4).fill({ data: { countdown: 100 } }))
      expect(plain.map((r) => [r.statusCode, r.headers['content-type']])).toEqual(Array(4).fill([200, 'text/event-stream']))
      await expect.poll(() => be.liveSubscriptions(), { timeout: 5000, interval: 20 }).toBe(8)
      // ...and so are requests (before: 504 "no connection to upstream … became available within 2000 ms").
      const q = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ hello }' }) })
      expect({ status: q.statusCode, body: await q.body.json() }).toEqual({ status: 200, body: { data: { hello: 'Hello, world!' } } })
      // A query over SSE, too (graphql-sse sends every operation with Accept: text/event-stream).
      expect(await collect(clients[0]!.iterate({ query: '{ hello }' }))).toEqual({ results: [{ data: { hello: 'Hello, world!' } }], error: undefined })
    } finally {
      await Promise.all(subs.map((s) => s.return!()))
      for (const c of clients) c.dispose()
      for (const r of plain) r.body.on('error', () => undefined).destroy()
      await expect.poll(() => be.liveSubscriptions(), { timeout: 5000, interval: 20 }).toBe(0)
      await p.close()
    }
  })

  it('a config reload (new route settings, a new upstream pool) leaves an open subscription flowing', async () => {
    let doc: Record<string, unknown> = { routes: [{ name: 'g', upstream: be.url, type: 'graphql' }] }
    const p = await startTestProxy(doc as never, { loadConfig: () => testProxyConfig(doc as never) })
    const client = createClient({ url: `${p.url}/graphql`, retryAttempts: 0 })
    try {
      const results: Result[] = []
      const done = collect(
        (async function* () {
          for await (const r of client.iterate({ query: COUNTDOWN(12, 150) })) yield (results.push(r as Result), r)
        })(),
      )
      await expect.poll(() => results.length, { timeout: 5000, interval: 20 }).toBeGreaterThan(1)
      doc = { upstreams: { api: { url: be.url, connections: 7 } }, routes: [{ name: 'g', upstream: 'api', type: 'graphql', timeouts: { headersMs: 5000 } }] }
      expect(await p.reload()).toMatchObject({ ok: true })
      const { error } = await done
      expect(error).toBeUndefined()
      expect(countdowns(results)).toEqual([12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    } finally {
      client.dispose()
      await p.close()
    }
  })
})

describe('an upstream that dies mid-stream', () => {
  let raw: RawBackend
  beforeAll(async () => {
    // One event, then the connection reset (a crash) or the body ended without `complete`.
    raw = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(':\n\nevent: next\ndata: {"data":{"x":1}}\n\n')
      setTimeout(() => (req.url === '/graphql/reset' ? res.socket!.destroy() : res.end()), 200)
    })
  })
  afterAll(async () => {
    await raw?.close()
  })

  it('ends the client\'s stream with a network error it reports (no hang), counted and logged', async () => {
    const p = await startTestProxy({ routes: [{ name: 'r', upstream: raw.url, type: 'graphql' }] } as never)
    try {
      for (const path of ['/graphql/reset', '/graphql']) {
        const client = createClient({ url: `${p.url}${path}`, retryAttempts: 0 })
        const started = performance.now()
        const { results, error } = await collect(client.iterate({ query: 'subscription { x }' }))
        expect(results).toEqual([{ data: { x: 1 } }])
        // graphql-sse reports a stream that stops without `complete` as a retryable NetworkError
        // (it resubscribes with retryAttempts > 0): reset → "terminated", a clean end → "Connection
        // closed while having active streams".
        expect(error).toBeInstanceOf(NetworkError)
        expect(performance.now() - started).toBeLessThan(5000)
        client.dispose()
      }
      const metrics = await (await request(`${p.adminUrl}/metrics`)).body.text()
      expect(metricSum(metrics, 'igw_proxy_errors_total', 'UPSTREAM_UNAVAILABLE')).toBe(1)
      expect(p.logs.find('upstream failed mid-response')).toHaveLength(1)
    } finally {
      await p.close()
    }
  })
})

describe('event streams on an http route', () => {
  it('open EventSource streams do not take the upstream connections other requests need (fails before sweep 34e)', async () => {
    const held: import('node:http').ServerResponse[] = []
    const raw = await startRawBackend((req, res) => {
      if (req.url === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.write('data: hello\n\n')
        held.push(res)
      } else res.end('ok')
    })
    const p = await startTestProxy({ upstreams: { app: { url: raw.url, connections: 2 } }, routes: [{ name: 'app', upstream: 'app', type: 'http', timeouts: { headersMs: 2000 } }] } as never)
    const streams: EventSource[] = []
    try {
      const opened = Array.from({ length: 3 }, () => {
        const es = new EventSource(`${p.url}/events`)
        streams.push(es)
        return new Promise<string>((resolve, reject) => {
          es.onmessage = (e) => resolve(e.data as string)
          es.onerror = () => reject(new Error('EventSource failed'))
        })
      })
      expect(await Promise.all(opened)).toEqual(['hello', 'hello', 'hello'])
      const r = await request(`${p.url}/ping`)
      expect({ status: r.statusCode, body: await r.body.text() }).toEqual({ status: 200, body: 'ok' })
    } finally {
      for (const es of streams) es.close()
      for (const res of held) res.end()
      await p.close()
      await raw.close()
    }
  })
})

describe('what igw does not do for SSE (documented)', () => {
  it('single connection mode: a backend without it (graphql-yoga alone) refuses the PUT reservation with 405, relayed, and the client reports it', async () => {
    const p = await plainProxy()
    const client = createClient({ url: `${p.url}/graphql`, singleConnection: true, retryAttempts: 0 })
    try {
      const { results, error } = await collect(client.iterate({ query: '{ hello }' }))
      expect(results).toEqual([])
      expect(error).toBeInstanceOf(NetworkError)
      expect((error as NetworkError<Response>).response?.status).toBe(405)
    } finally {
      client.dispose()
    }
  })

  // Fixed in sweep 34f (proxy/exchange.ts with proxy/worker-proxy.ts's drain): on SIGTERM a
  // relayed WebSocket gets 1001 at once, but an SSE subscription, an HTTP request in flight, held
  // the drain for all of shutdown.drainTimeoutMs (10 s by default: every rollout with one SSE
  // subscriber took that long per pod), then was cut. Now the drain ends it at its start, after
  // the last whole event the client got: the upstream transfer stopped, the client's stream ended
  // cleanly (graphql-sse reports a NetworkError and, with retryAttempts, resubscribes — elsewhere),
  // logged as the gateway's doing, not as the client leaving nor as the upstream failing.
  it('a drain ends an open SSE subscription at once, as it sends WebSockets 1001', async () => {
    // A drain held by the subscription lasts drainTimeoutMs: far above the bound below, which
    // leaves a loaded machine seconds for the close itself (a passing run waits neither out).
    const p = await startTestProxy({ shutdown: { drainTimeoutMs: 15_000, idleGraceMs: 0 }, routes: [{ name: 'g', upstream: be.url, type: 'graphql' }] } as never)
    const client = createClient({ url: `${p.url}/graphql`, retryAttempts: 0 })
    try {
      const sub = client.iterate({ query: COUNTDOWN(100, 200) })
      await sub.next()
      const started = performance.now()
      const ended = collect(sub).then((r) => ({ ...r, ms: performance.now() - started }))
      await p.close()
      expect(performance.now() - started).toBeLessThan(5_000)
      const { results, error, ms } = await ended
      expect(ms).toBeLessThan(5_000)
      // Whole events only, then the end of the stream (no `complete`: the subscription did not finish).
      expect(countdowns(results).every((n) => typeof n === 'number')).toBe(true)
      expect(error).toBeInstanceOf(NetworkError)
      await expect.poll(() => be.liveSubscriptions(), { timeout: 5000, interval: 20 }).toBe(0)
      expect(p.logs.find('subscription stream ended: gateway draining')).toHaveLength(1)
      expect(p.logs.find('upstream failed mid-response')).toHaveLength(0)
      expect(p.logs.find('drain deadline reached; closing remaining connections')).toHaveLength(0)
      const line = p.logs.find('access').find((l) => l.route === 'g')
      expect(line?.status).toBe(200)
      expect([line?.code, line?.aborted]).toEqual([undefined, undefined])
    } finally {
      client.dispose()
      await p.close()
    }
  })

  // Fixed in sweep 34f (proxy/exchange.ts): a subscription relayed over HTTP was a request like any
  // other to the exchange, so the route's totalMs (60 s by default) cut it mid-stream — socket
  // destroyed, the client saw `terminated` and graphql-sse resubscribed from the start (events
  // published meanwhile lost) — while a terminated WebSocket subscription lives as long as it
  // likes. Once the head of a GraphQL subscription's stream is out, the deadline is lifted for
  // the body; bodyIdleMs, which keep-alive comments satisfy, still ends a stream that stalls
  // (sse-subscription-lifetime-sweep34f.test.ts).
  it('a subscription outlives the route\'s totalMs (bodyIdleMs still bounds a stalled one)', async () => {
    const p = await startTestProxy({ routes: [{ name: 'g', upstream: be.url, type: 'graphql', timeouts: { totalMs: 700 } }] } as never)
    const client = createClient({ url: `${p.url}/graphql`, retryAttempts: 0 })
    try {
      // 1.5 s of events: twice the route's totalMs.
      const { results, error } = await collect(client.iterate({ query: COUNTDOWN(5, 300) }))
      expect(error).toBeUndefined()
      expect(countdowns(results)).toEqual([5, 4, 3, 2, 1])
    } finally {
      client.dispose()
      await p.close()
    }
  })
})
