// A WebSocket side the bridge paused for backpressure (its peer was not reading fast enough) was
// closed without being read again: its close reply sat unread behind what it had sent meanwhile,
// so the close handshake hung until ws's closeTimeout or, in a drain, the drain deadline. A
// rolling deploy held such a client (the backend behind it slow) until the deadline cut it,
// instead of telling it 1001 at once so it reconnects elsewhere. Real WorkerProxy, a real ws
// backend that stops reading, a real ws client.
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { LogCapture } from '../helpers/proxy.ts'

describe('WebSocket bridge: closing a side paused for backpressure', () => {
  const server = createServer()
  const wss = new WebSocketServer({ noServer: true })
  beforeAll(async () => {
    server.on('upgrade', (req, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.once('message', () => ws.pause()) // a backend that stops reading
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  })
  afterAll(() => {
    for (const c of wss.clients) c.terminate()
    server.closeAllConnections()
    server.close()
  })

  it('a drain tells the paused client 1001 at once, not at the drain deadline', async () => {
    const config = validateConfig({
      log: { level: 'info' },
      routes: [{ name: 'ws', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, type: 'http', websocket: { maxBufferedBytes: 65536 } }],
    })
    const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, new LogCapture()), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    const port = (proxy.server.address() as AddressInfo).port
    const ws = new WebSocket(`ws://127.0.0.1:${port}/x`)
    ws.on('error', () => undefined)
    let draining: Promise<void> | undefined
    try {
      await once(ws, 'open')
      ws.send('first')
      // Flood until the client's own buffer stops draining: the proxy stopped reading it.
      const chunk = Buffer.alloc(64 * 1024, 1)
      for (let i = 0; i < 2000 && ws.bufferedAmount < 8 * 1024 * 1024; i++) {
        ws.send(chunk)
        await new Promise((r) => setImmediate(r))
      }
      expect(ws.bufferedAmount).toBeGreaterThanOrEqual(8 * 1024 * 1024)
      const closed = once(ws, 'close')
      const t0 = performance.now()
      draining = proxy.drain(40_000)
      const [code] = (await closed) as [number]
      expect(code).toBe(1001)
      // (the old code: only when the drain deadline cut it, 40 s)
      expect(performance.now() - t0).toBeLessThan(20_000)
    } finally {
      ws.terminate()
      for (const c of wss.clients) c.terminate()
      await draining
    }
  }, 60_000)
})
