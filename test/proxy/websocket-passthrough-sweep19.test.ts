// WebSocket passthrough sweep 19: a peer that stops reading and then half-closes (FIN, with or
// without a close frame) left the bridge hanging forever; a backend's long refusal body was cut
// at 64 KiB under a Content-Length claiming it whole; a handshake of another version was refused
// without Sec-WebSocket-Version. Real WorkerProxy, real ws servers/clients, raw sockets.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { connect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
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

/** A raw backend: answers the WebSocket handshake by hand and hands over the socket. */
async function rawBackend(onSocket: (s: Socket) => void): Promise<NetServer> {
  const sockets = new Set<Socket>()
  const server = createNetServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => undefined)
    let buf = ''
    const onData = (c: Buffer) => {
      buf += c.toString('latin1')
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      s.removeListener('data', onData)
      s.pause()
      const key = /sec-websocket-key: *(\S+)/i.exec(buf)![1]!
      const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
      s.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`)
      onSocket(s)
    }
    s.on('data', onData)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return server
}

async function proxyTo(port: number, websocket: Record<string, unknown> = {}, timeouts?: Record<string, unknown>): Promise<{ proxy: WorkerProxy; url: string; logs: LogCapture }> {
  const config = validateConfig({ log: { level: 'debug' }, routes: [{ name: 'ws', upstream: `http://127.0.0.1:${port}`, type: 'http', websocket, ...(timeouts ? { timeouts } : {}) }] })
  const logs = new LogCapture()
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'debug' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return { proxy, url: `ws://127.0.0.1:${(proxy.server.address() as AddressInfo).port}/x`, logs }
}

/** Send until the sender's own buffer stops draining: whoever is behind the proxy stopped reading. */
async function flood(ws: WebSocket, target = 4 * 1024 * 1024): Promise<void> {
  const chunk = Buffer.alloc(64 * 1024, 1)
  for (let i = 0; i < 4000 && ws.bufferedAmount < target; i++) {
    ws.send(chunk)
    await new Promise((r) => setImmediate(r))
  }
  expect(ws.bufferedAmount).toBeGreaterThanOrEqual(target)
}

describe('WebSocket passthrough: a peer that stops reading, then half-closes (FIN, no close frame)', () => {
  it('the backend: the client is closed at once and the bridge ends, not never', async () => {
    let backendSock: Socket | undefined
    const backend = await rawBackend((s) => {
      backendSock = s // paused: reads nothing more
    })
    const { proxy, url } = await proxyTo((backend.address() as AddressInfo).port, { maxBufferedBytes: 65536 })
    const ws = new WebSocket(url)
    ws.on('error', () => undefined)
    cleanups.push(() => ws.terminate())
    await once(ws, 'open')
    await flood(ws)
    const closed = once(ws, 'close')
    const backendClosed = once(backendSock!, 'close')
    backendSock!.end() // FIN, no close frame
    // (the old code: never — the proxy's upstream side stayed CLOSING, the client OPEN)
    const [code] = (await Promise.race([closed, new Promise((r) => setTimeout(r, 20_000, ['timeout']))])) as [number | string]
    expect(code).toBe(1006)
    backendSock!.resume() // and sees the proxy let go of the upstream connection
    await backendClosed
    await expect.poll(() => proxy.bridges.size, { timeout: 10_000 }).toBe(0)
  }, 60_000)

  it("the backend sends a close frame, then FIN: the client gets that code at once, not after ws's 30 s closeTimeout", async () => {
    let backendSock: Socket | undefined
    const backend = await rawBackend((s) => {
      backendSock = s
    })
    const { proxy, url } = await proxyTo((backend.address() as AddressInfo).port, { maxBufferedBytes: 65536 })
    const ws = new WebSocket(url)
    ws.on('error', () => undefined)
    cleanups.push(() => ws.terminate())
    await once(ws, 'open')
    await flood(ws)
    const closed = once(ws, 'close')
    const reason = Buffer.from('backend says bye')
    const frame = Buffer.concat([Buffer.from([0x88, 2 + reason.length, 4000 >> 8, 4000 & 0xff]), reason])
    backendSock!.end(frame) // close frame and FIN, never reading the proxy's reply
    // (the old code: only when the proxy's close handshake timed out, 30 s later)
    const [code, why] = (await Promise.race([closed, new Promise((r) => setTimeout(r, 20_000, ['timeout']))])) as [number | string, Buffer?]
    expect(code).toBe(4000)
    expect(why?.toString()).toBe('backend says bye')
    await expect.poll(() => proxy.bridges.size, { timeout: 10_000 }).toBe(0)
  }, 60_000)

  it('the client: the backend is closed at once and the bridge ends, not never', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    await once(wss, 'listening')
    cleanups.push(() => {
      for (const c of wss.clients) c.terminate()
      wss.close()
    })
    const backendClosed = new Promise<number>((resolve) => {
      wss.on('connection', (ws) => {
        ws.on('error', () => undefined)
        ws.on('close', (code) => resolve(code))
        void flood(ws).catch(() => undefined)
      })
    })
    const { proxy, url } = await proxyTo((wss.address() as AddressInfo).port, { maxBufferedBytes: 65536 })
    // A raw client: handshake by hand, then reads nothing.
    const { port } = new URL(url)
    const sock = connect(Number(port), '127.0.0.1')
    sock.on('error', () => undefined)
    cleanups.push(() => sock.destroy())
    await once(sock, 'connect')
    sock.write(`GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`)
    const [first] = (await once(sock, 'data')) as [Buffer]
    expect(first.toString('latin1')).toMatch(/^HTTP\/1.1 101 /)
    sock.pause()
    // Wait until the proxy has stopped reading the backend (its queue toward this client is full).
    await expect.poll(() => (wss.clients.size === 1 ? [...wss.clients][0]!.bufferedAmount : 0), { timeout: 20_000 }).toBeGreaterThan(1024 * 1024)
    sock.end() // FIN, no close frame
    // (the old code: never — the proxy's client side stayed CLOSING, the backend flooding a paused bridge)
    const code = await Promise.race([backendClosed, new Promise((r) => setTimeout(r, 20_000, 'timeout'))])
    expect(code).toBe(1006)
    await expect.poll(() => proxy.bridges.size, { timeout: 10_000 }).toBe(0)
  }, 60_000)
})

