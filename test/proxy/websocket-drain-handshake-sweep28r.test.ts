// A drain whose deadline passes while a WebSocket handshake still waits on its upstream (the
// backend took the upgrade request and has not answered): the handshake was in no list the
// deadline cuts (not a bridge yet; node's closeAllConnections does not see upgrade sockets), so
// the drain finished with it still open. The client got nothing before the thread went (its
// socket cut without a reply), or the handshake held on to its own deadline, long past the drain's.
// Real WorkerProxy, a raw TCP backend that reads the upgrade and never answers, a raw client.
import { once } from 'node:events'
import { connect, type AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawTcpUpstream } from '../helpers/backends.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

it('the drain deadline answers a handshake still waiting on its upstream with a 503', async () => {
  const up = await startRawTcpUpstream(() => undefined) // reads the upgrade, never answers
  cleanups.push(() => up.close())
  // The handshake's own deadline is far off (headersMs 60 s): only the drain can end it in time.
  const config = validateConfig({ routes: [{ name: 'ws', upstream: up.url, type: 'http', filters: [], timeouts: { headersMs: 60_000 } }] })
  const registry = new Registry()
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics: new ProxyMetrics(registry), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  let drained = false
  cleanups.push(() => (drained ? undefined : proxy.drain(100)))

  const sock = connect((proxy.server.address() as AddressInfo).port, '127.0.0.1')
  cleanups.push(() => sock.destroy())
  await once(sock, 'connect')
  let reply = ''
  let closed = false
  sock.on('data', (d: Buffer) => (reply += d.toString('latin1')))
  sock.on('close', () => (closed = true))
  sock.on('error', () => undefined)
  sock.write('GET /graphql HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
  await expect.poll(() => up.heads.length, { timeout: 5_000 }).toBe(1)

  const start = performance.now()
  await proxy.drain(300)
  drained = true
  // (the old code: the drain ended with the handshake still open and the client unanswered)
  await expect.poll(() => reply, { timeout: 2_000 }).toMatch(/^HTTP\/1\.1 503 /)
  expect(reply).toContain('shutting down')
  await expect.poll(() => closed, { timeout: 5_000 }).toBe(true)
  await expect.poll(() => up.open.size, { timeout: 2_000 }).toBe(0) // the upstream's connection is closed too
  expect(performance.now() - start).toBeLessThan(5_000)
  expect(await registry.metrics()).toMatch(/igw_requests_total\{[^}]*route="ws"[^}]*status="503"/)
})
