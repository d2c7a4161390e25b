// WebSocket passthrough sweep 20i: the upstream handshake's request target was ws's WHATWG
// serialization of it ("\" turned into "/" and the dot segments resolved: a path routed to one
// route reached another on the backend); a header sent twice went up joined with ", " (two
// Cookie lines became one broken cookie); an upstream that failed while its long refusal was
// streamed got a 502 written into that body. Real WorkerProxy, real backends, raw sockets.
import { once } from 'node:events'
import { createServer, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { LogCapture } from '../helpers/proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function startProxy(routes: Record<string, unknown>[]): Promise<{ proxy: WorkerProxy; port: number }> {
  const config = validateConfig({ log: { level: 'info' }, routes })
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, new LogCapture()), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return { proxy, port: (proxy.server.address() as AddressInfo).port }
}

/** A ws backend recording each request (WebSocket upgrade or plain HTTP) it gets. */
async function recordingBackend(): Promise<{ port: number; seen: IncomingMessage[] }> {
  const seen: IncomingMessage[] = []
  const server = createServer((req, res) => {
    seen.push(req)
    res.end('ok')
  })
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket, head) => {
    seen.push(req)
    wss.handleUpgrade(req, socket, head, (ws) => ws.close(1000))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => {
    server.closeAllConnections()
    server.close()
  })
  return { port: (server.address() as AddressInfo).port, seen }
}

/** A raw request on a new connection; resolves with the answer's head (then hangs up). */
async function exchange(port: number, text: string): Promise<string> {
  const sock = connect(port, '127.0.0.1')
  cleanups.push(() => sock.destroy())
  sock.on('error', () => undefined)
  await once(sock, 'connect')
  let got = ''
  const head = new Promise<string>((resolve, reject) => {
    sock.on('data', (c: Buffer) => {
      got += c.toString('latin1')
      const end = got.indexOf('\r\n\r\n')
      if (end !== -1) resolve(got.slice(0, end))
    })
    sock.on('close', () => reject(new Error(`closed before a head: ${got}`)))
  })
  sock.write(text)
  try {
    return await head
  } finally {
    sock.destroy()
  }
}

const UPGRADE = 'upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n'

describe('WebSocket passthrough: the upstream handshake', () => {
  it('carries the request target as routed, as HTTP does (ws resolved "\\" and ".." to another route\'s path)', async () => {
    const be = await recordingBackend()
    // /admin is not reachable over WebSocket; /public is.
    const { port } = await startProxy([
      { name: 'admin', match: { pathPrefix: '/admin' }, upstream: `http://127.0.0.1:${be.port}`, type: 'http', websocket: { enabled: false } },
      { name: 'public', match: { pathPrefix: '/public' }, upstream: `http://127.0.0.1:${be.port}`, type: 'http' },
    ])
    // A raw "\" in the path is read as "/" before routing (sweep 23: backends' WHATWG URL parsers
    // read it so), over HTTP and WebSocket alike: these go to /admin, whose WebSockets are off.
    for (const [target, normalized] of [['/public/..\\admin/x', '/admin/x'], ['/public\\..\\admin', '/admin']] as const) {
      expect(await exchange(port, `GET ${target} HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n`)).toMatch(/^HTTP\/1.1 200 /)
      expect(be.seen.at(-1)!.url).toBe(normalized)
      expect(await exchange(port, `GET ${target} HTTP/1.1\r\nhost: example.com\r\n${UPGRADE}\r\n`)).toMatch(/^HTTP\/1.1 400 /)
    }
    // In the query a "\" is no path: the target goes up byte for byte, as over HTTP.
    const targets = ['/public/{a}|^`"<>?q=\\..']
    for (const target of targets) {
      const http = await exchange(port, `GET ${target} HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n`)
      expect(http).toMatch(/^HTTP\/1.1 200 /)
      const viaHttp = be.seen.at(-1)!.url
      const ws = await exchange(port, `GET ${target} HTTP/1.1\r\nhost: example.com\r\n${UPGRADE}\r\n`)
      expect(ws).toMatch(/^HTTP\/1.1 101 /)
      const upgrade = be.seen.at(-1)!
      expect(upgrade.headers.upgrade).toBe('websocket')
      expect(upgrade.url).toBe(viaHttp)
      expect(upgrade.url).toBe(target)
    }
  })

  it('a header the client sent twice goes up as two (two Cookie lines are one cookie list, not "a=1, b=2")', async () => {
    const be = await recordingBackend()
    const { port } = await startProxy([{ name: 'ws', upstream: `http://127.0.0.1:${be.port}`, type: 'http' }])
    const res = await exchange(port, `GET /x HTTP/1.1\r\nhost: example.com\r\n${UPGRADE}cookie: sid=abc\r\ncookie: theme=dark\r\nx-tag: one\r\nx-tag: two\r\n\r\n`)
    expect(res).toMatch(/^HTTP\/1.1 101 /)
    const req = be.seen.at(-1)!
    expect(req.headers.cookie).toBe('sid=abc; theme=dark')
    const raw = req.rawHeaders
    const tags = raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === 'x-tag')
    expect(tags).toEqual(['one', 'two'])
  })
})

describe('WebSocket passthrough: an upstream that fails while its long refusal is streamed', () => {
  it('the client is cut after what was relayed; no 502 is written into the body', async () => {
    const body = Buffer.from(Array.from({ length: 200 * 1024 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''))
    let backendSock: Socket | undefined
    const server = createServer()
    server.on('upgrade', (_req, socket) => {
      socket.on('error', () => undefined)
      backendSock = socket as Socket
      socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 403 Forbidden\r\ncontent-length: ${body.length}\r\n\r\n`), body.subarray(0, 100 * 1024)]))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    cleanups.push(() => {
      server.closeAllConnections()
      server.close()
    })
    const { proxy, port } = await startProxy([{ name: 'ws', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, type: 'http' }])
    const ws = new WebSocket(`ws://127.0.0.1:${port}/x`)
    ws.on('error', () => undefined)
    cleanups.push(() => ws.terminate())
    const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage]
    expect(res.statusCode).toBe(403)
    const got: Buffer[] = []
    let size = 0
    res.on('data', (c: Buffer) => {
      got.push(c)
      size += c.length
    })
    res.on('error', () => undefined)
    const closed = new Promise((r) => res.once('close', r))
    await expect.poll(() => size, { timeout: 5_000 }).toBe(100 * 1024)
    backendSock!.resetAndDestroy() // ECONNRESET on the proxy's side, mid-body
    await closed
    const all = Buffer.concat(got)
    expect(res.complete).toBe(false)
    expect(all.toString('latin1')).not.toContain('HTTP/1.1 502')
    expect(all.equals(body.subarray(0, 100 * 1024))).toBe(true)
    await expect.poll(() => proxy.inflight, { timeout: 5_000 }).toBe(0)
  })
})
