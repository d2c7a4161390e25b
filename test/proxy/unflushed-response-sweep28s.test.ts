// A client that stops reading once its whole response is handed to the socket (a filter's or a
// cache's body written in one go, the last of a relay): the exchange ended its part, but the
// bytes node:http could not flush stayed queued on the client socket, and no HTTP timeout runs
// while a response is still being written (the keep-alive one starts once it is flushed). A raw
// client that never read held that memory, the socket and the exchange (inflight, the drain) for
// ever. Now the response must keep moving every bodyIdleMs until flushed: cut (reset), counted as
// REQUEST_TIMEOUT, logged. A slow but moving reader gets it all and keeps its keep-alive connection.
// Real WorkerProxy, real node:http backend, raw TCP clients.
import { connect, type AddressInfo, type Socket } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
})

const SIZE = 12 << 20 // more than the loopback socket buffers on the way hold
const BIG = Buffer.alloc(SIZE, 98)
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
    res.end('ok')
  })
  // /replaced/: the upstream's answer is replaced by a large body (a rewrite); /local/: answered
  // with one before the upstream (a cache hit). Both are written in one go.
  const f: Filter = {
    name: 'tenant',
    onRequest: (ctx) => (ctx.url.startsWith('/local/') ? { status: 200, headers: { 'content-type': 'text/plain' }, body: BIG } : undefined),
    onResponse: (ctx, info) => {
      if (ctx.url.startsWith('/replaced/')) info.body = BIG
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({
    log: { level: 'info' },
    listener: { keepAliveTimeoutMs: 10_000 },
    routes: [{ name: 'dl', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 2_000, bodyIdleMs: 500 }, filters: [{ name: 'tenant', failMode: 'open' }] }],
  })
  registry = new Registry()
  proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(registry), shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  port = (proxy.server.address() as AddressInfo).port
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

/** A raw client that sends a GET and reads nothing until resumed; `got` counts what it read. */
async function client(path: string): Promise<{ socket: Socket; got: () => number; text: () => string; closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1')
  cleanups.push(() => socket.destroy())
  socket.on('error', () => undefined)
  let got = 0
  let tail = ''
  socket.on('data', (c: Buffer) => {
    got += c.length
    tail = (tail + c.toString('latin1')).slice(-4096)
  })
  socket.pause()
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`)
  return { socket, got: () => got, text: () => tail, closed }
}

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  return m.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0)
}

const within = (p: Promise<void>, ms: number) => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms))])

describe('a client that stops reading a response already handed to its socket', () => {
  it('is cut after bodyIdleMs without progress (a replaced body, a local reply), counted, logged, the exchange finished', async () => {
    const replaced = await client('/replaced/x')
    const local = await client('/local/x')
    await expect.poll(() => metric('igw_proxy_errors_total', { route: 'dl', code: 'REQUEST_TIMEOUT' }), { timeout: 6_000 }).toBe(2)
    // The exchanges are over: nothing in flight holds a drain.
    await expect.poll(() => proxy.inflight, { timeout: 2_000 }).toBe(0)
    for (const c of [replaced, local]) {
      c.socket.resume()
      await within(c.closed, 5_000)
      expect(c.got()).toBeGreaterThan(0)
      expect(c.got()).toBeLessThan(SIZE)
    }
    expect(await metric('igw_client_aborts_total', {})).toBe(0)
    expect(logs.find('client read none of the response; response cut').length).toBe(2)
    await expect.poll(() => logs.find('access').filter((l) => l.code === 'REQUEST_TIMEOUT' && l.status === 200).length).toBe(2)
  }, 15_000)

  it('a slow but moving reader gets the whole body, and its keep-alive connection stays usable', async () => {
    const before = await metric('igw_proxy_errors_total', { code: 'REQUEST_TIMEOUT' })
    const slow = await client('/replaced/y')
    // Reads in 20 ms bursts 100 ms apart (a fifth of bodyIdleMs): the response waits on it between
    // them. (A reader much slower than that frees its large loopback receive window so slowly that
    // TCP announces no window for longer than bodyIdleMs: the sender sees no progress, as Envoy's
    // stream idle timeout would not either.)
    const beat = setInterval(() => {
      slow.socket.resume()
      setTimeout(() => slow.socket.pause(), 20)
    }, 100)
    cleanups.push(() => clearInterval(beat))
    await expect.poll(slow.got, { timeout: 12_000, interval: 50 }).toBeGreaterThan(SIZE)
    clearInterval(beat)
    slow.socket.resume()
    // Flushed: idle past bodyIdleMs is the keep-alive timeout's to judge (10 s), and the next
    // request on the connection is served.
    await expect.poll(() => logs.find('access').filter((l) => l.path === '/replaced/y').length).toBe(1)
    await new Promise((r) => setTimeout(r, 700))
    slow.socket.write('GET /plain HTTP/1.1\r\nhost: x\r\n\r\n')
    await expect.poll(() => slow.text().endsWith('\r\n\r\nok'), { timeout: 3_000 }).toBe(true)
    expect(await metric('igw_proxy_errors_total', { code: 'REQUEST_TIMEOUT' })).toBe(before)
  }, 20_000)
})
