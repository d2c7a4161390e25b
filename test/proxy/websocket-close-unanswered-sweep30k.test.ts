// A backend that never answers the close frame relayed to it (gorilla/websocket answers only while
// the application reads: a push-only handler never does) kept the upstream connection, the
// igw_websocket_connections gauge and the client's concurrency slot for ws's closeTimeout (30 s)
// after the client had closed and gone; nginx and Envoy close the upstream as the client's
// connection ends. Real WorkerProxy, real `ws` client and backend, a raw TCP backend that neither
// answers close frames nor ends on FIN.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { LogCapture } from '../helpers/proxy.ts'
import { metricTotal } from '../helpers/slow-clients.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function startProxy(port: number): Promise<{ proxy: WorkerProxy; port: number; registry: Registry }> {
  const config = validateConfig({ routes: [{ name: 'ws', upstream: `http://127.0.0.1:${port}`, type: 'http', filters: [] }] })
  const registry = new Registry()
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, new LogCapture()), metrics: new ProxyMetrics(registry), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return { proxy, port: (proxy.server.address() as AddressInfo).port, registry }
}

const accept = (key: string): string => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

/** The first (masked, short) close frame in what the backend read after the upgrade request. */
function closeFrameIn(data: Buffer): { code: number; reason: string } | undefined {
  let at = 0
  while (at + 6 <= data.length) {
    const len = data[at + 1]! & 0x7f // control frames and short messages only here
    if (at + 6 + len > data.length) return undefined
    const payload = Buffer.from(data.subarray(at + 6, at + 6 + len).map((b, i) => b ^ data[at + 2 + (i % 4)]!))
    if ((data[at]! & 0x0f) === 8) return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() }
    at += 6 + len
  }
  return undefined
}

describe('the client closed: the upstream is not held for a close reply the backend never sends', () => {
  it('the backend gets the close frame and then its connection closes, at once', async () => {
    let backendSock: Socket | undefined
    let backendEnded = false
    const read: Buffer[] = []
    // allowHalfOpen: a FIN alone does not end its connection, as it does not a handler that never reads.
    const backend = createNetServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined)
      s.on('end', () => (backendEnded = true))
      let head = ''
      const onHead = (c: Buffer): void => {
        head += c.toString('latin1')
        if (!head.includes('\r\n\r\n')) return
        s.removeListener('data', onHead)
        s.on('data', (d: Buffer) => read.push(d))
        s.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept(/sec-websocket-key: *(\S+)/i.exec(head)![1]!)}\r\n\r\n`)
        backendSock = s
      }
      s.on('data', onHead)
    })
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r))
    cleanups.push(() => {
      backendSock?.destroy()
      backend.close()
    })
    const { proxy, port, registry } = await startProxy((backend.address() as AddressInfo).port)
    const ws = new WebSocket(`ws://127.0.0.1:${port}/x`)
    cleanups.push(() => ws.terminate())
    await once(ws, 'open')
    ws.close(4000, 'bye')
    await once(ws, 'close')
    await expect.poll(() => closeFrameIn(Buffer.concat(read)), { timeout: 3_000 }).toEqual({ code: 4000, reason: 'bye' })
    // (the old code: only when ws's closeTimeout of 30 s cut it)
    await expect.poll(() => backendEnded, { timeout: 3_000 }).toBe(true)
    await expect.poll(() => proxy.bridges.size, { timeout: 3_000 }).toBe(0)
    // Not just half-closed: the backend's writes find the connection gone (a reset).
    await expect.poll(() => (backendSock!.write(Buffer.from([0x81, 1, 0x41])), backendSock!.destroyed), { timeout: 3_000 }).toBe(true)
    expect(await metricTotal(registry, 'igw_websocket_connections', { route: 'ws' })).toBe(0)
  })

  it('a backend that answers still sees a clean close with the client’s code and reason', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    await once(wss, 'listening')
    cleanups.push(() => {
      for (const c of wss.clients) c.terminate()
      wss.close()
    })
    const backendClose = new Promise<[number, string]>((resolve) => wss.on('connection', (b) => b.on('close', (code, reason) => resolve([code, reason.toString()]))))
    const { proxy, port } = await startProxy((wss.address() as AddressInfo).port)
    const ws = new WebSocket(`ws://127.0.0.1:${port}/x`)
    cleanups.push(() => ws.terminate())
    await once(ws, 'open')
    ws.close(4000, 'r'.repeat(123)) // the longest reason a close frame carries
    const [code, reason] = (await once(ws, 'close')) as [number, Buffer]
    expect([code, reason.toString()]).toEqual([4000, 'r'.repeat(123)])
    expect(await backendClose).toEqual([4000, 'r'.repeat(123)])
    await expect.poll(() => proxy.bridges.size, { timeout: 3_000 }).toBe(0)
  })
})
