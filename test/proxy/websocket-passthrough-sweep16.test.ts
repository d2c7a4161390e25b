// WebSocket passthrough: what the handshake answers carry, and how a client that breaks the
// protocol is closed on both sides. Real proxy, a real ws backend, real ws clients.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

interface Backend {
  server: Server
  wss: WebSocketServer
  url: string
  closes: { path: string; code: number; reason: string }[]
  upgrades: IncomingMessage[]
}

async function startBackend(): Promise<Backend> {
  const server = createServer()
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => p.values().next().value ?? false })
  const be: Backend = { server, wss, url: '', closes: [], upgrades: [] }
  // A backend that sets a session cookie (and a header of its own) on its 101, as load
  // balancers and auth proxies do for sticky sessions.
  wss.on('headers', (headers, req) => {
    if (req.url === '/cookie') headers.push('Set-Cookie: sid=abc123; Path=/; HttpOnly', 'X-Backend-Node: b1', 'X-Backend-Name: café')
  })
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    be.upgrades.push(req)
    if (req.url === '/hang') return // accepts the connection, never answers the upgrade
    if (req.url === '/deny') {
      socket.end('HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm="api"\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{"error":"no token"}\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (d, isBinary) => {
        if (d.toString() === 'send-big') ws.send('y'.repeat(2048))
        else ws.send(d, { binary: isBinary })
      })
      ws.on('close', (code, reason) => be.closes.push({ path: req.url ?? '', code, reason: reason.toString() }))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  be.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return be
}

function closeBackend(be: Backend | undefined): void {
  if (be === undefined) return
  for (const ws of be.wss.clients) ws.terminate()
  be.wss.close()
  be.server.closeAllConnections()
  be.server.close()
}

/** The answer to an upgrade the proxy refused: status, headers, body. */
async function refusal(ws: WebSocket): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  ws.on('error', () => undefined)
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage]
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (c: string) => (body += c))
  await once(res, 'end')
  ws.terminate()
  return { status: res.statusCode ?? 0, headers: res.headers, body }
}

async function metrics(p: TestProxy): Promise<string> {
  const res = await fetch(`${p.adminUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })
  return res.text()
}

describe('WebSocket passthrough: the handshake answers carry their headers', () => {
  let be: Backend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startBackend()
    proxy = await startTestProxy({
      tenants: { acme: {}, lim: {} },
      quotas: { tenants: { lim: { subscriptions: { rate: 0.001, burst: 1 } } } },
      routes: [{ name: 'ws', upstream: be.url, type: 'http', filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    closeBackend(be)
  })

  const url = (path: string) => `ws://127.0.0.1:${proxy.port}${path}`

  it("the client's 101 carries the backend's 101 headers (Set-Cookie) and the echoed x-request-id", async () => {
    const ws = new WebSocket(url('/cookie'), ['graphql-transport-ws'], { headers: { 'x-tenant-id': 'acme' }, handshakeTimeout: 5_000 })
    let head: IncomingMessage['headers'] = {}
    ws.on('upgrade', (res: IncomingMessage) => (head = res.headers))
    await once(ws, 'open')
    expect(ws.protocol).toBe('graphql-transport-ws')
    expect(head['set-cookie']).toEqual(['sid=abc123; Path=/; HttpOnly'])
    expect(head['x-backend-node']).toBe('b1')
    // byte for byte: the backend wrote UTF-8, node's parser shows its bytes as latin1
    expect(Buffer.from(head['x-backend-name'] as string, 'latin1').toString()).toBe('café')
    // the request id the backend saw is the one the client is told
    const sent = be.upgrades.at(-1)!.headers['x-request-id']
    expect(sent).toMatch(/^[0-9a-f-]{36}$/)
    expect(head['x-request-id']).toBe(sent)
    // the handshake headers are the proxy's own (ws checked the accept key already)
    expect(head['sec-websocket-protocol']).toBe('graphql-transport-ws')
    expect(head.upgrade).toBe('websocket')
    ws.send('still relays')
    const [msg] = (await once(ws, 'message')) as [Buffer]
    expect(msg.toString()).toBe('still relays')
    ws.close(1000)
    await once(ws, 'close')
  })

  it('a rate-limited upgrade keeps Retry-After, RateLimit and x-request-id', async () => {
    // burst 1: the first upgrade takes the token, the second is refused by the quota filter
    const first = new WebSocket(url('/x'), { headers: { 'x-tenant-id': 'lim' }, handshakeTimeout: 5_000 })
    await once(first, 'open')
    first.close()
    await once(first, 'close')
    const limited = await refusal(new WebSocket(url('/x'), { headers: { 'x-tenant-id': 'lim' }, handshakeTimeout: 5_000 }))
    expect(limited.status).toBe(429)
    expect(JSON.parse(limited.body)).toMatchObject({ errors: [{ extensions: { code: 'RATE_LIMITED' } }] })
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0)
    expect(limited.headers.ratelimit).toMatch(/rate/)
    expect(limited.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
  })
})

