// websocket.perMessageDeflate: a client's permessage-deflate offer that ws's server cannot accept
// with the bridge's settings (no client_max_window_bits, as Go's gorilla/websocket offers it; a
// server_max_window_bits under the bridge's 13) failed the whole handshake with ws's text/html
// 400, after the upstream connection had been opened for it. RFC 7692 §7.1.2: the server declines
// such an offer and the connection goes on uncompressed. Real WorkerProxy, ws backend and clients.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup(): Promise<{ url: string; backendConnections: () => number }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(wss, 'listening')
  let connections = 0
  wss.on('connection', (ws) => {
    connections++
    ws.on('message', (data, binary) => ws.send(data, { binary }))
  })
  cleanups.push(() => {
    for (const c of wss.clients) c.terminate()
    wss.close()
  })
  const config = validateConfig({ routes: [{ name: 'ws', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, type: 'http', filters: [], websocket: { perMessageDeflate: true } }] })
  const p = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await p.apply(1, config)
  await p.listen('127.0.0.1', 0)
  cleanups.push(() => p.drain(100))
  return { url: `ws://127.0.0.1:${(p.server.address() as AddressInfo).port}/`, backendConnections: () => connections }
}

async function roundTrip(url: string, perMessageDeflate: Record<string, unknown>): Promise<{ extensions: string; echo: string }> {
  const ws = new WebSocket(url, { perMessageDeflate })
  cleanups.push(() => ws.terminate())
  const status = new Promise<number>((resolve) => ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)))
  ws.on('error', () => undefined)
  const opened = await Promise.race([once(ws, 'open').then(() => 101), status])
  // (the old code: 400 "Invalid or unacceptable Sec-WebSocket-Extensions header")
  expect(opened).toBe(101)
  const text = 'x'.repeat(4096)
  ws.send(text)
  const [msg] = (await once(ws, 'message')) as [Buffer]
  return { extensions: ws.extensions, echo: msg.toString() }
}

it('declines an offer without client_max_window_bits and goes on uncompressed', async () => {
  const { url, backendConnections } = await setup()
  const got = await roundTrip(url, { clientMaxWindowBits: false, clientNoContextTakeover: true, serverNoContextTakeover: true })
  expect(got.extensions).toBe('')
  expect(got.echo).toBe('x'.repeat(4096))
  expect(backendConnections()).toBe(1)
})

it('declines an offer asking for a smaller server window than the bridge uses', async () => {
  const { url } = await setup()
  const got = await roundTrip(url, { serverMaxWindowBits: 10 })
  expect(got.extensions).toBe('')
  expect(got.echo).toBe('x'.repeat(4096))
})

it('still negotiates an acceptable offer', async () => {
  const { url } = await setup()
  const got = await roundTrip(url, {})
  expect(got.extensions).toContain('permessage-deflate')
  expect(got.echo).toBe('x'.repeat(4096))
})

it('refuses a header ws cannot parse before opening the upstream for it', async () => {
  const { url, backendConnections } = await setup()
  const ws = new WebSocket(url, { perMessageDeflate: false, headers: { 'sec-websocket-extensions': 'permessage-deflate; =' } })
  cleanups.push(() => ws.terminate())
  ws.on('error', () => undefined)
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, import('node:http').IncomingMessage]
  expect(res.statusCode).toBe(400)
  // (the old code: ws's text/html 400, once the backend had accepted a connection for it)
  expect(res.headers['content-type']).toMatch(/json/)
  expect(backendConnections()).toBe(0)
})
