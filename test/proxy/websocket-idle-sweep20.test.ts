// A bridged WebSocket whose peer vanished without FIN or RST held both connections, the gauge and
// the upgrade's concurrency slot forever: no idle timeout and no TCP keepalive. Now both sockets
// have keepalive on, and websocket.idleTimeoutMs (off by default) closes a connection on which no
// frame moved either way, as Envoy's stream idle timeout does; pings count as traffic.
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { createServer } from 'node:http'
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

async function echoBackend(): Promise<string> {
  const server = createServer((_req, res) => res.end('ok'))
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (d, binary) => ws.send(d, { binary })))
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

async function open(port: number): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`)
  cleanups.push(() => ws.terminate())
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  return ws
}

const closed = (ws: WebSocket) => new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })))

/** The `tr` (timer) field of the kernel's entry for the proxy's end of a client's connection. */
function proxySideTimer(proxyPort: number, clientPort: number): string | undefined {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0')
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 6) continue
    if (f[1]!.endsWith(`:${hex(proxyPort)}`) && f[2]!.endsWith(`:${hex(clientPort)}`)) return f[5]!.split(':')[0]
  }
  return undefined
}

describe('bridged WebSocket liveness', () => {
  it('idleTimeoutMs closes a silent connection with 1001 "idle timeout"; one that pings stays open', async () => {
    const port = await startProxy(await echoBackend(), { idleTimeoutMs: 400 })
    const silent = await open(port)
    const pinging = await open(port)
    const timer = setInterval(() => pinging.ping(), 100)
    cleanups.push(() => clearInterval(timer))
    const t0 = Date.now()
    expect(await closed(silent)).toEqual({ code: 1001, reason: 'idle timeout' })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350)
    // Well past the timeout, the pinging one still echoes.
    await new Promise((r) => setTimeout(r, 600))
    expect(pinging.readyState).toBe(WebSocket.OPEN)
    const echo = new Promise<string>((r) => pinging.once('message', (d) => r(d.toString())))
    pinging.send('still here')
    expect(await echo).toBe('still here')
  })

  it('by default (0) a quiet connection stays open, and the proxy side of it has TCP keepalive on', async () => {
    const port = await startProxy(await echoBackend(), {})
    const ws = await open(port)
    const clientPort = (ws as unknown as { _socket: { localPort: number } })._socket.localPort
    await expect.poll(() => proxySideTimer(port, clientPort), { timeout: 5_000 }).toBe('02') // 02: the keepalive timer
    expect(ws.readyState).toBe(WebSocket.OPEN)
  })
})
