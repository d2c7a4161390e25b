// A client that stops reading once its whole response is handed to the socket (a filter's or a
// cache's body written in one go, the last of a relay): the exchange ended its part, but the
// bytes node:http could not flush stayed queued on the client socket, and no HTTP timeout runs
// while a response is still being written (the keep-alive one starts once it is flushed). A raw
// client that never read held that memory, the socket and the exchange (inflight, the drain) for
// ever. Now the response must keep moving every bodyIdleMs until flushed: cut (reset), counted as
// REQUEST_TIMEOUT, logged. A slow but moving reader gets it all and keeps its keep-alive connection.
// (Re-landed from sweep 28s, whose slow reader left a pause timer behind that could fire after its
// final resume — the next response was then never read — and whose counts were not retry-safe.)
// Real WorkerProxy, real node:http backend, raw TCP clients.
import type { Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'
import { closedWithin, metricTotal, pace, pausedGet, type PausedClient } from '../helpers/slow-clients.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
})

const IDLE_MS = 500
const SIZE = 12 << 20 // more than the loopback socket buffers on the way hold
const BIG = Buffer.alloc(SIZE, 98)
const CUT = 'client read none of the response; response cut'
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
let run = 0 // paths unique to each attempt (vitest retries a failed test)
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
    routes: [{ name: 'dl', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 2_000, bodyIdleMs: IDLE_MS }, filters: [{ name: 'tenant', failMode: 'open' }] }],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, mods, { logs }))
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})


const client = (path: string): Promise<PausedClient> => pausedGet(port, path, cleanups)


const metric = (name: string, labels: Record<string, string>): Promise<number> => metricTotal(registry, name, labels)
const timeouts = () => metric('igw_proxy_errors_total', { route: 'dl', code: 'REQUEST_TIMEOUT' })
/** The log lines since `from` with this message. */
const since = (from: number, msg: string) => logs.lines.slice(from).filter((l) => l.msg === msg)


describe('a client that stops reading a response already handed to its socket', () => {
  it('is cut after bodyIdleMs without progress (a replaced body, a local reply), counted, logged, the exchange finished', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = await timeouts()
    const aborts = await metric('igw_client_aborts_total', {})
    const replaced = await client(`/replaced/${n}`)
    const local = await client(`/local/${n}`)
    await expect.poll(timeouts, { timeout: 6_000 }).toBe(before + 2)
    // The exchanges are over: nothing in flight holds a drain.
    await expect.poll(() => proxy.inflight, { timeout: 2_000 }).toBe(0)
    for (const c of [replaced, local]) {
      c.socket.resume()
      await closedWithin(c.closed, 5_000)
      expect(c.got()).toBeGreaterThan(0)
      expect(c.got()).toBeLessThan(SIZE)
    }
    expect(await metric('igw_client_aborts_total', {})).toBe(aborts)
    expect(since(from, CUT).map((l) => l.timeoutMs)).toEqual([IDLE_MS, IDLE_MS])
    await expect.poll(() => since(from, 'access').filter((l) => l.code === 'REQUEST_TIMEOUT' && l.status === 200 && l.aborted === true).map((l) => l.path).sort(), { timeout: 10_000 }).toEqual([`/local/${n}`, `/replaced/${n}`])
  }, 15_000)

  it('a slow but moving reader gets the whole body, and its keep-alive connection stays usable', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = await timeouts()
    const slow = await client(`/replaced/${n}`)
    // 1 MiB every 100 ms: with what the loopback buffers hold, the flush spans more than one
    // bodyIdleMs (about 0.9 s here), and the response waits on the reader between its reads. (A
    // reader much slower than that frees its large loopback receive window so slowly that TCP
    // announces no window for longer than bodyIdleMs: the sender sees no progress, as Envoy's
    // stream idle timeout would not either.)
    const stop = pace(slow, 1 << 20, 100, cleanups)
    // Flushed to the socket: the exchange is over, uncut.
    await expect.poll(() => since(from, 'access').filter((l) => l.path === `/replaced/${n}`).map((l) => [l.status, l.code, l.aborted]), { timeout: 12_000, interval: 50 }).toEqual([[200, undefined, undefined]])
    const flushed = performance.now()
    stop()
    await expect.poll(() => slow.head() > 0 && slow.got() >= slow.head() + SIZE, { timeout: 5_000 }).toBe(true)
    expect(slow.got()).toBe(slow.head() + SIZE)
    // Idle past bodyIdleMs is the keep-alive timeout's to judge (10 s) — a watch left armed would
    // fire meanwhile — and the next request on the connection is served.
    await new Promise((r) => setTimeout(r, Math.max(0, flushed + IDLE_MS + 200 - performance.now())))
    expect(slow.socket.destroyed).toBe(false)
    slow.socket.write(`GET /plain/${n} HTTP/1.1\r\nhost: x\r\n\r\n`)
    await expect.poll(() => slow.text().endsWith('\r\n\r\nok'), { timeout: 3_000 }).toBe(true)
    expect(slow.got()).toBeGreaterThan(slow.head() + SIZE)
    expect(await timeouts()).toBe(before)
    expect(since(from, CUT)).toEqual([])
  }, 20_000)
})
