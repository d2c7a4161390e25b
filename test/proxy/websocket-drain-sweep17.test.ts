// Graceful drain with a passthrough WebSocket whose client answers the gateway's 1001 late: the
// close handshake is still in progress on the client's side when the backend has long answered.
// The drain must wait for it (bounded by its deadline), not cut the client's TCP connection under
// it. Real proxy, a real ws backend, a raw TCP WebSocket client that controls its close timing.
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

describe('drain: a close handshake in progress on the client side', () => {
  let server: Server
  let wss: WebSocketServer
  let proxy: TestProxy | undefined
  const backendCloses: number[] = []

  beforeAll(async () => {
    server = createServer()
    wss = new WebSocketServer({ noServer: true })
    server.on('upgrade', (req: IncomingMessage, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.on('message', (d, isBinary) => ws.send(d, { binary: isBinary }))
        ws.on('close', (code) => backendCloses.push(code)) // answers the gateway's 1001 at once
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    proxy = await startTestProxy({ shutdown: { drainTimeoutMs: 20_000 }, routes: [{ name: 'ws', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, type: 'http' }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of wss?.clients ?? []) ws.terminate()
    wss?.close()
    server?.closeAllConnections()
    server?.close()
  })

  it('the drain waits for the client to answer the 1001 before it ends the connection', { timeout: 60_000 }, async () => {
    const p = proxy!
    const sock: Socket = connect(p.port, '127.0.0.1')
    await once(sock, 'connect')
    sock.write(
      'GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    let buf = Buffer.alloc(0)
    let ended = false
    sock.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])))
    sock.on('end', () => (ended = true))
    sock.on('close', () => (ended = true))
    sock.on('error', () => undefined)
    await expect.poll(() => buf.includes('\r\n\r\n'), { timeout: 10_000 }).toBe(true)
    expect(buf.toString('latin1')).toMatch(/^HTTP\/1\.1 101 /)
    const headEnd = buf.indexOf('\r\n\r\n') + 4

    const closing = p.close()
    // The gateway's close frame: FIN + opcode 8, payload 1001 "gateway shutting down".
    await expect.poll(() => buf.subarray(headEnd).includes(0x88), { timeout: 10_000 }).toBe(true)
    const frame = buf.subarray(buf.indexOf(0x88, headEnd))
    expect(frame.readUInt16BE(2)).toBe(1001)
    // The backend has answered its own 1001 (its side of the bridge is closed) ...
    await expect.poll(() => backendCloses.length, { timeout: 10_000 }).toBe(1)
    // ... and the client takes its time to answer: the gateway must still be there for it.
    await sleep(1_500)
    expect(ended).toBe(false)
    // The client's close frame (masked, as a client's must be): 1001.
    sock.write(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9]))
    await expect.poll(() => ended, { timeout: 10_000 }).toBe(true)
    await closing
    proxy = undefined
    sock.destroy()
  })
})
