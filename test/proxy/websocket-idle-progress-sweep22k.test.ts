// websocket.idleTimeoutMs counted whole frames only: bytes still moving (a long message arriving
// in pieces, a slow reader draining its backlog) looked idle, and the connection was closed with
// 1001 mid-transfer. Envoy's idle timeout counts any byte either way. Real WorkerProxy, ws
// backend, a raw client that trickles its frame.
import { once } from 'node:events'
import { createServer } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
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

async function backend(onConnection: (ws: WebSocket) => void): Promise<string> {
  const server = createServer((_req, res) => res.end('ok'))
  const wss = new WebSocketServer({ server })
  wss.on('connection', onConnection)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => {
    for (const c of wss.clients) c.terminate()
    server.closeAllConnections()
    server.close()
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function startProxy(upstream: string, websocket: Record<string, unknown>): Promise<number> {
  const config = validateConfig({ routes: [{ name: 'ws', upstream, type: 'http', filters: [], websocket }] })
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, new LogCapture()), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return (proxy.server.address() as AddressInfo).port
}

/** A raw client past its handshake: its socket, and what came after the 101. */
async function rawClient(port: number): Promise<{ sock: Socket; received: () => Buffer }> {
  const sock = connect(port, '127.0.0.1')
  cleanups.push(() => sock.destroy())
  await once(sock, 'connect')
  let all = Buffer.alloc(0)
  sock.on('data', (c: Buffer) => (all = Buffer.concat([all, c])))
  sock.write('GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
  await expect.poll(() => all.indexOf('\r\n\r\n'), { timeout: 10_000 }).toBeGreaterThan(0)
  expect(all.toString('latin1')).toMatch(/^HTTP\/1\.1 101 /)
  return { sock, received: () => all.subarray(all.indexOf('\r\n\r\n') + 4) }
}

describe('websocket.idleTimeoutMs with bytes still moving', () => {
  it('a long message arriving in pieces reaches the backend, not cut as idle before its last byte', async () => {
    const got: number[] = []
    const up = await backend((ws) => ws.on('message', (data: Buffer) => got.push(data.length)))
    const { sock, received } = await rawClient(await startProxy(up, { idleTimeoutMs: 300 }))
    const size = 8 * 1024
    // One masked binary frame (mask key 0: the payload goes as it is).
    const frame = Buffer.concat([Buffer.from([0x82, 0x80 | 126, size >> 8, size & 0xff]), Buffer.alloc(4), Buffer.alloc(size, 7)])
    // 9 pieces 100 ms apart: 900 ms for the message, never a pause as long as the idle timeout.
    for (let at = 0; at < frame.length; at += 1024) {
      sock.write(frame.subarray(at, at + 1024))
      await new Promise((r) => setTimeout(r, 100))
    }
    // (the old code: the client was closed 1001 after 300 ms; the backend never got the message)
    await expect.poll(() => got, { timeout: 3_000 }).toEqual([size])
    // Once nothing moves, the idle close still comes: 1001 "idle timeout".
    await expect.poll(() => received().subarray(0, 4), { timeout: 3_000 }).toEqual(Buffer.from([0x88, 14, 0x03, 0xe9]))
    expect(received().subarray(4, 16).toString()).toBe('idle timeout')
  }, 15_000)
})
