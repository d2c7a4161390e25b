// A client that stops reading a streamed response (a zero receive window) on a route with
// `timeouts.totalMs: 0`: the exchange pauses the upstream for the client's 'drain', and undici's
// bodyTimeout does not run while paused, so the client held the exchange and its upstream
// connection for ever. Now the response must move every bodyIdleMs (as Envoy's stream idle
// timeout): cut (reset), counted as REQUEST_TIMEOUT and logged, the upstream request aborted. A
// slow but moving reader is not cut. Relayed as it is and through a filter's body stream.
// Real WorkerProxy, real node:http backend, raw TCP clients.
import { connect, type Socket } from 'node:net'
import { PassThrough, type Readable } from 'node:stream'
import type { Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, writeBytes, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
})

const CUT = 'client read none of the response; response cut'
const SIZE = 24 << 20 // far more than the loopback socket buffers on the way hold
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
let aborted = 0
beforeAll(async () => {
  // SIZE bytes in 64 KiB chunks, as fast as the proxy takes them.
  backend = await startRawBackend((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    res.on('close', () => {
      if (!res.writableFinished) aborted++
    })
    req.resume()
    writeBytes(res, SIZE)
  })
  // On /filtered/ a response filter re-streams the body (the exchange's Stream phase).
  const f: Filter = {
    name: 'tenant',
    onResponse: (ctx, info) => {
      if (ctx.url.startsWith('/filtered/')) info.body = (info.body as Readable).pipe(new PassThrough())
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'dl', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 2_000, bodyIdleMs: 300 }, filters: [{ name: 'tenant', failMode: 'open' }] }],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, mods, { logs }))
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

/** A raw client that sends a GET and reads nothing; `got` counts what it read once told to. */
async function client(path: string): Promise<{ socket: Socket; got: () => number; closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1')
  cleanups.push(() => socket.destroy())
  socket.on('error', () => undefined)
  let got = 0
  socket.on('data', (c: Buffer) => (got += c.length))
  socket.pause()
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`)
  return { socket, got: () => got, closed }
}

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  return m.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0)
}

const within = (p: Promise<void>, ms: number) => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms))])

describe('a client that stops reading a streamed response (totalMs: 0)', () => {
  it('is cut after bodyIdleMs without progress (relayed and through a filter body stream), counted, logged, the upstream aborted', async () => {
    const direct = await client('/direct/x')
    const filtered = await client('/filtered/x')
    await expect.poll(() => metric('igw_proxy_errors_total', { route: 'dl', code: 'REQUEST_TIMEOUT' }), { timeout: 6_000 }).toBe(2)
    await expect.poll(() => aborted, { timeout: 5_000 }).toBe(2)
    // Reading again, each client finds its response cut short (a paused socket sees no reset).
    for (const c of [direct, filtered]) {
      c.socket.resume()
      await within(c.closed, 5_000)
      expect(c.got()).toBeLessThan(SIZE)
    }
    expect(await metric('igw_client_aborts_total', {})).toBe(0)
    await expect.poll(() => logs.find(CUT).length, { timeout: 10_000 }).toBe(2)
    // The access lines: the head went out (200), cut by the gateway for the client's stall.
    await expect.poll(() => logs.find('access').filter((l) => l.code === 'REQUEST_TIMEOUT' && l.status === 200).length, { timeout: 10_000 }).toBe(2)
  }, 15_000)

  it('a slow but moving reader gets the whole body', async () => {
    const slow = await client('/direct/y')
    // Reads in bursts 100 ms apart (a third of bodyIdleMs): the proxy waits on it between them.
    const beat = setInterval(() => {
      slow.socket.resume()
      setImmediate(() => slow.socket.pause())
    }, 100)
    cleanups.push(() => clearInterval(beat))
    const t0 = performance.now()
    await expect.poll(slow.got, { timeout: 12_000, interval: 50 }).toBeGreaterThan(SIZE)
    // It took several bodyIdleMs, the proxy waiting on the reader through most of it.
    expect(performance.now() - t0).toBeGreaterThan(600)
    expect(logs.find(CUT).length).toBe(2)
    expect(aborted).toBe(2)
  }, 20_000)
})
