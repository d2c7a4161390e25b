// A response filter whose body stream ends before it read all of the upstream's (a head-of-file
// preview, a filter that answers from the first record): the response was complete, the exchange
// over, and the upstream left paused mid-body for ever — undici's bodyTimeout does not run while
// paused, and the exchange's own timer was cleared with it — holding the upstream connection and
// the backend's response open. The upstream transfer is now stopped when the response ends.
// Real WorkerProxy, real node:http backend, undici client.
import { PassThrough, type Readable } from 'node:stream'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, writeBytes, type RawBackend } from '../helpers/backends.ts'
import { startWorkerProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: WorkerProxy
let port = 0
/** Backend responses by outcome: cut (closed unfinished), finished. */
const outcome = { cut: 0, finished: 0 }
beforeAll(async () => {
  // 8 MiB in 64 KiB chunks, as fast as the proxy takes them: far more than sockets and streams hold.
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.on('close', () => (res.writableFinished ? outcome.finished++ : outcome.cut++))
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    writeBytes(res, 8 << 20)
  })
  // The filter's body: the first chunk of the upstream's, then the end.
  const f: Filter = {
    name: 'tenant',
    onResponse: (_ctx, info) => {
      const upstream = info.body as Readable
      const out = new PassThrough()
      upstream.once('data', (chunk: Buffer) => {
        upstream.pause()
        out.end(chunk.subarray(0, 10))
      })
      info.body = out
    },
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({
    routes: [{ name: 'r', upstream: backend.url, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'tenant', failMode: 'open' }] }],
  })
  ;({ proxy, port } = await startWorkerProxy(config, mods))
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

describe('a filter body stream that ends before the upstream body does', () => {
  it('the client gets what the filter wrote, and the upstream transfer is stopped, not left paused', async () => {
    const before = { ...outcome }
    const r = await request(`http://127.0.0.1:${port}/preview`)
    expect(r.statusCode).toBe(200)
    expect(await r.body.text()).toBe('a'.repeat(10))
    // The backend's response is closed unfinished (the upstream request aborted), not held open.
    await expect.poll(() => outcome.cut - before.cut, { timeout: 5_000 }).toBe(1)
    expect(outcome.finished).toBe(before.finished)
    await expect.poll(() => proxy.inflight, { timeout: 10_000 }).toBe(0)
  })
})
