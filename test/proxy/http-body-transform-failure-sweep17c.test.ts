// A response-phase filter's body stream that fails mid-response (a transform throwing on a chunk)
// cuts the response — its head is out — but was invisible: no log line, no
// igw_filter_errors_total, and the access line a clean 200 with no code. Now it is counted under
// the filter that set the body, logged, and the access line carries INTERNAL_SERVER_ERROR.
// Real WorkerProxy, real node:http backend, undici.
import { Readable, Transform } from 'node:stream'
import type { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'

describe('a filter body stream failing mid-response', () => {
  let backend: RawBackend
  let proxy: WorkerProxy
  let registry: Registry
  const logs = new LogCapture()
  let port = 0
  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      // several chunks, so the transform has passed some on before it fails
      let n = 0
      const tick = () => {
        if (n++ === 8) return res.end()
        res.write('x'.repeat(16 * 1024))
        setTimeout(tick, 5)
      }
      tick()
    })
    const rewriting: Filter = {
      name: 'tenant',
      onResponse: (_ctx, info) => {
        let seen = 0
        const t = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            seen += chunk.length
            if (seen > 40 * 1024) return cb(new Error('rewrite failed on this chunk'))
            cb(null, chunk)
          },
        })
        // A local reply's body is bytes: re-streamed in 16 KiB chunks, as a body read from L2.
        const body = info.body
        const source = Buffer.isBuffer(body) ? Readable.from(Array.from({ length: body.length / (16 * 1024) }, (_, i) => body.subarray(i * 16 * 1024, (i + 1) * 16 * 1024))) : body
        source.pipe(t)
        info.body = t
      },
    }
    // 'cache' answers /local/ itself (the tenant filter, ahead of it, still sees that reply).
    const answering: Filter = {
      name: 'cache',
      onRequest: (ctx) => (ctx.url.startsWith('/local/') ? { status: 200, headers: { 'content-type': 'text/plain' }, body: Buffer.alloc(128 * 1024, 120) } : undefined),
    }
    const mods: FilterModules = { ...filterModules, tenant: { create: () => rewriting }, cache: { create: () => answering } }
    const config = validateConfig({ log: { level: 'info' }, routes: [{ name: 'api', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'cache', failMode: 'open' }] as never }] })
    ;({ proxy, port, registry } = await startWorkerProxy(config, mods, { logs }))
  })
  afterAll(async () => {
    await proxy?.drain(100)
    await backend?.close()
  })

  const tenantErrors = async () => (await registry.getSingleMetric('igw_filter_errors_total')!.get()).values.find((v) => v.labels.filter === 'tenant')?.value ?? 0
  const clientAborts = async () => (await registry.getSingleMetric('igw_client_aborts_total')!.get()).values.reduce((a, v) => a + v.value, 0)

  // A relayed body, then a local reply a response filter turned into a stream (that one was not
  // heard at all: no log, no count, and counted as a client abort).
  it.each(['/big', '/local/big'])('%s: the client sees a cut response; the filter is counted and named, the access line says so', async (path) => {
    const before = { errors: await tenantErrors(), aborts: await clientAborts(), logs: logs.lines.length }
    const r = await request(`http://127.0.0.1:${port}${path}`)
    expect(r.statusCode).toBe(200) // the head was out before the failure
    await expect(r.body.text()).rejects.toThrow()
    await expect.poll(tenantErrors, { timeout: 10_000 }).toBe(before.errors + 1)
    const since = (msg: string) => logs.lines.slice(before.logs).filter((l) => l.msg === msg)
    await expect.poll(() => since('filter body stream failed; response cut').length, { timeout: 10_000 }).toBe(1)
    await expect.poll(() => since('access').length, { timeout: 10_000 }).toBe(1)
    expect(since('access')[0]).toMatchObject({ path, code: 'INTERNAL_SERVER_ERROR', filter: 'tenant' })
    expect(await clientAborts()).toBe(before.aborts)
  })
})
