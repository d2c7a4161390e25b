// A misbehaving upstream and odd-but-legal HTTP, through a real igw proxy: raw TCP backends
// that write crafted bytes, real clients (undici, raw sockets, ws). Each case asserts the
// precise answer, that it is counted, and that nothing is left holding the drain.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import WebSocket from 'ws'
import { rawExchange, startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

async function metrics(proxy: TestProxy): Promise<string> {
  return (await request(`${proxy.adminUrl}/metrics`)).body.text()
}

/** Graceful drain must not wait for anything these tests left behind. */
// The bounds on a close and on a 504 leave a loaded machine seconds: the defects they guard
// against hold the drain for its whole deadline (15 s) or the request for ever.
async function closeQuickly(proxy: TestProxy): Promise<number> {
  const t0 = Date.now()
  await proxy.close()
  return Date.now() - t0
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

describe('HTTP: a misbehaving upstream', () => {
  it('a request queued behind busy upstream connections gets 504 at its headersMs, not a hang', async () => {
    // /hold answers at once and then trickles its body forever: it owns the only connection.
    const up = await startRawTcpUpstream((sock, _head, path) => {
      if (path === '/hold') {
        sock.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n')
        const t = setInterval(() => sock.write('1\r\nx\r\n'), 50)
        sock.on('close', () => clearInterval(t))
      } else sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    })
    cleanups.push(up.close)
    const proxy = await startTestProxy({
      upstreams: { u: { url: up.url, connections: 1 } },
      shutdown: { drainTimeoutMs: 15_000 },
      routes: [
        { name: 'export', match: { pathPrefix: '/hold' }, upstream: 'u', type: 'http', timeouts: { totalMs: 0 } },
        { name: 'api', upstream: 'u', type: 'http', timeouts: { headersMs: 300, bodyIdleMs: 1_000, totalMs: 10_000 } },
      ],
    })
    cleanups.push(() => proxy.close())

    const hold = await request(`${proxy.url}/hold`)
    expect(hold.statusCode).toBe(200)
    const t0 = Date.now()
    // Before: the headers timer found no controller to abort and the request waited in undici's
    // queue for as long as /hold lasted (here: forever), past headersMs and totalMs alike.
    const queued = await request(`${proxy.url}/queued`, { headersTimeout: 15_000 })
    const took = Date.now() - t0
    expect(queued.statusCode).toBe(504)
    const err = ((await queued.body.json()) as GqlError).errors[0]!
    expect(err.extensions.code).toBe('UPSTREAM_TIMEOUT')
    expect(err.message).toMatch(/no connection to upstream u became available within \d+ ms/)
    expect(took).toBeGreaterThanOrEqual(250)
    expect(took).toBeLessThan(5_000)
    expect(metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="UPSTREAM_TIMEOUT"')).toBe(1)
    await expect.poll(() => proxy.logs.find('upstream request failed').some((l) => l.route === 'api'), { timeout: 10_000 }).toBe(true)

    // The export ends; the abandoned request is dropped, never sent, and the next one is served.
    hold.body.destroy()
    const next = await request(`${proxy.url}/next`)
    expect(next.statusCode).toBe(200)
    expect(await next.body.text()).toBe('ok')
    expect(up.heads.map((h) => h.split(' ')[1])).toEqual(['/hold', '/next'])
    expect(proxy.logs.find('upstream failed mid-response').filter((l) => l.route === 'api')).toEqual([])
    expect(await closeQuickly(proxy)).toBeLessThan(5_000)
  })

  it('a Content-Length upload that waits for a busy upstream connection arrives whole once it gets one', async () => {
    // The proxy counts a streamed upload's bytes (byte-paced GC) with a 'data' listener of its
    // own, attached only when undici starts the request: attached earlier, it would start the
    // flow while the request still waits in undici's queue and those chunks would never reach
    // the upstream. Here the upload's bytes are all on the socket before a connection frees up.
    const { createServer: createHttpServer } = await import('node:http')
    let release: () => void = () => {}
    const received: number[] = []
    const server = createHttpServer((req, res) => {
      if (req.url === '/hold') {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('x')
        release = () => res.end()
        return
      }
      let n = 0
      req.on('data', (c: Buffer) => (n += c.length))
      req.on('end', () => {
        received.push(n)
        res.end(String(n))
      })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())))
    const upUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const proxy = await startTestProxy({
      upstreams: { u: { url: upUrl, connections: 1 } },
      routes: [{ name: 'blob', upstream: 'u', type: 'http', maxBodyBytes: '16mib', timeouts: { totalMs: 0 } }],
    })
    cleanups.push(() => proxy.close())
    const hold = await request(`${proxy.url}/hold`)
    const size = 4 * 1024 * 1024
    const upload = request(`${proxy.url}/upload`, { method: 'POST', headers: { 'content-length': String(size) }, body: Buffer.alloc(size, 'z') })
    await new Promise((r) => setTimeout(r, 300)) // the whole body reaches the proxy while it waits
    release()
    await hold.body.text()
    const res = await upload
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe(String(size))
    expect(received).toEqual([size])
  })

  it('a raw UTF-8 Content-Disposition next to a Content-Length reaches the client byte for byte', async () => {
    const utf8 = (name: string) => Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\ncontent-length: 2\r\ncontent-disposition: attachment; filename="'), Buffer.from(name, 'utf8'), Buffer.from('"\r\n\r\nok')])
    const up = await startRawTcpUpstream((sock, _head, path) => sock.write(utf8(path === '/emoji' ? 'report-😀.csv' : 'café.csv')))
    cleanups.push(up.close)
    const proxy = await startTestProxy({ routes: [{ name: 'files', upstream: up.url, type: 'http' }] })
    cleanups.push(() => proxy.close())

    for (const [path, name] of [
      ['/emoji', 'report-😀.csv'], // before: writeHead threw ERR_INVALID_CHAR → "502 OK" blaming the upstream
      ['/cafe', 'café.csv'], // before: sent as latin1 "caf\xe9.csv", a different filename
    ] as const) {
      const raw = await rawExchange(proxy.port, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
      const text = raw.toString('latin1')
      expect(text.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true)
      const expected = Buffer.from(`content-disposition: attachment; filename="${name}"\r\n`, 'utf8')
      expect(raw.includes(expected)).toBe(true)
      expect(text.endsWith('\r\n\r\nok')).toBe(true)
    }
    expect(metricSum(await metrics(proxy), 'igw_proxy_errors_total')).toBe(0)
  })

  it('an absolute-form request target is routed by its authority and forwarded in origin-form; OPTIONS * is a 400 of our own', async () => {
    const up = await startRawTcpUpstream((sock) => sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'))
    cleanups.push(up.close)
    const proxy = await startTestProxy({
      mode: 'ingress',
      routes: [
        { name: 'a', match: { host: 'a.example', pathPrefix: '/api' }, upstream: up.url, type: 'http' },
        { name: 'other', match: { host: 'b.example', pathPrefix: '/' }, upstream: up.url, type: 'http' },
      ],
    })
    cleanups.push(() => proxy.close())

    // RFC 9112 §3.2.2: a server must accept the absolute-form; its authority replaces Host.
    // Before: no path prefix matched "http://…" (404), or a sole route forwarded it as it came.
    const res = (await rawExchange(proxy.port, 'GET http://a.example/api/x?y=1 HTTP/1.1\r\nhost: b.example\r\nconnection: close\r\n\r\n')).toString('latin1')
    expect(res.startsWith('HTTP/1.1 200')).toBe(true)
    expect(up.heads).toHaveLength(1)
    expect(up.heads[0]!.split('\r\n')[0]).toBe('GET /api/x?y=1 HTTP/1.1')
    expect(up.heads[0]).toMatch(/\r\nhost: a\.example\r\n/i)
    expect(metricSum(await metrics(proxy), 'igw_requests_total', 'route="a"')).toBe(1)

    // Asterisk-form: undici cannot send it. Before: 502 UPSTREAM_UNAVAILABLE, logged and counted
    // as an upstream failure ("UND_ERR_INVALID_ARG") when the upstream was never asked.
    const star = (await rawExchange(proxy.port, 'OPTIONS * HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n')).toString('latin1')
    expect(star.startsWith('HTTP/1.1 400')).toBe(true)
    const body = JSON.parse(star.slice(star.indexOf('\r\n\r\n') + 4)) as GqlError
    expect(body.errors[0]!.extensions.code).toBe('BAD_REQUEST')
    expect(up.heads).toHaveLength(1)
    const text = await metrics(proxy)
    expect(metricSum(text, 'igw_proxy_errors_total', 'UPSTREAM_UNAVAILABLE')).toBe(0)
    expect(metricSum(text, 'igw_requests_total', 'status="400"')).toBe(1)
  })

  it('a client x-request-id the request-id filter would refuse is not logged verbatim by an early refusal', async () => {
    const up = await startRawTcpUpstream((sock) => sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'))
    cleanups.push(up.close)
    const proxy = await startTestProxy({ routes: [{ name: 'g', upstream: up.url }] })
    cleanups.push(() => proxy.close())
    const hostile = 'é'.repeat(4000)
    // 415 comes before the chain: the access line named the request by the client's raw 4000-char id.
    const raw = await rawExchange(proxy.port, Buffer.from(`POST / HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nx-request-id: ${hostile}\r\nconnection: close\r\n\r\nabc`, 'latin1'))
    expect(raw.toString('latin1').startsWith('HTTP/1.1 415')).toBe(true)
    const good = await rawExchange(proxy.port, `POST / HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nx-request-id: trace-42\r\nconnection: close\r\n\r\nabc`)
    expect(good.toString('latin1').startsWith('HTTP/1.1 415')).toBe(true)
    await expect.poll(() => proxy.logs.find('access').length, { timeout: 10_000 }).toBe(2)
    const ids = proxy.logs.find('access').map((l) => l.reqId)
    expect(ids).toEqual([expect.stringMatching(/^[0-9a-f-]{36}$/), 'trace-42'])
    expect(proxy.logs.raw.some((l) => l.includes('éé'))).toBe(false)
  })
})

const accept = (key: string) => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

/** Open a passthrough WebSocket and report how its handshake ended. */
function wsHandshake(url: string, waitMs: number): Promise<{ kind: 'open' | 'refused' | 'error' | 'pending'; status?: number; body?: string; ms: number; ws: WebSocket }> {
  const t0 = Date.now()
  const ws = new WebSocket(url)
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve({ kind: 'pending', ms: Date.now() - t0, ws }), waitMs)
    ws.on('open', () => (clearTimeout(t), resolve({ kind: 'open', ms: Date.now() - t0, ws })))
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => (clearTimeout(t), resolve({ kind: 'refused', status: res.statusCode, body, ms: Date.now() - t0, ws })))
    })
    ws.on('error', () => (clearTimeout(t), resolve({ kind: 'error', ms: Date.now() - t0, ws })))
  })
}

