// WebSocket passthrough handshake edges: a backend that selects no subprotocol (RFC 6455 allows
// it; the client decides), and a backend that trickles its 101 byte by byte (ws's handshake
// timeout is an idle timer). Real proxy, real node:http / net backends, real ws clients.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

/** The answer to an upgrade the proxy refused: status and body. */
async function refusal(ws: WebSocket): Promise<{ status: number; body: string }> {
  ws.on('error', () => undefined)
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage]
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (c: string) => (body += c))
  await once(res, 'end')
  ws.terminate()
  return { status: res.statusCode ?? 0, body }
}

describe('a backend whose 101 selects no subprotocol', () => {
  let server: Server
  let wss: WebSocketServer
  let proxy: TestProxy
  const offered: (string | undefined)[] = []

  beforeAll(async () => {
    // A plain node:http backend whose WebSocket side selects none of the offered subprotocols:
    // its 101 has no Sec-WebSocket-Protocol header (RFC 6455 §4.2.2 allows that).
    server = createServer()
    wss = new WebSocketServer({ noServer: true, handleProtocols: () => false })
    server.on('upgrade', (req: IncomingMessage, socket, head) => {
      offered.push(req.headers['sec-websocket-protocol'])
      wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (d, isBinary) => ws.send(d, { binary: isBinary })))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, type: 'http' }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of wss?.clients ?? []) ws.terminate()
    wss?.close()
    server?.closeAllConnections()
    server?.close()
  })

  it('a lenient client (a browser: the offer sent as a header) is connected, with no subprotocol, and messages relay', async () => {
    // ws checks the answer only against the protocols given to it: with the offer sent as a
    // plain header it accepts a 101 without one, as browsers do (ws.protocol === '').
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/graphql`, { headers: { 'Sec-WebSocket-Protocol': 'graphql-transport-ws, graphql-ws' }, handshakeTimeout: 10_000 })
    const errors: Error[] = []
    ws.on('error', (e) => errors.push(e))
    let status = 0
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      status = res.statusCode ?? 0
      ws.terminate()
    })
    await Promise.race([once(ws, 'open'), once(ws, 'close')])
    expect({ status, errors: errors.map((e) => e.message) }).toEqual({ status: 0, errors: [] })
    expect(ws.protocol).toBe('')
    expect(offered.at(-1)).toBe('graphql-transport-ws,graphql-ws') // the offer went upstream
    ws.send('hello')
    const [msg] = (await once(ws, 'message')) as [Buffer]
    expect(msg.toString()).toBe('hello')
    ws.close(1000)
    await once(ws, 'close')
  })

  it('a strict client gets the 101 without a subprotocol and decides itself (not a 502 from the gateway)', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws', 'graphql-ws'], { handshakeTimeout: 10_000 })
    let upgrade: IncomingMessage | undefined
    let status = 0
    ws.on('upgrade', (res: IncomingMessage) => (upgrade = res))
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      status = res.statusCode ?? 0
      ws.terminate()
    })
    const [err] = (await once(ws, 'error')) as [Error]
    expect(status).toBe(0)
    expect(upgrade?.statusCode).toBe(101)
    expect(upgrade?.headers['sec-websocket-protocol']).toBeUndefined()
    expect(err.message).toBe('Server sent no subprotocol') // the client's own verdict
  })
})

describe('a backend that trickles its 101 one byte at a time', () => {
  let backend: NetServer
  let proxy: TestProxy
  const sockets = new Set<Socket>()

  beforeAll(async () => {
    backend = createNetServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => undefined)
      socket.on('close', () => sockets.delete(socket))
      let head = ''
      socket.on('data', (d) => {
        head += d.toString('latin1')
        if (!head.includes('\r\n\r\n')) return
        const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? ''
        const accept = createHash('sha1').update(key + GUID).digest('base64')
        const answer = Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nX-Padding: ${'p'.repeat(64)}\r\n\r\n`)
        let i = 0
        // one byte every 250 ms: each resets an idle timer, the whole takes ~45 s
        const timer = setInterval(() => {
          if (socket.destroyed || i >= answer.length) {
            clearInterval(timer)
            return
          }
          socket.write(answer.subarray(i, ++i))
        }, 250)
        socket.on('close', () => clearInterval(timer))
      })
    })
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r))
    proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: `http://127.0.0.1:${(backend.address() as AddressInfo).port}`, type: 'http', timeouts: { headersMs: 1_500 } }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    for (const s of sockets) s.destroy()
    backend?.close()
  })

  it('the upgrade is answered 504 UPSTREAM_TIMEOUT once headersMs has passed, however the bytes trickle', { timeout: 60_000 }, async () => {
    const t0 = performance.now()
    const answer = await refusal(new WebSocket(`ws://127.0.0.1:${proxy.port}/graphql`, { handshakeTimeout: 40_000 }))
    const took = performance.now() - t0
    expect(answer.status).toBe(504)
    expect(JSON.parse(answer.body)).toMatchObject({ errors: [{ message: expect.stringContaining('1500 ms'), extensions: { code: 'UPSTREAM_TIMEOUT' } }] })
    // headersMs is 1.5 s; the trickle would take ~45 s (generous bound for a loaded machine)
    expect(took).toBeLessThan(20_000)
    // the proxy cut its upstream connection
    await expect.poll(() => sockets.size, { timeout: 10_000 }).toBe(0)
  })
})