describe('WebSocket passthrough: refusals carry their headers and the request id', () => {
  let be: Backend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startBackend()
    proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: be.url, type: 'http', timeouts: { headersMs: 1_500 } }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    closeBackend(be)
  })

  it('401 with WWW-Authenticate and body, plus x-request-id', async () => {
    const denied = await refusal(new WebSocket(`ws://127.0.0.1:${proxy.port}/deny`, { handshakeTimeout: 5_000 }))
    expect(denied.status).toBe(401)
    expect(denied.headers['www-authenticate']).toBe('Bearer realm="api"')
    expect(denied.headers['content-type']).toBe('application/json')
    expect(denied.body).toBe('{"error":"no token"}\n')
    const sent = be.upgrades.at(-1)!.headers['x-request-id']
    expect(sent).toMatch(/^[0-9a-f-]{36}$/)
    expect(denied.headers['x-request-id']).toBe(sent)
  })

  it("the proxy's own 504 for a backend that never answers the upgrade carries the request id too", async () => {
    const timedOut = await refusal(new WebSocket(`ws://127.0.0.1:${proxy.port}/hang`, { handshakeTimeout: 10_000, headers: { 'x-request-id': 'client-chosen-id-1' } }))
    expect(timedOut.status).toBe(504)
    expect(JSON.parse(timedOut.body)).toMatchObject({ errors: [{ extensions: { code: 'UPSTREAM_TIMEOUT' } }] })
    expect(timedOut.headers['x-request-id']).toBe(be.upgrades.at(-1)!.headers['x-request-id'])
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="UPSTREAM_TIMEOUT"'), { timeout: 10_000 }).toBe(1)
  })
})

