// A close frame was relayed to the other side only once the TCP connection it came on had closed
// (ws emits 'close' then): a client that sent its close frame and then stayed connected (waiting
// for the server to close TCP first, RFC 6455 §7.1.1, or gone quiet behind a dead network) left
// the backend holding the session until ws's closeTimeout (30 s); the same for a backend's close
// toward the client. Real WorkerProxy, a real ws backend, raw sockets that never close on their own.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
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

async function startProxy(port: number): Promise<{ proxy: WorkerProxy; port: number }> {
  const config = validateConfig({ routes: [{ name: 'ws', upstream: `http://127.0.0.1:${port}`, type: 'http', filters: [] }] })
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, new LogCapture()), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return { proxy, port: (proxy.server.address() as AddressInfo).port }
}

const accept = (key: string): string => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

/** A close frame with `code` and `reason`, masked as a client's must be. */
function maskedClose(code: number, reason: string): Buffer {
  const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)])
  const mask = randomBytes(4)
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)])
}

/** The first close frame (unmasked, as a server sends it) in what `sock` received after the 101. */
function closeFrameIn(data: Buffer): { code: number; reason: string } | undefined {
  let at = data.indexOf('\r\n\r\n') + 4
  while (at + 2 <= data.length) {
    const len = data[at + 1]! & 0x7f // control frames and the short messages here
    if (data[at] === 0x88 && at + 2 + len <= data.length) return { code: data.readUInt16BE(at + 2), reason: data.subarray(at + 4, at + 2 + len).toString() }
    at += 2 + len
  }
  return undefined
}

describe('a close frame is relayed as it arrives, not once its TCP connection closes', () => {
  it("the client's close frame reaches the backend while the client keeps its connection open", async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    await once(wss, 'listening')
    cleanups.push(() => {
      for (const c of wss.clients) c.terminate()
      wss.close()
    })
    const backendClose = new Promise<{ code: number; reason: string }>((resolve) => {
      wss.on('connection', (ws) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    })
    const { proxy, port } = await startProxy((wss.address() as AddressInfo).port)
    // allowHalfOpen: the client does not close its side when the proxy closes its own.
    const sock = connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    cleanups.push(() => sock.destroy())
    sock.on('error', () => undefined)
    const received: Buffer[] = []
    sock.on('data', (d: Buffer) => received.push(d))
    await once(sock, 'connect')
    sock.write('GET /x HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
    await expect.poll(() => Buffer.concat(received).includes('\r\n\r\n'), { timeout: 5_000 }).toBe(true)
    expect(Buffer.concat(received).toString('latin1')).toMatch(/^HTTP\/1\.1 101 /)
    sock.write(maskedClose(4000, 'client bye'))
    // (the old code: only when the proxy gave up on the client's TCP close, ws's closeTimeout of 30 s)
    const got = await Promise.race([backendClose, new Promise((r) => setTimeout(r, 5_000, 'timeout'))])
    expect(got).toEqual({ code: 4000, reason: 'client bye' })
    await expect.poll(() => closeFrameIn(Buffer.concat(received)), { timeout: 5_000 }).toEqual({ code: 4000, reason: 'client bye' })
    sock.destroy()
    await expect.poll(() => proxy.bridges.size, { timeout: 5_000 }).toBe(0)
  }, 15_000)

  it("the backend's close frame reaches the client while the backend keeps its connection open", async () => {
    const sockets = new Set<Socket>()
    let backendSock: Socket | undefined
    // allowHalfOpen: the backend does not close its side when the proxy closes its own.
    const backend = createNetServer({ allowHalfOpen: true }, (s) => {
      sockets.add(s)
      s.on('error', () => undefined)
      let head = ''
      const onData = (c: Buffer): void => {
        head += c.toString('latin1')
        if (!head.includes('\r\n\r\n')) return
        s.removeListener('data', onData)
        s.on('data', () => undefined) // reads (and drops) the proxy's echo
        s.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept(/sec-websocket-key: *(\S+)/i.exec(head)![1]!)}\r\n\r\n`)
        backendSock = s
      }
      s.on('data', onData)
    })
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r))
    cleanups.push(() => {
      for (const s of sockets) s.destroy()
      backend.close()
    })
    const { proxy, port } = await startProxy((backend.address() as AddressInfo).port)
    const ws = new WebSocket(`ws://127.0.0.1:${port}/x`)
    ws.on('error', () => undefined)
    cleanups.push(() => ws.terminate())
    await once(ws, 'open')
    const closed = once(ws, 'close') as Promise<[number, Buffer]>
    const reason = Buffer.from('backend bye')
    backendSock!.write(Buffer.concat([Buffer.from([0x88, 2 + reason.length, 4001 >> 8, 4001 & 0xff]), reason]))
    // (the old code: only once the proxy's close handshake with the backend timed out, 30 s later)
    const got = (await Promise.race([closed, new Promise((r) => setTimeout(r, 5_000, ['timeout']))])) as [number | string, Buffer?]
    expect(got[0]).toBe(4001)
    expect(got[1]?.toString()).toBe('backend bye')
    backendSock!.destroy()
    await expect.poll(() => proxy.bridges.size, { timeout: 5_000 }).toBe(0)
  }, 15_000)
})