describe('WebSocket passthrough: a backend refusal with a long body', () => {
  // 200 KiB of distinct bytes, so a cut anywhere shows.
  const body = Buffer.from(Array.from({ length: 200 * 1024 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''))

  async function refusingBackend(): Promise<number> {
    const server = createServer()
    server.on('upgrade', (req, socket) => {
      socket.on('error', () => undefined)
      if (req.url === '/endless') {
        // The head and more than the buffered part of the body, then nothing more, ever.
        socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 403 Forbidden\r\ncontent-length: ${body.length}\r\n\r\n`), body.subarray(0, 100 * 1024)]))
      } else if (req.url === '/chunked') {
        socket.write('HTTP/1.1 403 Forbidden\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n')
        for (let i = 0; i < body.length; i += 16 * 1024) {
          const part = body.subarray(i, i + 16 * 1024)
          socket.write(`${part.length.toString(16)}\r\n`)
          socket.write(part)
          socket.write('\r\n')
        }
        socket.end('0\r\n\r\n')
      } else {
        socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/html\r\ncontent-length: ${body.length}\r\n\r\n`), body]))
      }
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    cleanups.push(() => {
      server.closeAllConnections()
      server.close()
    })
    return (server.address() as AddressInfo).port
  }

  it('is relayed whole (it was cut at 64 KiB and sent with a Content-Length claiming that was all)', async () => {
    const { url } = await proxyTo(await refusingBackend())
    for (const path of ['/sized', '/chunked']) {
      const ws = new WebSocket(url.replace('/x', path))
      ws.on('error', () => undefined)
      const [, res] = (await once(ws, 'unexpected-response')) as [unknown, import('node:http').IncomingMessage]
      expect(res.statusCode).toBe(403)
      expect(res.headers['content-type']).toBe('text/html')
      expect(res.headers['x-request-id']).toBeDefined()
      const got: Buffer[] = []
      res.on('data', (c: Buffer) => got.push(c))
      await once(res, 'end')
      const all = Buffer.concat(got)
      expect(all.length).toBe(body.length)
      expect(all.equals(body)).toBe(true)
      ws.terminate()
    }
  }, 30_000)

  it('a streamed refusal that stops short is cut at the handshake deadline (no 504 written into its body)', async () => {
    const { url, proxy } = await proxyTo(await refusingBackend(), {}, { headersMs: 1_500 })
    const ws = new WebSocket(url.replace('/x', '/endless'))
    ws.on('error', () => undefined)
    const [, res] = (await once(ws, 'unexpected-response')) as [unknown, import('node:http').IncomingMessage]
    expect(res.statusCode).toBe(403)
    const got: Buffer[] = []
    res.on('data', (c: Buffer) => got.push(c))
    res.on('error', () => undefined)
    await new Promise((r) => res.once('close', r))
    const all = Buffer.concat(got)
    expect(res.complete).toBe(false)
    expect(all.length).toBe(100 * 1024)
    expect(all.equals(body.subarray(0, 100 * 1024))).toBe(true)
    ws.terminate()
    await expect.poll(() => proxy.inflight, { timeout: 10_000 }).toBe(0)
  }, 30_000)
})

describe('WebSocket passthrough: a handshake with a version the gateway does not speak', () => {
  it('is refused with Sec-WebSocket-Version: 13 (RFC 6455 §4.4), before anything opens upstream', async () => {
    let upgrades = 0
    const server = createServer()
    server.on('upgrade', (_req, socket) => {
      upgrades++
      socket.destroy()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    cleanups.push(() => server.close())
    const { url } = await proxyTo((server.address() as AddressInfo).port)
    const sock = connect(Number(new URL(url).port), '127.0.0.1')
    cleanups.push(() => sock.destroy())
    sock.on('error', () => undefined)
    await once(sock, 'connect')
    sock.write('GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    let answer = ''
    sock.on('data', (c: Buffer) => (answer += c.toString('latin1')))
    await once(sock, 'end')
    expect(answer).toMatch(/^HTTP\/1.1 400 /)
    expect(answer.toLowerCase()).toMatch(/\r\nsec-websocket-version: 13\r\n/)
    expect(upgrades).toBe(0)
  })
})
