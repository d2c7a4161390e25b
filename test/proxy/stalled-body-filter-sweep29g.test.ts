// A response filter whose body stream stops taking bytes by itself (a transform awaiting a call
// that never returns) while the client keeps up: the watch on a paused upstream looked only at
// the client, found it caught up and stopped, and the upstream stayed paused for ever (undici's
// bodyTimeout does not run while paused); with the upstream's whole body in, the client waited for
// the rest for ever. A filter that takes nothing for bodyIdleMs is now failing: the response is
// cut (its head is committed), counted in igw_filter_errors_total under its name and as UPSTREAM_TIMEOUT,
// the upstream request aborted. A filter that is slow but moving is unaffected.
// (Re-landed from sweep 28s; counts are now per attempt, as vitest retries a failed test.)
// Real WorkerProxy, real node:http backend, undici client.
import { Transform, type Readable } from 'node:stream'
import type { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, writeBytes, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'

const CUT = 'filter body stream took nothing; response cut'
const BIG = 8 << 20 // far more than the body stream and the upstream socket hold
let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
let aborted = 0
const held: (() => void)[] = []
beforeAll(async () => {
  // /big…: BIG bytes in 64 KiB chunks as fast as the proxy takes them; else 100 bytes.
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.on('close', () => {
      if (!res.writableFinished) aborted++
    })
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    if (!req.url!.includes('/big')) return void res.end(Buffer.alloc(100, 97))
    writeBytes(res, BIG)
  })
  // /stall/: the transform never finishes its first chunk; /slow/: each chunk takes 8 ms.
  const f: Filter = {
    name: 'tenant',
    onResponse: (ctx, info) => {
      const stall = ctx.url.startsWith('/stall/')
      info.body = (info.body as Readable).pipe(
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            if (stall) held.push(() => cb(null, chunk))
            else setTimeout(() => cb(null, chunk), 8)
          },
        }),
      )
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'r', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 2_000, bodyIdleMs: 300 }, filters: [{ name: 'tenant', failMode: 'open' }] }],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, mods, { logs }))
})
afterEach(() => {
  for (const release of held.splice(0)) release()
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

/** The log lines since `from` with this message. */
const since = (from: number, msg: string) => logs.lines.slice(from).filter((l) => l.msg === msg)

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  return m.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0)
}

/** The status (0: none came) and what became of the body: its size, or the error that ended it. */
async function get(path: string): Promise<{ status: number; size: number; error?: string }> {
  let status = 0
  let size = 0
  try {
    const r = await request(`http://127.0.0.1:${port}${path}`, { headersTimeout: 5_000, bodyTimeout: 5_000 })
    status = r.statusCode
    for await (const c of r.body) size += (c as Buffer).length
    return { status, size }
  } catch (err) {
    return { status, size, error: (err as Error).message }
  }
}

describe('a response filter whose body stream stops taking bytes', () => {
  it('is cut after bodyIdleMs (upstream paused behind it, or all in), counted under the filter, the upstream aborted', async () => {
    const from = logs.lines.length
    const filterErrors = await metric('igw_filter_errors_total', { filter: 'tenant' })
    const timeouts = await metric('igw_proxy_errors_total', { route: 'r', code: 'UPSTREAM_TIMEOUT' })
    const aborts = await metric('igw_client_aborts_total', {})
    const upstreamAborted = aborted
    const [big, small] = await Promise.all([get('/stall/big'), get('/stall/small')])
    // Cut (node:http holds the head for the first body bytes, which the filter never gave).
    for (const r of [big, small]) expect(r).toMatchObject({ status: 0, size: 0, error: expect.any(String) })
    expect(await metric('igw_filter_errors_total', { filter: 'tenant' })).toBe(filterErrors + 2)
    expect(await metric('igw_proxy_errors_total', { route: 'r', code: 'UPSTREAM_TIMEOUT' })).toBe(timeouts + 2)
    expect(await metric('igw_client_aborts_total', {})).toBe(aborts)
    // The paused upstream transfer is aborted (the small one had ended already).
    await expect.poll(() => aborted - upstreamAborted, { timeout: 3_000 }).toBe(1)
    await expect.poll(() => since(from, CUT).length, { timeout: 10_000 }).toBe(2)
    expect(since(from, CUT).map((l) => [l.filter, l.timeoutMs])).toEqual([['tenant', 300], ['tenant', 300]])
    await expect.poll(() => since(from, 'access').filter((l) => l.code === 'UPSTREAM_TIMEOUT' && l.status === 200).length, { timeout: 10_000 }).toBe(2)
  }, 10_000)

  it('a filter that is slow but moving passes the whole body', async () => {
    const from = logs.lines.length
    const filterErrors = await metric('igw_filter_errors_total', { filter: 'tenant' })
    const r = await get('/slow/big')
    expect(r).toEqual({ status: 200, size: BIG })
    expect(await metric('igw_filter_errors_total', { filter: 'tenant' })).toBe(filterErrors)
    expect(since(from, CUT)).toEqual([])
  }, 15_000)
})
