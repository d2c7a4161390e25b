// A side that went away without a close frame (1006: a backend that wrote its last messages and
// then closed its TCP connection) had its peer cut with terminate(): what the bridge still held
// for that peer (messages it had relayed but a slow reader had not taken yet, up to
// maxBufferedBytes) was thrown away. Envoy flushes what it has before it closes the other side.
// Real WorkerProxy, a raw TCP backend, a raw client that starts reading late.
import { once } from 'node:events'
import { createHash } from 'node:crypto'
import { connect, type AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawTcpUpstream } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function startProxy(upstream: string): Promise<number> {
  const config = validateConfig({ routes: [{ name: 'ws', upstream, type: 'http', filters: [], websocket: { maxBufferedBytes: 16 * 1024 * 1024 } }] })
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, new LogCapture()), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return (proxy.server.address() as AddressInfo).port
}

const accept = (key: string): string => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

describe('a backend that closes its TCP connection without a close frame', () => {
  it('the client still gets every message the backend sent before it went', async () => {
    const count = 40
    const size = 256 * 1024
    // Unmasked binary frames with a 64-bit length, each filled with its own index.
    const frame = (i: number): Buffer => Buffer.concat([Buffer.from([0x82, 127, 0, 0, 0, 0, size >>> 24, (size >>> 16) & 0xff, (size >>> 8) & 0xff, size & 0xff]), Buffer.alloc(size, i)])
    const up = await startRawTcpUpstream((sock, head) => {
      const key = /sec-websocket-key: *(\S+)/i.exec(head)![1]!
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ${accept(key)}\r\n\r\n`)
      for (let i = 0; i < count; i++) sock.write(frame(i))
      sock.end(Buffer.from([0x81, 4, ...Buffer.from('last')])) // a last text frame, then FIN: no close frame
    })
    cleanups.push(() => up.close())
    const port = await startProxy(up.url)
    const sock = connect(port, '127.0.0.1')
    cleanups.push(() => sock.destroy())
    await once(sock, 'connect')
    sock.pause()
    sock.write('GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
    // The client reads slowly (at most 256 KiB every 20 ms): the proxy has read the backend's
    // frames and its FIN (all under maxBufferedBytes) while most of them still wait for the client.
    const chunks: Buffer[] = []
    let closed = false
    sock.on('close', () => (closed = true))
    const timer = setInterval(() => {
      const c = sock.read(Math.min(256 * 1024, sock.readableLength)) as Buffer | null
      if (c !== null) chunks.push(c)
    }, 20)
    cleanups.push(() => clearInterval(timer))
    await expect.poll(() => closed && sock.readableLength === 0, { timeout: 10_000 }).toBe(true)
    const all = Buffer.concat(chunks)
    const body = all.subarray(all.indexOf('\r\n\r\n') + 4)
    // (the old code: the last messages the proxy held for the client were dropped with its connection)
    expect(body.length).toBe(count * (10 + size) + 6)
    for (let i = 0; i < count; i++) expect(body[i * (10 + size) + 10 + size - 1]).toBe(i)
    expect(body.subarray(-6)).toEqual(Buffer.from([0x81, 4, ...Buffer.from('last')]))
  }, 15_000)
})
