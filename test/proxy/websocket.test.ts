import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createClient } from 'graphql-ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('WebSocket passthrough', () => {
  let raw: { server: Server; wss: WebSocketServer; url: string; lastClose?: { code: number; reason: string }; lastHeaders?: Record<string, unknown> }
  let yoga: DemoBackend
  let proxy: TestProxy
  let proxyYoga: TestProxy

  beforeAll(async () => {
    const server = createServer()
    const wss = new WebSocketServer({
      server,
      autoPong: true,
      handleProtocols: (protocols) => (protocols.has('graphql-transport-ws') ? 'graphql-transport-ws' : protocols.has('graphql-ws') ? 'graphql-ws' : false),
      verifyClient: (info, cb) => {
        if (info.req.url === '/deny') cb(false, 403, 'Forbidden by backend')
        else cb(true)
      },
    })
    raw = { server, wss, url: '' }
    wss.on('connection', (ws, req) => {
      raw.lastHeaders = req.headers
      ws.on('message', (data, isBinary) => {
        const text = data.toString()
        if (text === 'close-me') ws.close(4403, 'backend says no')
        else if (text.startsWith('flood:')) {
          const n = Number(text.slice(6))
          for (let i = 0; i < n; i++) ws.send(Buffer.alloc(64 * 1024, i % 256))
          ws.send('flood-done')
        } else ws.send(data, { binary: isBinary })
      })
      ws.on('close', (code, reason) => (raw.lastClose = { code, reason: reason.toString() }))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    raw.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    yoga = await startDemoBackend()
    proxy = await startTestProxy({ routes: [{ name: 'ws', upstream: raw.url, type: 'http', websocket: { maxBufferedBytes: 256 * 1024 } }] })
    proxyYoga = await startTestProxy({ routes: [{ name: 'gql', upstream: yoga.url }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await proxyYoga?.close()
    await yoga?.close()
    raw?.wss.close()
    raw?.server.closeAllConnections()
    raw?.server.close()
  })

  const wsUrl = (p: TestProxy, path = '/ws') => `ws://127.0.0.1:${p.port}${path}`

  it('negotiates the subprotocol the backend chose and relays messages both ways', async () => {
    for (const proto of ['graphql-transport-ws', 'graphql-ws']) {
      const ws = new WebSocket(wsUrl(proxy), [proto, 'other'])
      await once(ws, 'open')
      expect(ws.protocol).toBe(proto)
      ws.send('hello')
      const [msg] = (await once(ws, 'message')) as [Buffer]
      expect(msg.toString()).toBe('hello')
      ws.send(Buffer.from([1, 2, 3]), { binary: true })
      const [bin, isBinary] = (await once(ws, 'message')) as [Buffer, boolean]
      expect(isBinary).toBe(true)
      expect([...bin]).toEqual([1, 2, 3])
      ws.close(1000)
      await once(ws, 'close')
    }
    expect(raw.lastHeaders?.['x-forwarded-for']).toBe('127.0.0.1')
    expect(raw.lastHeaders?.['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('relays ping/pong end to end (the backend answers, not the proxy)', async () => {
    const ws = new WebSocket(wsUrl(proxy), ['graphql-transport-ws'])
    await once(ws, 'open')
    ws.ping(Buffer.from('p1'))
    const [payload] = (await once(ws, 'pong')) as [Buffer]
    expect(payload.toString()).toBe('p1')
    ws.close()
    await once(ws, 'close')
  })

  it('propagates close codes and reasons from the backend to the client', async () => {
    const ws = new WebSocket(wsUrl(proxy), ['graphql-transport-ws'])
    await once(ws, 'open')
    ws.send('close-me')
    const [code, reason] = (await once(ws, 'close')) as [number, Buffer]
    expect(code).toBe(4403)
    expect(reason.toString()).toBe('backend says no')
  })

  it('propagates close codes and reasons from the client to the backend', async () => {
    const ws = new WebSocket(wsUrl(proxy), ['graphql-transport-ws'])
    await once(ws, 'open')
    ws.close(4000, 'client bye')
    await once(ws, 'close')
    const t0 = Date.now()
    while (raw.lastClose?.reason !== 'client bye' && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 10))
    expect(raw.lastClose).toEqual({ code: 4000, reason: 'client bye' })
  })

  it("relays the backend's refusal of the handshake", async () => {
    const ws = new WebSocket(wsUrl(proxy, '/deny'), ['graphql-transport-ws'])
    const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number }]
    expect(res.statusCode).toBe(403)
    ws.on('error', () => undefined)
    ws.terminate()
  })

  it('applies backpressure: a client that does not read does not make the proxy buffer the flood', async () => {
    const ws = new WebSocket(wsUrl(proxy), ['graphql-transport-ws'])
    await once(ws, 'open')
    // Stop reading: the kernel buffers fill, then the proxy must stop reading the backend.
    const sock = (ws as unknown as { _socket: import('node:net').Socket })._socket
    sock.pause()
    ws.send('flood:400') // 400 × 64 KiB = 25 MiB from the backend
    await new Promise((r) => setTimeout(r, 500))
    const backendSide = [...raw.wss.clients][0]!
    // The backend's own send buffer holds what the proxy refused to read.
    expect(backendSide.bufferedAmount).toBeGreaterThan(4 * 1024 * 1024)
    sock.resume()
    let got = 0
    await new Promise<void>((resolve) => {
      ws.on('message', (d) => {
        if (d.toString() === 'flood-done') resolve()
        else got++
      })
    })
    expect(got).toBe(400)
    ws.close()
  })

  it('carries a real graphql-ws subscription through the proxy', async () => {
    const client = createClient({ url: wsUrl(proxyYoga, '/graphql'), webSocketImpl: WebSocket, retryAttempts: 0 })
    const values: number[] = []
    await new Promise<void>((resolve, reject) =>
      client.subscribe({ query: 'subscription { countdown(from: 4, intervalMs: 10) }' }, { next: (v) => values.push((v.data as { countdown: number }).countdown), error: reject, complete: resolve }),
    )
    expect(values).toEqual([4, 3, 2, 1])
    await client.dispose()
  })

  it('refused handshakes do not hold up a drain', async () => {
    const p = await startTestProxy({ shutdown: { drainTimeoutMs: 5_000 }, routes: [{ name: 'ws', upstream: raw.url, type: 'http', websocket: { enabled: false } }] })
    const { connect } = await import('node:net')
    for (const req of ['GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n']) {
      await new Promise<void>((resolve) => {
        const s = connect(p.port, '127.0.0.1', () => s.write(req))
        s.on('data', () => undefined)
        s.on('close', () => resolve())
      })
    }
    const t0 = Date.now()
    await p.close()
    expect(Date.now() - t0).toBeLessThan(2_000)
  })

  it('refuses an invalid handshake without touching the backend', async () => {
    const { connect } = await import('node:net')
    const before = raw.wss.clients.size
    const answer = await new Promise<string>((resolve) => {
      const s = connect(proxy.port, '127.0.0.1', () => s.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'))
      let out = ''
      s.on('data', (d) => (out += d.toString()))
      s.on('close', () => resolve(out))
    })
    expect(answer).toMatch(/^HTTP\/1.1 400/)
    expect(answer).toContain('BAD_REQUEST')
    expect(raw.wss.clients.size).toBe(before)
  })
})
