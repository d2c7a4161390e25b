// A local reply whose body is a stream (a response-phase filter re-streaming a cache hit, an export)
// that keeps trickling a chunk just under bodyIdleMs and never ends: the route's totalMs cuts a
// relayed body that runs past it, but a streamed local reply was bound only by bodyIdleMs (and,
// with that 0, by nothing), so it ran for ever. Now it is cut at the deadline as a relayed body is:
// the connection cut mid-body, counted as UPSTREAM_TIMEOUT, logged, its stream destroyed, the
// exchange finished, and no client abort counted. A stream that ends in time is unaffected.
// Real WorkerProxy, real node:http backend, undici client.
import { Readable } from 'node:stream'
import type { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'
import { metricTotal } from '../helpers/slow-clients.ts'

const TOTAL_MS = 800
const IDLE_MS = 300
const BEAT_MS = 100 // a third of bodyIdleMs: the stream never stalls
const CUT = 'local reply stream ran past the deadline; response cut'
const CHUNK = 4 << 10
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
let run = 0 // paths unique to each attempt (vitest retries a failed test)
/** The body streams handed out, by path, and whether each emitted 'close'. */
const streams = new Map<string, { s: Readable; closed: boolean }>()
const cleanups: (() => void)[] = []
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
    res.end('ok')
  })
  // 'cache' answers before the upstream; 'tenant', ahead of it, replaces that reply's body with a
  // stream that pushes a chunk every BEAT_MS: for ever, or 3 of them and its end under `/short/`.
  const answer: Filter = {
    name: 'cache',
    onRequest: () => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: 'whole' }),
  }
  const restream: Filter = {
    name: 'tenant',
    onResponse: (ctx, info) => {
      if (!info.local) return
      const s = new Readable({ read() {} })
      const entry = { s, closed: false }
      let left = ctx.url.includes('/short/') ? 3 : Number.POSITIVE_INFINITY
      const beat = setInterval(() => {
        s.push(Buffer.alloc(CHUNK, 97))
        if (--left === 0) {
          clearInterval(beat)
          s.push(null)
        }
      }, BEAT_MS)
      s.once('close', () => {
        entry.closed = true
        clearInterval(beat)
      })
      streams.set(ctx.url, entry)
      cleanups.push(() => s.destroy())
      info.body = s
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => restream }, cache: { create: () => answer } }
  const filters = [{ name: 'tenant', failMode: 'open' }, { name: 'cache', failMode: 'open' }] as never
  const config = validateConfig({
    log: { level: 'info' },
    routes: [
      { name: 'idle', match: { pathPrefix: '/idle/' }, upstream: backend.url, type: 'http', timeouts: { totalMs: TOTAL_MS, headersMs: 2_000, bodyIdleMs: IDLE_MS }, filters },
      // No idle bound at all: the deadline alone watches the stream.
      { name: 'noidle', match: { pathPrefix: '/noidle/' }, upstream: backend.url, type: 'http', timeouts: { totalMs: TOTAL_MS, headersMs: 2_000, bodyIdleMs: 0 }, filters },
    ],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, mods, { logs }))
})
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

const since = (from: number, msg: string) => logs.lines.slice(from).filter((l) => l.msg === msg)
const metric = (name: string, labels: Record<string, string>): Promise<number> => metricTotal(registry, name, labels)

/** The status, how much body came and, when it did not end cleanly, the error that ended it (the client gives up after 3 s). */
async function get(path: string): Promise<{ status: number; size: number; error?: string }> {
  let status = 0
  let size = 0
  try {
    const r = await request(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3_000) })
    status = r.statusCode
    for await (const c of r.body) size += (c as Buffer).length
    return { status, size }
  } catch (err) {
    return { status, size, error: (err as Error).name === 'TimeoutError' ? 'client gave up' : (err as Error).message }
  }
}

describe('a streamed local reply that keeps trickling past totalMs', () => {
  it('is cut at the deadline (with or without bodyIdleMs), counted, logged, its stream destroyed', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = { idle: await metric('igw_proxy_errors_total', { route: 'idle', code: 'UPSTREAM_TIMEOUT' }), noidle: await metric('igw_proxy_errors_total', { route: 'noidle', code: 'UPSTREAM_TIMEOUT' }) }
    const aborts = await metric('igw_client_aborts_total', {})
    const paths = [`/idle/${n}`, `/noidle/${n}`]
    const results = await Promise.all(paths.map(get))
    for (const r of results) {
      // The head and some chunks came, then the cut (no end of the chunked body), not the client's own give-up.
      expect(r.status).toBe(200)
      expect(r.size).toBeGreaterThan(0)
      expect(r.size % CHUNK).toBe(0)
      expect(r.error).toEqual(expect.any(String))
      expect(r.error).not.toBe('client gave up')
    }
    expect(await metric('igw_proxy_errors_total', { route: 'idle', code: 'UPSTREAM_TIMEOUT' })).toBe(before.idle + 1)
    expect(await metric('igw_proxy_errors_total', { route: 'noidle', code: 'UPSTREAM_TIMEOUT' })).toBe(before.noidle + 1)
    await expect.poll(() => proxy.inflight, { timeout: 2_000 }).toBe(0)
    expect(await metric('igw_client_aborts_total', {})).toBe(aborts)
    for (const p of paths) expect(streams.get(p)!.closed).toBe(true)
    const cut = since(from, CUT)
    expect(cut.map((l) => [l.filter, (l.err as { code: string }).code, (l.err as { message: string }).message])).toEqual([
      ['tenant', 'UPSTREAM_TIMEOUT', `local reply stream did not finish within the route's total timeout of ${TOTAL_MS} ms`],
      ['tenant', 'UPSTREAM_TIMEOUT', `local reply stream did not finish within the route's total timeout of ${TOTAL_MS} ms`],
    ])
    await expect.poll(() => since(from, 'access').filter((l) => l.code === 'UPSTREAM_TIMEOUT' && l.status === 200).map((l) => l.path).sort(), { timeout: 10_000 }).toEqual(paths.slice().sort())
    // Cut at the deadline, not before it (the duration is the server's own measure).
    for (const l of since(from, 'access').filter((x) => paths.includes(x.path as string))) expect(l.durMs as number).toBeGreaterThanOrEqual(TOTAL_MS - 1)
  }, 8_000)

  it('a stream that ends before the deadline reaches the client whole', async () => {
    const n = ++run
    const from = logs.lines.length
    const before = await metric('igw_proxy_errors_total', { route: 'noidle', code: 'UPSTREAM_TIMEOUT' })
    const [a, b] = await Promise.all([get(`/idle/short/${n}`), get(`/noidle/short/${n}`)])
    expect(a).toEqual({ status: 200, size: 3 * CHUNK })
    expect(b).toEqual({ status: 200, size: 3 * CHUNK })
    expect(await metric('igw_proxy_errors_total', { route: 'noidle', code: 'UPSTREAM_TIMEOUT' })).toBe(before)
    expect(since(from, CUT)).toEqual([])
  }, 8_000)
})
