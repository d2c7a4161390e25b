import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { echoHandler, startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/** Send raw HTTP/1.1 bytes and read the full response (closes after one exchange). */
function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(text))
    let out = ''
    s.on('data', (d) => (out += d.toString()))
    s.on('end', () => resolve(out))
    s.on('error', reject)
  })
}

describe('proxy semantics against a real backend', () => {
  let echo: RawBackend
  let yoga: DemoBackend
  let proxy: TestProxy

  beforeAll(async () => {
    echo = await startRawBackend((req, res) => {
      if (req.url === '/hop') {
        res.writeHead(200, { 'content-type': 'text/plain', connection: 'keep-alive, x-secret-hop', 'x-secret-hop': 'drop me', 'keep-alive': 'timeout=5', 'proxy-authenticate': 'Basic', 'x-kept': 'yes' })
        res.end('hop')
        return
      }
      echoHandler(req, res)
    })
    yoga = await startDemoBackend()
    proxy = await startTestProxy({
      mode: 'ingress',
      upstreams: { echo: { url: echo.url }, yoga: { url: yoga.url } },
      routes: [
        { name: 'echo', match: { pathPrefix: '/echo' }, upstream: 'echo', type: 'http' },
        { name: 'rewritten', match: { host: 'rewrite.example.com' }, upstream: 'echo', type: 'http', hostRewrite: 'backend.internal' },
        { name: 'graphql', match: { pathPrefix: '/graphql' }, upstream: 'yoga', type: 'graphql', maxBodyBytes: 1024 },
        { name: 'gql-echo', match: { pathPrefix: '/gql-echo' }, upstream: 'echo', type: 'graphql' },
        { name: 'gql-slow', match: { pathPrefix: '/gql-slow' }, upstream: 'echo', type: 'graphql', timeouts: { totalMs: 300 } },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await echo?.close()
    await yoga?.close()
  })

  it('strips hop-by-hop request headers, including those Connection names', async () => {
    const res = await rawRequest(
      proxy.port,
      'GET /echo/x HTTP/1.1\r\nHost: a.example\r\nConnection: close, x-private\r\nx-private: secret\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\nProxy-Foo: bar\r\nUpgrade: h2c\r\nx-normal: 1\r\n\r\n',
    )
    const body = JSON.parse(res.slice(res.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> }
    for (const h of ['x-private', 'keep-alive', 'te', 'proxy-authorization', 'proxy-foo', 'upgrade', 'trailer']) expect(body.headers[h]).toBeUndefined()
    expect(body.headers['x-normal']).toBe('1')
  })

  it('appends X-Forwarded-For and sets X-Forwarded-Proto/Host, keeps Host', async () => {
    const res = await request(`${proxy.url}/echo/fwd`, { headers: { 'x-forwarded-for': '203.0.113.9', host: 'app.example.com' } })
    const body = (await res.body.json()) as { headers: Record<string, string> }
    expect(body.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1')
    expect(body.headers['x-forwarded-proto']).toBe('http')
    expect(body.headers['x-forwarded-host']).toBe('app.example.com')
    expect(body.headers.host).toBe('app.example.com')
  })

  it('rewrites Host when the route says so', async () => {
    const res = await request(`${proxy.url}/anything`, { headers: { host: 'rewrite.example.com' } })
    const body = (await res.body.json()) as { headers: Record<string, string> }
    expect(body.headers.host).toBe('backend.internal')
    expect(body.headers['x-forwarded-host']).toBe('rewrite.example.com')
  })

  it('keeps a well-formed x-request-id and echoes it; generates one otherwise; passes traceparent', async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    const kept = await request(`${proxy.url}/echo/id`, { headers: { 'x-request-id': 'abc-123', traceparent: tp } })
    const keptBody = (await kept.body.json()) as { headers: Record<string, string> }
    expect(keptBody.headers['x-request-id']).toBe('abc-123')
    expect(keptBody.headers.traceparent).toBe(tp)
    expect(kept.headers['x-request-id']).toBe('abc-123')

    const made = await request(`${proxy.url}/echo/id`, { headers: { 'x-request-id': 'bad id with spaces and <script>' } })
    const madeBody = (await made.body.json()) as { headers: Record<string, string> }
    expect(madeBody.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
    expect(made.headers['x-request-id']).toBe(madeBody.headers['x-request-id'])
  })

  it('hop-by-hop response headers never reach the client', async () => {
    const hopProxy = await startTestProxy({ routes: [{ name: 'hop', upstream: echo.url, type: 'http' }] })
    try {
      const res = await request(`${hopProxy.url}/hop`)
      expect(await res.body.text()).toBe('hop')
      expect(res.headers['x-kept']).toBe('yes')
      expect(res.headers['x-secret-hop']).toBeUndefined()
      expect(res.headers['proxy-authenticate']).toBeUndefined()
      expect(res.headers['keep-alive']).not.toBe('timeout=5')
    } finally {
      await hopProxy.close()
    }
  })

  it('proxies GraphQL to graphql-yoga and forwards the original body bytes', async () => {
    const body = '{"query":"{ hello(name: \\"gw\\") }"}'
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    expect(res.statusCode).toBe(200)
    expect(await res.body.json()).toEqual({ data: { hello: 'Hello, gw!' } })
    const echoed = await request(`${proxy.url}/gql-echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    const e = (await echoed.body.json()) as { size: number; headers: Record<string, string> }
    expect(e.size).toBe(Buffer.byteLength(body))
    expect(e.headers['content-length']).toBe(String(Buffer.byteLength(body)))
  })

  it('relays request bodies with a Content-Length on http routes and keeps serving afterwards', async () => {
    // undici destroys a request stream it has sent as the upstream body, and a destroyed
    // IncomingMessage drops its socket: the end of the exchange (export byte count) once read
    // req.socket there and crashed the worker thread after every such request.
    for (let i = 0; i < 3; i++) {
      const body = `payload ${i} `.repeat(100)
      const res = await request(`${proxy.url}/echo/upload`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body })
      expect(res.statusCode).toBe(200)
      const e = (await res.body.json()) as { size: number; headers: Record<string, string> }
      expect(e.size).toBe(body.length)
      expect(e.headers['content-length']).toBe(String(body.length))
    }
    const closing = await rawRequest(proxy.port, 'PUT /echo/put HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello')
    expect(closing).toMatch(/^HTTP\/1.1 200/)
    const after = await request(`${proxy.url}/echo/after`)
    expect(after.statusCode).toBe(200)
    await after.body.dump()
    expect(metricSum(await proxy.metricsText(), 'igw_worker_restarts_total')).toBe(0)
    expect(proxy.logs.find('uncaught exception in worker')).toEqual([])
  })

  it('malformed GraphQL JSON → 400 with a GraphQL-shaped error, counted', async () => {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": ' })
    expect(res.statusCode).toBe(400)
    expect(res.headers['content-type']).toMatch(/application\/json/)
    const body = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(body.errors[0]!.extensions.code).toBe('BAD_REQUEST')
    expect(body.errors[0]!.message).toMatch(/Malformed JSON/)
    const notGraphQL = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"hello":1}' })
    expect(notGraphQL.statusCode).toBe(400)
    expect(((await notGraphQL.body.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/query/)
    const badVars = await request(`${proxy.url}/graphql?query=%7Bhello%7D&variables=%7Bnope`)
    expect(badVars.statusCode).toBe(400)
    await badVars.body.dump()
    const metrics = await proxy.metricsText()
    expect(metrics).toMatch(/igw_proxy_errors_total\{route="graphql",code="BAD_REQUEST"\} [3-9]/)
  })

  it('body over the route limit → 413, with Content-Length and chunked', async () => {
    const big = JSON.stringify({ query: `{ hello(name: "${'x'.repeat(2000)}") }` })
    const declared = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: big })
    expect(declared.statusCode).toBe(413)
    expect(((await declared.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('PAYLOAD_TOO_LARGE')
    const raw = await rawRequest(
      proxy.port,
      `POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`,
    )
    expect(raw).toMatch(/^HTTP\/1.1 413/)
    expect(raw).toContain('PAYLOAD_TOO_LARGE')
  })

  it('refuses JSON nested deeper than 128 levels with 400 before any filter or the upstream sees it', async () => {
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`
    const post = await request(`${proxy.url}/gql-echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"query":"{ a }","variables":{"a":${deep(30_000)}}}` })
    expect(post.statusCode).toBe(400)
    const e = (await post.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(e.errors[0]!.extensions.code).toBe('BAD_REQUEST')
    expect(e.errors[0]!.message).toMatch(/nested deeper than 128 levels/)
    const get = await request(`${proxy.url}/gql-echo?query=%7Ba%7D&variables=${encodeURIComponent(`{"a":${deep(200)}}`)}`)
    expect(get.statusCode).toBe(400)
    expect(((await get.body.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/"variables" parameter nested deeper/)
    // 127 levels of arrays inside the body object: 128 in all, accepted and forwarded as sent
    const ok = `{"query":"{ a }","variables":{"a":${deep(126)}}}`
    const fine = await request(`${proxy.url}/gql-echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: ok })
    expect(fine.statusCode).toBe(200)
    expect(((await fine.body.json()) as { size: number }).size).toBe(ok.length)
  })

  it('GraphQL routes refuse bodies they cannot read (415) and methods GraphQL over HTTP does not use (405)', async () => {
    for (const [type, body] of [
      ['application/graphql', '{ hello }'],
      ['application/x-www-form-urlencoded', 'query=%7B%20hello%20%7D'],
      ['multipart/form-data; boundary=x', '--x\r\ncontent-disposition: form-data; name="operations"\r\n\r\n{"query":"{ hello }"}\r\n--x--\r\n'],
    ] as const) {
      const res = await request(`${proxy.url}/gql-echo`, { method: 'POST', headers: { 'content-type': type }, body })
      expect(res.statusCode).toBe(415)
      const e = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
      expect(e.errors[0]!.extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE')
      expect(e.errors[0]!.message).toContain(type)
    }
    // PUT and DELETE are relayed bodiless (graphql-sse's single connection mode): with a body, 400.
    for (const [method, status, code] of [['PATCH', 405, 'METHOD_NOT_ALLOWED'], ['PUT', 400, 'BAD_REQUEST'], ['DELETE', 400, 'BAD_REQUEST']] as const) {
      const res = await request(`${proxy.url}/gql-echo`, { method, headers: { 'content-type': 'application/json' }, body: '{"query":"{ a }"}' })
      expect(res.statusCode).toBe(status)
      if (status === 405) expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, DELETE, OPTIONS') // HEAD is served (below)
      expect(((await res.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe(code)
    }
    // CORS preflights and HEAD still reach the backend
    const options = await request(`${proxy.url}/gql-echo`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } })
    expect(options.statusCode).toBe(200)
    expect(((await options.body.json()) as { method: string }).method).toBe('OPTIONS')
    const head = await request(`${proxy.url}/gql-echo?query=%7Ba%7D`, { method: 'HEAD' })
    expect(head.statusCode).toBe(200)
    await head.body.dump()
    const m = await proxy.metricsText()
    expect(metricSum(m, 'igw_proxy_errors_total', 'code="UNSUPPORTED_MEDIA_TYPE"')).toBeGreaterThanOrEqual(3)
    expect(metricSum(m, 'igw_proxy_errors_total', 'code="METHOD_NOT_ALLOWED"')).toBeGreaterThanOrEqual(1)
    expect(metricSum(m, 'igw_proxy_errors_total', 'code="BAD_REQUEST"')).toBeGreaterThanOrEqual(2)
  })

  it('a GraphQL body that does not arrive within the route timeout gets 408 and the connection is closed', async () => {
    const t0 = Date.now()
    const reply = await new Promise<string>((resolve, reject) => {
      const s = connect(proxy.port, '127.0.0.1', () => s.write('POST /gql-slow HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{"query":'))
      let out = ''
      s.on('data', (d) => (out += d.toString()))
      s.on('end', () => resolve(out))
      s.on('error', reject)
      setTimeout(() => reject(new Error(`no answer; got ${JSON.stringify(out)}`)), 5_000).unref()
    })
    const waited = Date.now() - t0
    expect(reply).toMatch(/^HTTP\/1.1 408/)
    expect(reply).toContain('REQUEST_TIMEOUT')
    expect(reply).toMatch(/connection: close/i)
    expect(waited).toBeGreaterThanOrEqual(250)
    expect(metricSum(await proxy.metricsText(), 'igw_proxy_errors_total', 'code="REQUEST_TIMEOUT"')).toBe(1)
    // a body that comes whole in time still passes the same route
    const fine = await request(`${proxy.url}/gql-slow`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ a }"}' })
    expect(fine.statusCode).toBe(200)
    await fine.body.dump()
  })

  it('Expect: 100-continue invites the body only when it will be read', async () => {
    /** Sends the head, waits for the first answer, then (if it is a 100) the body; returns everything received. */
    const expectContinue = (path: string, length: number, body: string, expectation = '100-continue') =>
      new Promise<string>((resolve, reject) => {
        const s = connect(proxy.port, '127.0.0.1', () => s.write(`POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\nexpect: ${expectation}\r\nconnection: close\r\n\r\n`))
        let out = ''
        let sent = false
        s.on('data', (d) => {
          out += d.toString()
          if (!sent && out.startsWith('HTTP/1.1 100')) {
            sent = true
            s.write(body)
          }
        })
        s.on('end', () => resolve(out))
        s.on('error', reject)
        setTimeout(() => reject(new Error(`no answer; got ${JSON.stringify(out)}`)), 5_000).unref()
      })
    // over the limit (1 KiB on /graphql): 413 at once, no 100 first
    const refused = await expectContinue('/graphql', 5000, '')
    expect(refused).toMatch(/^HTTP\/1.1 413/)
    expect(refused).not.toContain('100 Continue')
    // within the limit: 100, then the body, then the answer — on a GraphQL route and an http route
    const body = '{"query":"{ hello(name: \\"continue\\") }"}'
    const gql = await expectContinue('/graphql', Buffer.byteLength(body), body)
    expect(gql).toMatch(/^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200/)
    expect(gql).toContain('Hello, continue!')
    const echoed = await expectContinue('/echo/upload', 7, 'payload')
    expect(echoed).toMatch(/^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200/)
    expect(echoed).toContain('"size":7')
    // Node recognizes 100-continue inside a longer Expect value too: the invitation still comes
    const listed = await expectContinue('/echo/upload', 7, 'payload', '100-Continue, x-other')
    expect(listed).toMatch(/^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200/)
  })

  it('unmatched host/path → 404 GraphQL-shaped', async () => {
    const res = await request(`${proxy.url}/nowhere`)
    expect(res.statusCode).toBe(404)
    expect(((await res.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('NOT_FOUND')
  })

  it('writes one access log line per request with route, status, request id and timings', async () => {
    await (await request(`${proxy.url}/echo/log`, { headers: { 'x-request-id': 'log-me-1' } })).body.dump()
    await (await request(`${proxy.url}/echo/log`, { headers: { 'x-request-id': 'log-me-2', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } })).body.dump()
    await new Promise((r) => setTimeout(r, 100))
    const line = proxy.logs.find('access').find((l) => l.reqId === 'log-me-1')
    expect(line).toMatchObject({ method: 'GET', route: 'echo', status: 200, path: '/echo/log' })
    expect(line!.traceId).toBeUndefined()
    expect(typeof line!.upstreamMs).toBe('number')
    expect(typeof line!.filterMs).toBe('number')
    expect(typeof line!.durMs).toBe('number')
    expect(proxy.logs.find('access').find((l) => l.reqId === 'log-me-2')!.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736')
  })

  it('labels requests by tenant tier and durations by GraphQL operation type', async () => {
    await (await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })).body.dump()
    await (await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"mutation { updateEntity(id: \\"9\\", name: \\"x\\") { id } }"}' })).body.dump()
    const m = await proxy.metricsText()
    expect(m).toMatch(/igw_requests_total\{route="graphql",status="200",tier=""\} \d+/)
    expect(m).toMatch(/igw_request_duration_seconds_count\{route="graphql",op="query"\} [1-9]/)
    expect(m).toMatch(/igw_request_duration_seconds_count\{route="graphql",op="mutation"\} [1-9]/)
    expect(m).toMatch(/igw_request_duration_seconds_count\{route="echo",op="none"\} [1-9]/)
  })
})
