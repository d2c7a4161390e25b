// A local reply whose body is a stream (a response-phase filter re-streaming a cache hit, an export)
// that stops producing on its own side and never ends, while the client keeps up: the watch on a
// streamed local reply looked only at the client, so with totalMs 0 the client waited for the rest
// for ever and the exchange never finished. Now it has the bound a filter's body stream on a relay
// has: nothing from the stream for bodyIdleMs → cut (the head is out), counted under the filter that
// set the body and as UPSTREAM_TIMEOUT, logged, the stream destroyed, the exchange finished. A slow
// but moving stream is unaffected. Also: a head node:http refuses left such a stream undestroyed.
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

const IDLE_MS = 300
const CUT = 'filter body stream took nothing; response cut'
const CHUNK = 16 << 10
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
  // 'cache' answers /local/ before the upstream; 'tenant', ahead of it, replaces that reply's body
  // with a stream of its own: /local/stall-after/ gives 4 chunks then nothing (never ends),
  // /local/stall-at-once/ nothing at all, /local/slow/ a chunk every 100 ms (a third of bodyIdleMs)
  // and ends; /local/bad-head/ also sets a header value node:http cannot send.
  const answer: Filter = {
    name: 'cache',
    onRequest: (ctx) => (ctx.url.startsWith('/local/') ? { status: 200, headers: { 'content-type': 'text/plain' }, body: 'whole' } : undefined),
  }
  const restream: Filter = {
    name: 'tenant',
    onResponse: (ctx, info) => {
      if (!info.local || !ctx.url.startsWith('/local/')) return
      const s = new Readable({ read() {} })
      const entry = { s, closed: false }
      s.once('close', () => (entry.closed = true))
      streams.set(ctx.url, entry)
      if (ctx.url.startsWith('/local/stall-after/')) for (let i = 0; i < 4; i++) s.push(Buffer.alloc(CHUNK, 97))
      else if (ctx.url.startsWith('/local/slow/')) {
        let left = 8
        const beat = setInterval(() => {
          s.push(Buffer.alloc(CHUNK, 97))
          if (--left === 0) {
            clearInterval(beat)
            s.push(null)
          }
        }, 100)
        s.once('close', () => clearInterval(beat))
        cleanups.push(() => clearInterval(beat))
      } else if (ctx.url.startsWith('/local/bad-head/')) {
        s.push(Buffer.alloc(CHUNK, 97))
        info.headers['x-note'] = 'a\r\nb'
      }
      cleanups.push(() => s.destroy())
      info.body = s
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => restream }, cache: { create: () => answer } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'loc', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 2_000, bodyIdleMs: IDLE_MS }, filters: [{ name: 'tenant', failMode: 'open' }, { name: 'cache', failMode: 'open' }] as never }],
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

/** The status (0: none came) and what became of the body: its size, or the error that ended it. */
async function get(path: string): Promise<{ status: number; size: number; error?: string }> {
  let status = 0
  let size = 0
  try {
    const r = await request(`http://127.0.0.1:${port}${path}`, { headersTimeout: 4_000, bodyTimeout: 4_000 })
    status = r.statusCode
    for await (const c of r.body) size += (c as Buffer).length
    return { status, size }
  } catch (err) {
    return { status, size, error: (err as Error).message }
  }
}

describe('a streamed local reply whose stream stops producing', () => {
  it('is cut after bodyIdleMs (midway, or before its first byte), counted under the filter that set the body, its stream destroyed', async () => {
    const n = ++run
    const from = logs.lines.length
    const filterErrors = await metric('igw_filter_errors_total', { filter: 'tenant' })
    const timeouts = await metric('igw_proxy_errors_total', { route: 'loc', code: 'UPSTREAM_TIMEOUT' })
    const aborts = await metric('igw_client_aborts_total', {})
    const [after, atOnce] = await Promise.all([get(`/local/stall-after/${n}`), get(`/local/stall-at-once/${n}`)])
    // Midway: the head and the 4 chunks came, then the cut (no end of the chunked body).
    expect(after).toMatchObject({ status: 200, size: 4 * CHUNK, error: expect.any(String) })
    // node:http holds the head for the first body bytes, which never came.
    expect(atOnce).toMatchObject({ status: 0, size: 0, error: expect.any(String) })
    expect(await metric('igw_filter_errors_total', { filter: 'tenant' })).toBe(filterErrors + 2)
    expect(await metric('igw_proxy_errors_total', { route: 'loc', code: 'UPSTREAM_TIMEOUT' })).toBe(timeouts + 2)
    expect(await metric('igw_client_aborts_total', {})).toBe(aborts)
    await expect.poll(() => proxy.inflight, { timeout: 2_000 }).toBe(0)
    for (const k of ['stall-after', 'stall-at-once']) expect(streams.get(`/local/${k}/${n}`)!.closed).toBe(true)
    expect(since(from, CUT).map((l) => [l.filter, l.timeoutMs])).toEqual([['tenant', IDLE_MS], ['tenant', IDLE_MS]])
    await expect.poll(() => since(from, 'access').filter((l) => l.code === 'UPSTREAM_TIMEOUT' && l.filter === 'tenant' && l.status === 200).map((l) => l.path).sort(), { timeout: 10_000 }).toEqual([`/local/stall-after/${n}`, `/local/stall-at-once/${n}`])
  }, 8_000)

  it('a slow but moving stream reaches the client whole', async () => {
    const n = ++run
    const from = logs.lines.length
    const filterErrors = await metric('igw_filter_errors_total', { filter: 'tenant' })
    expect(await get(`/local/slow/${n}`)).toEqual({ status: 200, size: 8 * CHUNK })
    expect(await metric('igw_filter_errors_total', { filter: 'tenant' })).toBe(filterErrors)
    expect(since(from, CUT)).toEqual([])
  }, 8_000)

  it('whose head node:http refuses: the client gets a 500 and the stream is destroyed', async () => {
    const n = ++run
    const from = logs.lines.length
    const r = await get(`/local/bad-head/${n}`)
    expect(r.status).toBe(500)
    expect(r.error).toBeUndefined()
    await expect.poll(() => streams.get(`/local/bad-head/${n}`)!.closed, { timeout: 2_000 }).toBe(true)
    expect(since(from, 'response head refused by node:http (a header value it cannot send)')).toHaveLength(1)
  }, 8_000)
})
