// websocket.perMessageDeflate on, a backend that sends its last message and closes its TCP
// connection without a close frame: the client is closed without one too, after what the bridge
// still owes it. That was judged by the socket's write buffer alone, and a message ws was still
// compressing (off the socket, in zlib's thread pool) is not in it yet: the client was cut and
// the message lost. Real WorkerProxy, a raw TCP backend, a ws client that negotiates deflate.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, expect, it } from 'vitest'
import WebSocket from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawTcpUpstream } from '../helpers/backends.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const accept = (key: string): string => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

it('the client gets the message still being compressed when the backend went without a close frame', async () => {
  // Base64 of random bytes: slow enough to deflate that the backend's FIN is read meanwhile.
  const text = randomBytes(1536 * 1024).toString('base64')
  const payload = Buffer.from(text)
  const up = await startRawTcpUpstream((sock, head) => {
    const key = /sec-websocket-key: *(\S+)/i.exec(head)![1]!
    sock.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ${accept(key)}\r\n\r\n`)
    // One unmasked text frame with a 64-bit length, then FIN: no close frame.
    const len = payload.length
    sock.end(Buffer.concat([Buffer.from([0x81, 127, 0, 0, 0, 0, len >>> 24, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff]), payload]))
  })
  cleanups.push(() => up.close())
  const config = validateConfig({ routes: [{ name: 'ws', upstream: up.url, type: 'http', filters: [], websocket: { perMessageDeflate: true } }] })
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))

  const ws = new WebSocket(`ws://127.0.0.1:${(proxy.server.address() as AddressInfo).port}/`, { perMessageDeflate: true })
  cleanups.push(() => ws.terminate())
  const messages: string[] = []
  ws.on('message', (d) => messages.push(d.toString()))
  ws.on('error', () => undefined)
  await once(ws, 'open')
  expect(ws.extensions).toContain('permessage-deflate')
  const [code] = (await once(ws, 'close')) as [number]
  expect(code).toBe(1006) // no close frame, as the backend sent none
  // (the old code: the client was cut while its message was being compressed; it got none)
  expect(messages.length).toBe(1)
  expect(messages[0] === text).toBe(true)
})
