// HTTP/1.1 pipelining behind a response the client does not read: the responses queued behind
// it (node:http buffers them until the one on the wire is done) had their own response watch,
// which measured the connection's progress — the stalled response's — so one stall was cut,
// counted (REQUEST_TIMEOUT) and logged once per response on the connection, and a queued one's
// watch could even cut first and leave the stalled one to be counted as a client abort. Now the
// stall is counted and logged once, by the exchange whose response was on the wire; the queued
// ones close with the connection, uncounted as client aborts, their access lines naming the cause.
// Real WorkerProxy, real node:http backend, a raw TCP client.
import { connect } from 'node:net'
import type { Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, writeBytes, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'
import { metricTotal } from '../helpers/slow-clients.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
})

const IDLE_MS = 300
const SIZE = 12 << 20 // far more than the loopback socket buffers on the way hold
const BIG = Buffer.alloc(SIZE, 98)
const CUT = 'client read none of the response; response cut'
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
let run = 0 // paths unique to each attempt (vitest retries a failed test)
/** Backend responses closed before they were complete, by path. */
const cutShort = new Set<string>()
beforeAll(async () => {
  // /big/: SIZE bytes as fast as the proxy takes them, /slow/: the same 150 ms later; /hold/: no
  // answer until the test ends.
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.on('close', () => {
      if (!res.writableFinished) cutShort.add(req.url!)
    })
    if (req.url!.startsWith('/hold/')) return
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) })
      writeBytes(res, SIZE)
    }
    if (req.url!.startsWith('/slow/')) setTimeout(answer, 150)
    else answer()
  })
  // /local/: answered before the upstream with a large body, handed to the socket whole (a cache hit).
  const answer: Filter = {
    name: 'cache',
    onRequest: (ctx) => (ctx.url.startsWith('/local/') ? { status: 200, headers: { 'content-type': 'text/plain' }, body: BIG } : undefined),
  }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'dl', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 5_000, bodyIdleMs: IDLE_MS }, filters: [{ name: 'cache', failMode: 'open', requireTenant: false }] as never }],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, { ...filterModules, cache: { create: () => answer } }, { logs }))
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

const metric = (name: string, labels: Record<string, string>): Promise<number> => metricTotal(registry, name, labels)
const timeouts = () => metric('igw_proxy_errors_total', { route: 'dl', code: 'REQUEST_TIMEOUT' })
const since = (from: number, msg: string) => logs.lines.slice(from).filter((l) => l.msg === msg)

/** A raw client that sends these GETs pipelined (each with its path as x-request-id) and reads nothing. */
async function pipelined(paths: string[]): Promise<{ resume: () => Promise<void> }> {
  const socket = connect(port, '127.0.0.1')
  cleanups.push(() => socket.destroy())
  socket.on('error', () => undefined)
  socket.pause()
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  socket.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nhost: x\r\nx-request-id: ${p}\r\n\r\n`).join(''))
  return {
    resume: () => {
      socket.resume()
      return closed
    },
  }
}

describe('pipelined requests behind a response the client does not read', () => {
  it('one stall is cut, counted and logged once, by the stalled exchange; the queued ones finish with it, their access lines naming the cause', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = await timeouts()
    const aborts = await metric('igw_client_aborts_total', {})
    // Each connection: a large response the client does not read — relayed, its upstream slower
    // than the next one's (so the queued response's watch starts first), or a local reply handed
    // whole to the socket — then a large relayed response queued whole behind it, then one whose
    // upstream has not answered when the connection is cut.
    const relayed = [`/slow/${n}/a1`, `/big/${n}/a2`, `/hold/${n}/a3`]
    const local = [`/local/${n}/b1`, `/big/${n}/b2`, `/hold/${n}/b3`]
    const clients = [await pipelined(relayed), await pipelined(local)]
    await expect.poll(timeouts, { timeout: 4_000 }).toBeGreaterThanOrEqual(before + 2)
    // Every exchange on the connections is over (the queued ones too), the upstream transfers stopped.
    await expect.poll(() => proxy.inflight, { timeout: 2_000 }).toBe(0)
    const upstream = [...relayed, ...local.slice(1)]
    await expect.poll(() => upstream.filter((p) => !cutShort.has(p)), { timeout: 2_000 }).toEqual([])
    await expect.poll(() => since(from, 'access').length, { timeout: 2_000 }).toBe(6)
    const access = new Map(since(from, 'access').map((l) => [l.path, [l.status, l.code, l.aborted]]))
    for (const [first, queued, waiting] of [relayed, local]) {
      expect(access.get(first)).toEqual([200, 'REQUEST_TIMEOUT', true]) // the stalled one: its head went out
      expect(access.get(queued)).toEqual([200, 'REQUEST_TIMEOUT', true]) // queued whole behind it
      expect(access.get(waiting)).toEqual([408, 'REQUEST_TIMEOUT', true]) // no head yet
    }
    expect(await timeouts()).toBe(before + 2)
    expect(since(from, CUT).map((l) => l.reqId).sort()).toEqual([relayed[0], local[0]].sort())
    expect(await metric('igw_client_aborts_total', {})).toBe(aborts)
    for (const c of clients) await c.resume()
  }, 10_000)
})