describe('WebSocket passthrough: a client that breaks the protocol', () => {
  let be: Backend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startBackend()
    proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: be.url, type: 'http', websocket: { maxMessageBytes: 1024 } }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    closeBackend(be)
  })

  it('a message over maxMessageBytes: the client gets 1009, the backend a close frame (1001 and why), counted and logged', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/big`, { handshakeTimeout: 5_000 })
    await once(ws, 'open')
    ws.send('ok')
    await once(ws, 'message')
    ws.send('x'.repeat(2048))
    const [code] = (await once(ws, 'close')) as [number]
    expect(code).toBe(1009)
    await waitUntil(() => be.closes.some((c) => c.path === '/big'), 10_000, 'backend close')
    const seen = be.closes.find((c) => c.path === '/big')!
    // was 1006: the backend's socket was cut without a close frame
    expect(seen.code).toBe(1001)
    expect(seen.reason).toMatch(/^client: .*payload/i)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="PAYLOAD_TOO_LARGE"'), { timeout: 10_000 }).toBe(1)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_websocket_connections'), { timeout: 10_000 }).toBe(0)
    // log lines cross from the worker thread: wait for it
    await expect.poll(() => proxy.logs.find('websocket client broke the protocol; closed').length, { timeout: 10_000 }).toBe(1)
    const logged = proxy.logs.find('websocket client broke the protocol; closed')
    expect(logged[0]).toMatchObject({ level: 'info', route: 'ws', side: 'client', reqId: be.upgrades.at(-1)!.headers['x-request-id'] })
  })

  it('a backend message over maxMessageBytes: the client gets 1014 and why, the backend 1009; logged as a warning, not only at debug', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/bigdown`, { handshakeTimeout: 5_000 })
    await once(ws, 'open')
    ws.send('send-big')
    const [code, reason] = (await once(ws, 'close')) as [number, Buffer]
    expect(code).toBe(1014)
    expect(reason.toString()).toMatch(/^upstream: .*payload/i)
    await waitUntil(() => be.closes.some((c) => c.path === '/bigdown'), 10_000, 'backend close')
    expect(be.closes.find((c) => c.path === '/bigdown')!.code).toBe(1009)
    // log lines cross from the worker thread: wait for it
    await expect.poll(() => proxy.logs.find('websocket upstream broke the protocol; closed').length, { timeout: 10_000 }).toBe(1)
    const logged = proxy.logs.find('websocket upstream broke the protocol; closed')
    expect(logged[0]).toMatchObject({ level: 'warn', route: 'ws', side: 'upstream', reqId: be.upgrades.at(-1)!.headers['x-request-id'] })
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_websocket_connections'), { timeout: 10_000 }).toBe(0)
  })

  it('a frame the protocol forbids (RSV1 without a negotiated extension): the backend gets 1001 too', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/rsv`, { handshakeTimeout: 5_000 })
    await once(ws, 'open')
    const sock = (ws as unknown as { _socket: import('node:net').Socket })._socket
    // FIN + RSV1 + text, masked, 1-byte payload: refused (1002) since nothing was negotiated
    sock.write(Buffer.from([0xc1, 0x81, 0, 0, 0, 0, 0x41]))
    const [code] = (await once(ws, 'close')) as [number]
    expect([1002, 1006]).toContain(code)
    await waitUntil(() => be.closes.some((c) => c.path === '/rsv'), 10_000, 'backend close')
    expect(be.closes.find((c) => c.path === '/rsv')!.code).toBe(1001)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="BAD_REQUEST"'), { timeout: 10_000 }).toBe(1)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_websocket_connections'), { timeout: 10_000 }).toBe(0)
  })
})

describe('WebSocket passthrough: the upstream connectTimeoutMs holds for upgrades', () => {
  // An address whose SYNs go unanswered, on loopback: a listener with a full accept queue
  // (backlog 1, filled) in a stopped process drops further SYNs, so a connect hangs.
  let child: ChildProcess
  const fillers: Socket[] = []
  let proxy: TestProxy

  beforeAll(async () => {
    child = spawn(process.execPath, ['-e', "const s=require('net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>console.log(s.address().port))"], { stdio: ['ignore', 'pipe', 'inherit'] })
    const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d) => resolve(Number(String(d).trim()))))
    child.kill('SIGSTOP')
    for (let i = 0; i < 4; i++) {
      const s = connect(port, '127.0.0.1')
      s.on('error', () => undefined)
      fillers.push(s)
      await Promise.race([once(s, 'connect'), sleep(300)])
    }
    proxy = await startTestProxy({
      upstreams: { dead: { url: `http://127.0.0.1:${port}`, connectTimeoutMs: 300, healthCheck: { enabled: false } } },
      routes: [{ name: 'ws', upstream: 'dead', type: 'http' }], // headersMs: 30 s by default
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    for (const s of fillers) s.destroy()
    child?.kill('SIGCONT')
    child?.kill()
  })

  it('an upstream that does not accept the connection: 504 UPSTREAM_TIMEOUT after connectTimeoutMs, not after headersMs', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'], { handshakeTimeout: 60_000 })
    const answer = await Promise.race([refusal(ws), sleep(10_000).then(() => undefined)])
    ws.terminate()
    // was a wait for the route's headersMs (30 s)
    expect(answer?.status).toBe(504)
    expect(JSON.parse(answer!.body)).toMatchObject({ errors: [{ message: expect.stringContaining('connecting to the upstream timed out'), extensions: { code: 'UPSTREAM_TIMEOUT' } }] })
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="UPSTREAM_TIMEOUT"'), { timeout: 10_000 }).toBe(1)
  }, 30_000)
})