describe('WebSocket passthrough: a misbehaving upstream handshake', () => {
  it('an upstream that answers the upgrade with a never-ending 200 → 504 UPSTREAM_TIMEOUT at headersMs', async () => {
    const up = await startRawTcpUpstream((sock) => {
      sock.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n')
      const t = setInterval(() => sock.write('2\r\n:\n\r\n'), 50) // keeps ws's idle handshake timer from firing
      sock.on('close', () => clearInterval(t))
    })
    cleanups.push(up.close)
    const proxy = await startTestProxy({
      shutdown: { drainTimeoutMs: 15_000 },
      routes: [{ name: 'ws', upstream: up.url, type: 'http', timeouts: { headersMs: 300, bodyIdleMs: 1_000, totalMs: 0 } }],
    })
    cleanups.push(() => proxy.close())
    const r = await wsHandshake(`ws://127.0.0.1:${proxy.port}/events`, 10_000)
    r.ws.terminate()
    // Before: the refusal was relayed only at its end, which never came: the client waited forever.
    expect(r.kind).toBe('refused')
    expect(r.status).toBe(504)
    expect((JSON.parse(r.body!) as GqlError).errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
    expect(r.ms).toBeLessThan(5_000)
    await expect.poll(() => up.open.size, { timeout: 10_000 }).toBe(0)
    const text = await metrics(proxy)
    expect(metricSum(text, 'igw_proxy_errors_total', 'code="UPSTREAM_TIMEOUT"')).toBe(1)
    expect(metricSum(text, 'igw_requests_total', 'status="504"')).toBe(1)
    expect(await closeQuickly(proxy)).toBeLessThan(5_000)
  })

  it('with headersMs 0 the upgrade still ends by totalMs (504), never waits forever', async () => {
    const up = await startRawTcpUpstream(() => {}) // accepts, never answers
    cleanups.push(up.close)
    const proxy = await startTestProxy({
      shutdown: { drainTimeoutMs: 15_000 },
      routes: [{ name: 'ws', upstream: up.url, type: 'http', timeouts: { headersMs: 0, bodyIdleMs: 1_000, totalMs: 300 } }],
    })
    cleanups.push(() => proxy.close())
    const r = await wsHandshake(`ws://127.0.0.1:${proxy.port}/graphql`, 10_000)
    r.ws.terminate()
    expect(r.kind).toBe('refused')
    expect(r.status).toBe(504)
    expect(r.ms).toBeLessThan(5_000)
    await expect.poll(() => up.open.size, { timeout: 10_000 }).toBe(0)
    expect(await closeQuickly(proxy)).toBeLessThan(5_000)
  })

  it('a client that leaves while the upstream handshake hangs releases the upgrade at once (499), and drain does not wait', async () => {
    const up = await startRawTcpUpstream(() => {}) // accepts, never answers
    cleanups.push(up.close)
    const proxy = await startTestProxy({
      shutdown: { drainTimeoutMs: 15_000 },
      // No handshake bound at all: only noticing the client can release this upgrade.
      routes: [{ name: 'ws', upstream: up.url, type: 'http', timeouts: { headersMs: 0, bodyIdleMs: 0, totalMs: 0 } }],
    })
    cleanups.push(() => proxy.close())
    for (const leave of ['reset', 'fin'] as const) {
      const s = connect(proxy.port, '127.0.0.1')
      s.on('error', () => {})
      s.write('GET /graphql HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
      await expect.poll(() => up.heads.length, { timeout: 10_000 }).toBe(leave === 'reset' ? 1 : 2)
      await expect.poll(() => up.open.size, { timeout: 10_000 }).toBe(1)
      if (leave === 'reset') s.resetAndDestroy()
      else s.end()
      // Before: Node hands the upgrade socket over unread, so neither end was seen; the upstream
      // socket stayed open and the in-flight upgrade held a drain until its deadline.
      await expect.poll(() => up.open.size, { timeout: 10_000 }).toBe(0)
      s.destroy()
    }
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_requests_total', 'status="499"'), { timeout: 10_000 }).toBe(2)
    expect(await closeQuickly(proxy)).toBeLessThan(5_000)
  })

  it('frames a client sends right behind its upgrade request are not lost while the upstream handshake runs', async () => {
    const up = await startRawTcpUpstream((sock, head) => {
      const key = /sec-websocket-key: (\S+)/i.exec(head)![1]!
      // Answer late, so the client's early frame is read by the proxy while the upgrade is pending.
      setTimeout(() => {
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept(key)}\r\n\r\n`)
        sock.on('data', (d: Buffer) => {
          // Unmasked echo of a small masked text frame from the proxy.
          const len = d[1]! & 0x7f
          const mask = d.subarray(2, 6)
          const payload = Buffer.from(d.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]!))
          sock.write(Buffer.concat([Buffer.from([0x81, payload.length]), payload]))
        })
      }, 150)
    })
    cleanups.push(up.close)
    const proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: up.url, type: 'http' }] })
    cleanups.push(() => proxy.close())
    const s = connect(proxy.port, '127.0.0.1')
    s.on('error', () => {})
    const mask = Buffer.from([1, 2, 3, 4])
    const payload = Buffer.from('early')
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))])
    let got = Buffer.alloc(0)
    s.on('data', (d: Buffer) => (got = Buffer.concat([got, d])))
    s.write('GET /graphql HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
    await expect.poll(() => up.heads.length, { timeout: 10_000 }).toBe(1)
    s.write(frame)
    await expect.poll(() => got.includes(Buffer.from('early')), { timeout: 10_000 }).toBe(true)
    expect(got.toString('latin1').startsWith('HTTP/1.1 101')).toBe(true)
    s.destroy()
  })
})

describe('WebSocket passthrough: an upstream that breaks the protocol after the handshake', () => {
  it('the client gets a close frame, 1014 with the reason, not a bare reset (1006); counted', async () => {
    const { WebSocketServer } = await import('ws')
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await once(wss, 'listening')
    // sends one message over the route's maxMessageBytes (64 KiB) when asked
    wss.on('connection', (ws) => ws.on('message', () => ws.send(Buffer.alloc(256 * 1024, 0x61))))
    const proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, type: 'http', websocket: { maxMessageBytes: '64kib' } }] } as never)
    try {
      const client = new WebSocket(`ws://127.0.0.1:${proxy.port}/ws`)
      await once(client, 'open')
      const closed = once(client, 'close') as Promise<[number, Buffer]>
      client.send('send me something big')
      const [code, reason] = await closed
      expect(code).toBe(1014)
      expect(reason.toString()).toMatch(/^upstream: .*(payload|length|size)/i)
      expect(metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'route="ws",code="UPSTREAM_UNAVAILABLE"')).toBe(1)
      await waitUntil(async () => metricSum(await metrics(proxy), 'igw_websocket_connections', 'route="ws"') === 0, 10_000, 'the bridge to end')
    } finally {
      await proxy.close()
      await new Promise<void>((r) => wss.close(() => r()))
    }
  })
})
