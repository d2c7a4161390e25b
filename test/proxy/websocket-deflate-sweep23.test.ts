// websocket.perMessageDeflate: the bridge reads frames on both sides, so a client's
// permessage-deflate offer was never relayed (Envoy and nginx relay it) and every message went
// uncompressed. With the option on, the client side negotiates it and the backend side stays
// plain; a compressed message that inflates past maxMessageBytes is still refused (1009), so a
// zip bomb costs no more than the limit. Real WorkerProxy, ws backend and ws client.
import { once } from 'node:events'
import { createServer } from 'node:http'
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

/** An echo backend that records the extensions each client negotiated with it. */
async function backend(): Promise<{ url: string; extensions: string[] }> {
  const extensions: string[] = []
  const server = createServer((_req, res) => res.end('ok'))
  const wss = new WebSocketServer({ server, perMessageDeflate: true })
  wss.on('connection', (ws) => {
    extensions.push(ws.extensions)
    ws.on('message', (data, binary) => ws.send(data, { binary }))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => {
    for (const c of wss.clients) c.terminate()
    server.closeAllConnections()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, extensions }
}

async function proxy(upstream: string, websocket: Record<string, unknown>): Promise<string> {
  const config = validateConfig({ routes: [{ name: 'ws', upstream, type: 'http', filters: [], websocket }] })
  const p = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await p.apply(1, config)
  await p.listen('127.0.0.1', 0)
  cleanups.push(() => p.drain(100))
  return `ws://127.0.0.1:${(p.server.address() as AddressInfo).port}/`
}

async function open(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: true })
  cleanups.push(() => ws.terminate())
  await once(ws, 'open')
  return ws
}

it('negotiates permessage-deflate with the client when on, relays both ways, and keeps the backend side plain', async () => {
  const be = await backend()
  const ws = await open(await proxy(be.url, { perMessageDeflate: true }))
  expect(ws.extensions).toContain('permessage-deflate')
  const big = JSON.stringify({ data: { items: Array.from({ length: 2000 }, (_, i) => ({ id: i, name: 'item' })) } })
  ws.send(big)
  const [echo] = (await once(ws, 'message')) as [Buffer]
  expect(echo.toString()).toBe(big)
  expect(be.extensions).toEqual([''])
})

it('does not negotiate it when off (the default)', async () => {
  const be = await backend()
  const ws = await open(await proxy(be.url, {}))
  expect(ws.extensions).toBe('')
})

it('refuses a compressed message that inflates past maxMessageBytes with 1009', async () => {
  const be = await backend()
  const ws = await open(await proxy(be.url, { perMessageDeflate: true, maxMessageBytes: 64 * 1024 }))
  ws.send(Buffer.alloc(1024 * 1024, 0)) // ~1 KiB on the wire, 1 MiB inflated
  const [code] = (await once(ws, 'close')) as [number]
  expect(code).toBe(1009)
})
