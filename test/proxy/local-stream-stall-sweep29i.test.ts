// A local reply whose body is a stream (a response-phase filter re-streaming it, as DLP does a
// cache hit's bytes): #writeLocal piped it to the client unwatched, so a client that stopped
// reading held the exchange, the stream, its memory and a graceful drain for ever. Now it is
// watched as a relay is: it must move every bodyIdleMs, else it is cut (reset), counted as
// REQUEST_TIMEOUT, logged, the stream destroyed and the exchange finished. A slow but moving
// reader gets it all and keeps its keep-alive connection. Real WorkerProxy, real node:http
// backend, raw TCP clients.
import { Readable } from 'node:stream'
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

// The slow reader below reads every 100 ms; at 300 ms a loaded machine's stall of the test
// process (the reader's timer) went past the idle bound, and a moving reader was cut.
const IDLE_MS = 1_000
const SIZE = 12 << 20 // far more than the loopback socket buffers on the way hold
const BIG = Buffer.alloc(SIZE, 98)
const CUT = 'client read none of the response; response cut'
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
let run = 0 // paths unique to each attempt (vitest retries a failed test)
/** The body streams handed out, by path. */
const streams = new Map<string, Readable>()
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
    res.end('ok')
  })
  // 'cache' answers /stream/ before the upstream with a whole body; 'tenant', ahead of it, re-streams
  // that local reply in 64 KiB chunks (as a body read from L2, or DLP's export stream).
  const answer: Filter = {
    name: 'cache',
    onRequest: (ctx) => (ctx.url.startsWith('/stream/') ? { status: 200, headers: { 'content-type': 'text/plain' }, body: BIG } : undefined),
  }
  const restream: Filter = {
    name: 'tenant',
    onResponse: (ctx, info) => {
      if (!info.local || !ctx.url.startsWith('/stream/')) return
      const bytes = info.body as Buffer
      const s = Readable.from(
        (function* () {
          for (let at = 0; at < bytes.length; at += 64 << 10) yield bytes.subarray(at, at + (64 << 10))
        })(),
      )
      streams.set(ctx.url, s)
      info.body = s
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => restream }, cache: { create: () => answer } }
  const config = validateConfig({
    log: { level: 'info' },
    listener: { keepAliveTimeoutMs: 10_000 },
    routes: [{ name: 'dl', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 2_000, bodyIdleMs: IDLE_MS }, filters: [{ name: 'tenant', failMode: 'open' }, { name: 'cache', failMode: 'open' }] as never }],
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
const since = (from: number, msg: string) => logs.lines.slice(from).filter((l) => l.msg === msg)

describe('a local reply streamed to a client that stops reading', () => {
  it('is cut after bodyIdleMs without progress (reading nothing, or stopping midway), counted, logged, its stream destroyed', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = await timeouts()
    const aborts = await metric('igw_client_aborts_total', {})
    const none = await client(`/stream/${n}/none`)
    // Reads 2 MiB, then nothing: the reply moved (the body resumed and paused again) before it stalled.
    const some = await client(`/stream/${n}/some`)
    const upTo2MiB = (): void => {
      if (some.got() >= 2 << 20) some.socket.pause()
    }
    some.socket.on('data', upTo2MiB)
    some.socket.resume()
    await expect.poll(timeouts, { timeout: 10_000 }).toBe(before + 2)
    await expect.poll(() => proxy.inflight, { timeout: 2_000 }).toBe(0)
    expect(some.got()).toBeGreaterThanOrEqual(2 << 20)
    some.socket.off('data', upTo2MiB)
    for (const c of [none, some]) {
      c.socket.resume()
      await closedWithin(c.closed, 3_000)
      expect(c.got()).toBeLessThan(SIZE)
    }
    for (const k of ['none', 'some']) expect(streams.get(`/stream/${n}/${k}`)!.destroyed).toBe(true)
    expect(await metric('igw_client_aborts_total', {})).toBe(aborts)
    expect(since(from, CUT).map((l) => l.timeoutMs)).toEqual([IDLE_MS, IDLE_MS])
    await expect.poll(() => since(from, 'access').filter((l) => l.code === 'REQUEST_TIMEOUT' && l.status === 200 && l.aborted === true).map((l) => l.path).sort(), { timeout: 10_000 }).toEqual([`/stream/${n}/none`, `/stream/${n}/some`])
  }, 30_000)

  it('a slow but moving reader gets the whole body, and its keep-alive connection stays usable', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = await timeouts()
    const slow = await client(`/stream/${n}/slow`)
    // 1 MiB every 100 ms (a tenth of bodyIdleMs): the reply waits on the reader between its reads.
    const stop = pace(slow, 1 << 20, 100, cleanups)
    await expect.poll(() => since(from, 'access').filter((l) => l.path === `/stream/${n}/slow`).map((l) => [l.status, l.code, l.aborted]), { timeout: 8_000, interval: 50 }).toEqual([[200, undefined, undefined]])
    stop()
    // Chunked: the body ends with the last chunk's terminator.
    await expect.poll(() => slow.head() > 0 && slow.got() > slow.head() + SIZE && slow.text().endsWith('\r\n0\r\n\r\n'), { timeout: 3_000 }).toBe(true)
    slow.socket.write(`GET /plain/${n} HTTP/1.1\r\nhost: x\r\n\r\n`)
    await expect.poll(() => slow.text().endsWith('\r\n\r\nok'), { timeout: 3_000 }).toBe(true)
    expect(await timeouts()).toBe(before)
    expect(since(from, CUT)).toEqual([])
  }, 15_000)
})
