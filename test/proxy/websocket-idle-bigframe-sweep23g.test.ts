// websocket.idleTimeoutMs counted bytes as "moved" only once a whole write left the proxy's
// buffers: one large frame handed to the kernel in a single write and drained by a slow reader
// showed no progress until its last byte, so the connection was closed with 1001 while it was
// still moving bytes. Real WorkerProxy, ws backend, a raw client that reads slowly.
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

describe('websocket.idleTimeoutMs with one large frame going to a slow reader', () => {
  it('is not cut as idle while the frame is still being read', async () => {
    const size = 24 * 1024 * 1024
    const up = await backend((ws) => ws.send(Buffer.alloc(size, 7)))
    const port = await startProxy(up, { idleTimeoutMs: 1_000, maxMessageBytes: 32 * 1024 * 1024, maxBufferedBytes: 32 * 1024 * 1024 })
    const sock: Socket = connect(port, '127.0.0.1')
    cleanups.push(() => sock.destroy())
    await once(sock, 'connect')
    sock.write('GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
    // The first half is read slowly (at most 64 KiB every 20 ms, ~4 s), never pausing as long
    // as the idle timeout; the kernel takes a writer's bytes in steps of about a third of its
    // send buffer (≤ 4 MiB), so the proxy sees progress at least every ~420 ms (a busy machine
    // may delay this process's reads by half a second and still pass). The rest is read
    // at once: what sits in the client's kernel buffer moves nothing the proxy can see.
    const chunks: Buffer[] = []
    let got = 0
    const take = (c: Buffer | null): void => {
      if (c === null) return
      chunks.push(c)
      got += c.length
    }
    sock.pause()
    const timer = setInterval(() => {
      take(sock.read(Math.min(64 * 1024, sock.readableLength)) as Buffer | null)
      if (got < size / 2) return
      clearInterval(timer)
      sock.on('data', take).resume()
    }, 20)
    cleanups.push(() => clearInterval(timer))
    const all = (): Buffer => Buffer.concat(chunks)
    const head = 'HTTP/1.1 101 '
    await expect.poll(() => all().indexOf('\r\n\r\n'), { timeout: 10_000 }).toBeGreaterThan(0)
    const start = all().indexOf('\r\n\r\n') + 4
    expect(all().toString('latin1', 0, head.length)).toBe(head)
    await expect.poll(() => got, { timeout: 20_000, interval: 20 }).toBeGreaterThanOrEqual(start + 10 + size)
    // One unmasked binary frame with a 64-bit length, whole; nothing after it yet.
    expect(all().subarray(start, start + 2)).toEqual(Buffer.from([0x82, 127]))
    expect(all().readBigUInt64BE(start + 2)).toBe(BigInt(size))
    const after = (): Buffer => all().subarray(start + 10 + size)
    // (the old code: a 1001 "idle timeout" close frame came right behind the message)
    expect(after().length).toBe(0)
    // Once nothing moves, the idle close comes.
    await expect.poll(() => after().subarray(0, 4), { timeout: 3_000 }).toEqual(Buffer.from([0x88, 14, 0x03, 0xe9]))
  }, 30_000)
})
