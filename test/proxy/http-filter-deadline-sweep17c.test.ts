// A request-phase filter that never decides (a hung Redis call, a webhook that never answers) held
// an HTTP request until the client gave up — logged as its 499 — although the route promises
// totalMs → 504. Now the deadline answers 504 UPSTREAM_TIMEOUT naming the filter, counted in
// igw_filter_errors_total and logged; a filter that decides in time is unaffected.
// Real WorkerProxy, real node:http backend, undici client.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

async function startWith(f: Filter, backend: RawBackend, failMode: 'open' | 'closed', totalMs: number) {
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'api', upstream: backend.url, type: 'http', timeouts: { totalMs }, filters: [{ name: 'request-id' }, { name: 'tenant', failMode }] }],
  })
  const logs = new LogCapture()
  const registry = new Registry()
  const metrics = new ProxyMetrics(registry)
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const port = (proxy.server.address() as AddressInfo).port
  return { port, logs, registry, close: () => proxy.drain(100) }
}

describe('a request-phase filter that never decides (HTTP)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  for (const failMode of ['open', 'closed'] as const) {
    it(`failMode ${failMode}: 504 UPSTREAM_TIMEOUT at totalMs, the filter named, counted and logged`, async () => {
      const hung: Filter = { name: 'tenant', onRequest: () => new Promise(() => undefined) }
      const p = await startWith(hung, backend, failMode, 400)
      try {
        const t0 = performance.now()
        const r = await request(`http://127.0.0.1:${p.port}/x`, { headersTimeout: 15_000, bodyTimeout: 15_000 })
        const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
        expect(r.statusCode).toBe(504)
        expect(body.errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
        expect(body.errors[0]!.message).toContain('"tenant"')
        expect(performance.now() - t0).toBeLessThan(10_000) // answered at the deadline, not at the client's timeout
        const errors = await p.registry.getSingleMetric('igw_filter_errors_total')!.get()
        expect(errors.values.find((v) => v.labels.filter === 'tenant')?.value).toBe(1)
        await expect.poll(() => p.logs.find('filter did not decide before the request deadline').length, { timeout: 10_000 }).toBe(1)
      } finally {
        await p.close()
      }
    })
  }

  it('a filter that decides in time is unaffected (no timer left to fire)', async () => {
    const slow: Filter = { name: 'tenant', onRequest: () => new Promise((resolve) => setTimeout(() => resolve(undefined), 50)) }
    const p = await startWith(slow, backend, 'closed', 400)
    try {
      for (let i = 0; i < 3; i++) {
        const r = await request(`http://127.0.0.1:${p.port}/ok-${i}`)
        await r.body.dump()
        expect(r.statusCode).toBe(200)
      }
      await new Promise((r) => setTimeout(r, 600))
      expect(p.logs.find('filter did not decide before the request deadline')).toEqual([])
    } finally {
      await p.close()
    }
  })
})
