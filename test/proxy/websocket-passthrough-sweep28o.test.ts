// WebSocket passthrough sweep 28o: an upstream handshake that failed on the socket (refused,
// reset, unresolvable) answered the client's upgrade with the system error's message, which names
// the upstream's internal address ("connect ECONNREFUSED 10.0.4.7:8080"); an HTTP request's 502
// names only the code. Real WorkerProxy, real ws backends, raw sockets.
import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { rawExchange } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function startProxy(upstreamUrl: string, websocket: Record<string, unknown> = {}): Promise<{ port: number; logs: LogCapture }> {
  const config = validateConfig({ log: { level: 'info' }, upstreams: { users: { url: upstreamUrl } }, routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: 'users', type: 'http', websocket }] })
  const logs = new LogCapture()
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  cleanups.push(() => proxy.drain(100))
  return { port: (proxy.server.address() as AddressInfo).port, logs }
}

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer()
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  const port = (s.address() as AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

const UPGRADE = 'GET /ws HTTP/1.1\r\nhost: gw\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'

describe('WebSocket passthrough: an upstream that cannot be reached', () => {
  it("answers 502 naming the error's code, not the upstream's address (which stays in the log)", async () => {
    const upPort = await closedPort()
    const { port, logs } = await startProxy(`http://127.0.0.1:${upPort}`)
    const answer = (await rawExchange(port, UPGRADE)).toString('latin1')
    expect(answer).toMatch(/^HTTP\/1\.1 502 /)
    expect(answer).toContain('UPSTREAM_UNAVAILABLE')
    expect(answer).toContain('WebSocket upstream users failed: ECONNREFUSED')
    expect(answer).not.toContain(`127.0.0.1:${upPort}`)
    // The operator still sees where it tried.
    expect(JSON.stringify(logs.find('websocket upstream handshake failed'))).toContain(`127.0.0.1:${upPort}`)
  })
})
