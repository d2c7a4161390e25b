// A filter's reply whose body is a Uint8Array (TextEncoder's output, what replyProblem accepts as
// "bytes"), not a Buffer: it went to stream.pipeline as if it were a stream, which failed and
// destroyed the response (the connection dropped, no answer). A real WorkerProxy, a real backend.
import type { AddressInfo } from 'node:net'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Decision, Filter, RequestContext } from '../../proxy/filter.ts'
import { createLogger } from '../../proxy/log.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

describe('a filter reply with a Uint8Array body', () => {
  let backend: RawBackend
  let proxy: WorkerProxy
  let url: string
  const logs = new LogCapture()
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    const probe: Filter = {
      name: 'tenant',
      onRequest(ctx: RequestContext): Decision {
        if (ctx.req.headers['x-reply'] === undefined) return undefined
        return { status: 403, headers: { 'content-type': 'text/plain' }, body: new TextEncoder().encode('denied') as Buffer }
      },
    }
    const mods: FilterModules = { ...filterModules, tenant: { create: () => probe } }
    const config = validateConfig({ log: { level: 'info' }, routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }] }] })
    proxy = new WorkerProxy({ workerId: 0, logger: createLogger('info', logs as never), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: mods }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    await proxy?.drain(100)
    await backend?.close()
  })

  it('goes out as the filter answered it, with its length', async () => {
    const res = await request(`${url}/x`, { headers: { 'x-reply': '1' } })
    expect(res.statusCode).toBe(403)
    expect(res.headers['content-length']).toBe('6')
    expect(await res.body.text()).toBe('denied')
    const ok = await request(`${url}/x`)
    expect(ok.statusCode).toBe(200)
    await ok.body.text()
  })
})
