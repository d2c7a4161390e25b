// log.access.sampleRate and WebSocket handshakes: "the fraction of successful requests logged;
// 5xx always". A handshake's line (101 relayed, or a backend's 4xx refusal) was written whatever
// the rate, so a subscription service with clients reconnecting (or a flood of refused upgrades)
// logged every one of them at sampleRate 0.25 or 0. Sampled like any request now; 5xx and a
// client that left mid-handshake (499) are still always logged. Real WorkerProxy, real ws.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
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
import { waitUntil } from '../helpers/wait.ts'

/** Opens a WebSocket through the proxy: 'open' (then closed) or the refusal's status. */
function handshake(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('open', () => {
      ws.close()
      resolve(101)
    })
    ws.once('unexpected-response', (_req, res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
      ws.terminate()
    })
    ws.once('error', reject)
  })
}

describe('access log sampling of WebSocket handshakes', () => {
  let backend: Server
  let wss: WebSocketServer
  let proxy: WorkerProxy
  let logs: LogCapture
  let base: string
  beforeAll(async () => {
    backend = createServer((_req, res) => res.end('ok'))
    wss = new WebSocketServer({ noServer: true })
    backend.on('upgrade', (req, socket, head) => {
      if (req.url?.startsWith('/ws/refused')) {
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
        return
      }
      wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (m) => ws.send(m)))
    })
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r))
    const up = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`
    const config = validateConfig({
      mode: 'ingress',
      log: { access: { sampleRate: 0 } },
      routes: [
        { name: 'ws', match: { pathPrefix: '/ws' }, upstream: up, type: 'http' },
        // nothing listens on port 1: the handshake gets a 502
        { name: 'down', match: { pathPrefix: '/down' }, upstream: 'http://127.0.0.1:1', type: 'http' },
      ],
    })
    logs = new LogCapture()
    proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
    await proxy.apply(1, config)
    const port = await proxy.listen('127.0.0.1', 0)
    base = `127.0.0.1:${port}`
  })
  afterAll(async () => {
    await proxy?.drain(200)
    for (const c of wss?.clients ?? []) c.terminate()
    backend?.closeAllConnections()
    await new Promise((r) => backend?.close(r))
  })

  const accessLines = (path: string) => logs.find('access').filter((l) => l.path === path)

  it('a 5xx handshake is logged at sampleRate 0 (and a plain 200 is not: the rate is in force)', async () => {
    expect(await handshake(`ws://${base}/down/x`)).toBe(502)
    expect((await fetch(`http://${base}/ws/plain`)).status).toBe(200)
    await waitUntil(() => accessLines('/down/x').length === 1, 5_000, 'the 502 line')
    expect(accessLines('/down/x')[0]).toMatchObject({ status: 502, route: 'down' })
    expect(accessLines('/ws/plain')).toEqual([])
  })

  it('successful (101) and refused (403) handshakes are sampled out at sampleRate 0', async () => {
    expect(await handshake(`ws://${base}/ws/open`)).toBe(101)
    expect(await handshake(`ws://${base}/ws/refused`)).toBe(403)
    // A later 5xx line is the marker that the lines before it were written (the logger is synchronous).
    expect(await handshake(`ws://${base}/down/marker`)).toBe(502)
    await waitUntil(() => accessLines('/down/marker').length >= 1, 5_000, 'the marker line')
    await waitUntil(() => proxy.inflight === 0, 5_000, 'the relayed socket to end')
    expect(accessLines('/ws/open')).toEqual([])
    expect(accessLines('/ws/refused')).toEqual([])
  })
})
