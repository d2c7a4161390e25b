// GraphQL over SSE ("distinct connections mode"): a client whose Accept names only
// text/event-stream — the graphql-sse client, a browser's or undici's EventSource. graphql-yoga
// answers such a client its own request errors as an event stream (200, a `next` event with the
// errors, `complete`), as the protocol (graphql-sse PROTOCOL.md) asks for errors found before
// execution. igw answered its own errors as a 4xx/5xx application/json body: the graphql-sse
// client took a 401/429/400 for a network failure and retried it five times (Retry-After unread),
// then reported only "Server responded with 401"; an EventSource failed the connection with an
// error event carrying nothing. Neither let the app read extensions.code. Now a 4xx goes as the
// stream yoga sends (status counted as the 4xx it stands for); a 5xx stays as it was (the
// client's retry of a failing upstream stays). Real igw (worker thread) in front of the real
// yoga demo backend, the real graphql-sse client, undici's EventSource.
import { createClient, NetworkError, type Client, type ExecutionResult } from 'graphql-sse'
import { EventSource, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'sweep34a-hmac-secret-of-at-least-32-chars!'

let yoga: DemoBackend
let proxy: TestProxy
beforeAll(async () => {
  yoga = await startDemoBackend()
  proxy = await startTestProxy({
    mode: 'ingress',
    tenants: { acme: {} },
    quotas: { tenants: { acme: { graphql: { limitPerDay: 1 } } } },
    routes: [
      { name: 'open', match: { pathPrefix: '/graphql' }, upstream: yoga.url, type: 'graphql' },
      { name: 'auth', match: { pathPrefix: '/auth/' }, upstream: yoga.url, type: 'graphql', filters: [{ name: 'tenant', jwt: { secret: SECRET } }] },
      { name: 'metered', match: { pathPrefix: '/metered/' }, upstream: yoga.url, type: 'graphql', filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'quota' }] },
      { name: 'down', match: { pathPrefix: '/down/' }, upstream: 'http://127.0.0.1:9', type: 'graphql' },
      { name: 'checked', match: { pathPrefix: '/checked/' }, upstream: yoga.url, type: 'graphql', filters: [{ name: 'persisted' }] },
    ],
  } as never)
  // The day's one unit: every later request on `metered` is over quota.
  const first = await request(`${proxy.url}/metered/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
  expect(first.statusCode).not.toBe(429)
  await first.body.dump()
})
afterAll(async () => {
  await proxy?.close()
  await yoga?.close()
})

type Outcome = { results: ExecutionResult[]; completed: boolean; error?: unknown; body?: string; retries: number }

/** One operation through the real graphql-sse client (distinct connections mode); its retries waited out at once. */
function viaGraphqlSse(path: string, payload: { query: string; variables?: unknown }, retryAttempts = 5): Promise<Outcome> {
  let retries = 0
  const client: Client = createClient({
    url: `${proxy.url}${path}`,
    retryAttempts,
    retry: async () => {
      retries++
    },
  })
  const results: ExecutionResult[] = []
  return new Promise<Outcome>((resolve) => {
    client.subscribe(payload as never, {
      next: (r) => results.push(r as ExecutionResult),
      complete: () => resolve({ results, completed: true, retries }),
      // (the failed response's body, read before dispose() aborts the client's fetches)
      error: (error) => {
        const res = error instanceof NetworkError ? (error as NetworkError<Response>).response : undefined
        void (res === undefined ? Promise.resolve(undefined) : res.text()).then((body) => resolve({ results, completed: false, error, body, retries }))
      },
    })
  }).finally(() => client.dispose())
}

type Seen = { events: { type: string; data: string }[]; failed: boolean; readyState: number }

/** A GET through undici's EventSource, closed on `complete` as the protocol has it (or on a failed connection). */
function viaEventSource(path: string): Promise<Seen> {
  return new Promise<Seen>((resolve, reject) => {
    const es = new EventSource(`${proxy.url}${path}`)
    const events: Seen['events'] = []
    const timer = setTimeout(() => {
      es.close()
      reject(new Error(`EventSource saw neither complete nor a failure: ${JSON.stringify(events)}`))
    }, 10_000)
    const done = (failed: boolean) => {
      clearTimeout(timer)
      const readyState = es.readyState
      es.close()
      resolve({ events, failed, readyState })
    }
    es.addEventListener('next', (e) => events.push({ type: 'next', data: (e as MessageEvent).data as string }))
    es.addEventListener('complete', () => {
      events.push({ type: 'complete', data: '' })
      done(false)
    })
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) done(true) // failed for good (a reconnect would be CONNECTING)
    }
  })
}

const codeOf = (r: ExecutionResult | undefined) => (r?.errors?.[0] as { extensions?: { code?: string } } | undefined)?.extensions?.code
const gqlGet = (path: string, query: string, extra = '') => `${path}?query=${encodeURIComponent(query)}${extra}`

describe('graphql-sse client (distinct connections mode) through igw', () => {
  it('a query yoga answers comes through as its event stream (the control)', async () => {
    const r = await viaGraphqlSse('/graphql', { query: '{ hello(name: "sse") }' })
    expect(r.completed).toBe(true)
    expect(r.results).toEqual([{ data: { hello: 'Hello, sse!' } }])
  })

  it.each([
    ['tenant 401 (no token)', '/auth/graphql', { query: '{ hello }' }, 'UNAUTHENTICATED'],
    ['quota 429', '/metered/graphql', { query: '{ hello }' }, 'QUOTA_EXCEEDED'],
    ['a request igw cannot parse (400)', '/graphql', { query: '{ hello }', variables: 'not an object' }, 'BAD_REQUEST'],
    ['a document that does not parse, refused by the persisted filter (400)', '/checked/graphql', { query: '{ hello' }, 'BAD_REQUEST'],
  ])('%s: the app gets the error result with its code, the operation completes, nothing is retried', async (_what, path, payload, code) => {
    const r = await viaGraphqlSse(path, payload)
    expect(r.error).toBeUndefined()
    expect(r.completed).toBe(true)
    expect(r.retries).toBe(0)
    expect(r.results).toHaveLength(1)
    expect(codeOf(r.results[0])).toBe(code)
  })

  it('the quota refusal carries its retry hint in the result too', async () => {
    const r = await viaGraphqlSse('/metered/graphql', { query: '{ hello }' })
    expect((r.results[0]!.errors![0] as { extensions: { retryAfterSeconds?: number } }).extensions.retryAfterSeconds).toBeGreaterThan(0)
  })

  it('upstream down (502) stays a failure the client retries with its backoff, then reports with the response', async () => {
    const r = await viaGraphqlSse('/down/graphql', { query: '{ hello }' }, 2)
    expect(r.completed).toBe(false)
    expect(r.retries).toBe(2)
    expect(r.error).toBeInstanceOf(NetworkError)
    const res = (r.error as NetworkError<Response>).response!
    expect(res.status).toBe(502)
    // An app that reads the failed response gets the code there, as JSON.
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8')
    expect(JSON.parse(r.body!)).toMatchObject({ errors: [{ extensions: { code: 'UPSTREAM_UNAVAILABLE' } }] })
  })
})

describe("undici's EventSource (GET) through igw", () => {
  it.each([
    ['tenant 401 (no token)', gqlGet('/auth/graphql', '{ hello }'), 'UNAUTHENTICATED'],
    ['quota 429', gqlGet('/metered/graphql', '{ hello }'), 'QUOTA_EXCEEDED'],
    ['a request igw cannot parse (400)', gqlGet('/graphql', '{ hello }', '&variables=not-json'), 'BAD_REQUEST'],
    ['a document that does not parse, refused by the persisted filter (400)', gqlGet('/checked/graphql', '{ hello'), 'BAD_REQUEST'],
  ])('%s: a next event with the code, then complete (it was a bare error event)', async (_what, path, code) => {
    const seen = await viaEventSource(path)
    expect(seen.failed).toBe(false)
    expect(seen.events.map((e) => e.type)).toEqual(['next', 'complete'])
    expect(codeOf(JSON.parse(seen.events[0]!.data) as ExecutionResult)).toBe(code)
  })

  it('upstream down (502): the connection fails (as for any non-200), and is not re-established', async () => {
    const seen = await viaEventSource(gqlGet('/down/graphql', '{ hello }'))
    expect(seen.failed).toBe(true)
    expect(seen.readyState).toBe(EventSource.CLOSED)
    expect(seen.events).toEqual([])
  })
})

describe('the answer on the wire', () => {
  const sse = { accept: 'text/event-stream', 'content-type': 'application/json' }

  it('429: 200 text/event-stream, Retry-After kept and as the retry field, not cacheable; counted as the 429 it is', async () => {
    const r = await request(`${proxy.url}/metered/graphql`, { method: 'POST', headers: sse, body: '{"query":"{ hello }"}' })
    expect(r.statusCode).toBe(200)
    expect(r.headers['content-type']).toBe('text/event-stream')
    expect(r.headers['cache-control']).toBe('no-store')
    const after = Number(r.headers['retry-after'])
    expect(after).toBeGreaterThan(0)
    const text = await r.body.text()
    expect(r.headers['content-length']).toBe(String(Buffer.byteLength(text)))
    expect(text).toMatch(new RegExp(`^retry: ${after * 1000}\nevent: next\ndata: \\{"errors":\\[.*"code":"QUOTA_EXCEEDED".*\\}\n\nevent: complete\ndata:\n\n$`))
    let line: Record<string, unknown> | undefined
    for (let i = 0; i < 100 && line === undefined; i++) {
      line = proxy.logs.find('access').findLast((l) => l.route === 'metered' && l.code === 'QUOTA_EXCEEDED')
      if (line === undefined) await new Promise((res) => setTimeout(res, 20))
    }
    expect(line?.status).toBe(429)
  })

  it('502 stays a 502 with its JSON body', async () => {
    const r = await request(`${proxy.url}/down/graphql`, { method: 'POST', headers: sse, body: '{"query":"{ hello }"}' })
    expect([r.statusCode, r.headers['content-type']]).toEqual([502, 'application/json; charset=utf-8'])
    expect(await r.body.json()).toMatchObject({ errors: [{ extensions: { code: 'UPSTREAM_UNAVAILABLE' } }] })
  })

  it('401 keeps its WWW-Authenticate challenge', async () => {
    const r = await request(`${proxy.url}/auth/graphql`, { method: 'POST', headers: sse, body: '{"query":"{ hello }"}' })
    expect(r.statusCode).toBe(200)
    expect(r.headers['www-authenticate']).toMatch(/^Bearer/)
    expect(await r.body.text()).toContain('"code":"UNAUTHENTICATED"')
  })

  it("igw's answer is framed as yoga frames its own request errors to the same client", async () => {
    // yoga's own: a document that does not parse, relayed (igw does not parse documents here).
    const fromYoga = await request(`${proxy.url}/graphql`, { method: 'POST', headers: sse, body: '{"query":"{"}' })
    const yogaText = await fromYoga.body.text()
    const fromIgw = await request(`${proxy.url}/graphql`, { method: 'POST', headers: sse, body: '{"query":"{ hello }","variables":"x"}' })
    const igwText = await fromIgw.body.text()
    expect([fromIgw.statusCode, fromIgw.headers['content-type']]).toEqual([fromYoga.statusCode, fromYoga.headers['content-type']])
    const frame = (t: string) => t.replace(/^:\n\n/, '').replace(/data: \{.*\}\n/, 'data: {…}\n')
    expect(frame(igwText)).toBe(frame(yogaText))
  })

  it('a client that takes JSON too (or only) still gets JSON and the 4xx', async () => {
    for (const accept of ['application/json', 'text/event-stream, application/json', 'text/event-stream, */*', 'text/event-stream;q=0']) {
      const r = await request(`${proxy.url}/auth/graphql`, { method: 'POST', headers: { ...sse, accept }, body: '{"query":"{ hello }"}' })
      expect([accept, r.statusCode, r.headers['content-type']]).toEqual([accept, 401, 'application/json; charset=utf-8'])
      await r.body.dump()
    }
  })
})
