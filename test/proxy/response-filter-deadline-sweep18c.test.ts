// An async response-phase filter (onResponse returning a promise) that never settles after the
// upstream answered had no deadline: the client waited for ever and the exchange (its held
// chunks, its snapshot) leaked. Now the route's remaining totalMs budget applies (headersMs when
// totalMs is 0): 504 UPSTREAM_TIMEOUT naming the filter, counted in igw_filter_errors_total,
// logged once. The same for the response phase of a local answer. Synchronous filters pay nothing.
// Real WorkerProxy, real node:http backend, undici client.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply } from '../../proxy/errors.ts'
import type { Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

const TIMED_OUT = 'filter did not finish its response phase before the deadline'

async function startWith(mods: Partial<FilterModules>, backend: RawBackend, timeouts: Record<string, number>, filters: unknown[] = [{ name: 'tenant', failMode: 'open' }]) {
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'api', upstream: backend.url, type: 'http', timeouts, filters }],
  })
  const logs = new LogCapture()
  const registry = new Registry()
  const metrics = new ProxyMetrics(registry)
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics, shared: {}, modules: { ...filterModules, ...mods } as FilterModules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const port = (proxy.server.address() as AddressInfo).port
  return { port, logs, registry, close: () => proxy.drain(100) }
}

async function filterErrors(registry: Registry, name: string): Promise<number | undefined> {
  const m = await registry.getSingleMetric('igw_filter_errors_total')!.get()
  return m.values.find((v) => v.labels.filter === name)?.value
}

const hungResponse = (): Filter => ({ name: 'tenant', onResponse: () => new Promise<void>(() => undefined) })

describe('a response-phase filter that never settles', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  for (const [label, timeouts] of [
    ['the remaining totalMs', { totalMs: 500 }],
    ['headersMs when totalMs is 0', { totalMs: 0, headersMs: 500 }],
  ] as const) {
    it(`after the upstream answered: 504 UPSTREAM_TIMEOUT within ${label}, the filter named, counted and logged once`, async () => {
      const p = await startWith({ tenant: { create: hungResponse } }, backend, timeouts)
      try {
        const t0 = performance.now()
        const r = await request(`http://127.0.0.1:${p.port}/x`, { headersTimeout: 20_000, bodyTimeout: 20_000 })
        const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
        expect(r.statusCode).toBe(504)
        expect(body.errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
        expect(body.errors[0]!.message).toContain('"tenant"')
        expect(performance.now() - t0).toBeLessThan(15_000)
        expect(await filterErrors(p.registry, 'tenant')).toBe(1)
        await expect.poll(() => p.logs.find(TIMED_OUT).length, { timeout: 10_000 }).toBe(1)
        const access = p.logs.lines.filter((l) => l.status === 504)
        expect(access.length).toBe(1)
        // the connection is usable afterwards (nothing of the dropped upstream body leaks into it)
        const again = await request(`http://127.0.0.1:${p.port}/y`, { headersTimeout: 20_000, bodyTimeout: 20_000 })
        await again.body.dump()
        expect(again.statusCode).toBe(504)
        await new Promise((r) => setTimeout(r, 200))
        expect(p.logs.find(TIMED_OUT).length).toBe(2)
        expect(await filterErrors(p.registry, 'tenant')).toBe(2)
      } finally {
        await p.close()
      }
    })
  }

  it('a filter that reads the upstream body and never settles: 504, the upstream transfer stopped', async () => {
    const reader: Filter = {
      name: 'tenant',
      onResponse: (_ctx, res) => {
        ;(res.body as NodeJS.ReadableStream).resume()
        return new Promise<void>(() => undefined)
      },
    }
    const p = await startWith({ tenant: { create: () => reader } }, backend, { totalMs: 500 })
    try {
      const r = await request(`http://127.0.0.1:${p.port}/x`, { method: 'POST', body: 'x'.repeat(200_000), headersTimeout: 20_000, bodyTimeout: 20_000 })
      await r.body.dump()
      expect(r.statusCode).toBe(504)
      expect(await filterErrors(p.registry, 'tenant')).toBe(1)
      await expect.poll(() => p.logs.find(TIMED_OUT).length, { timeout: 10_000 }).toBe(1)
      expect(p.logs.find('upstream request failed')).toEqual([])
    } finally {
      await p.close()
    }
  })

  it('on a local answer (a later filter refused): 504 naming the response filter instead of a hang', async () => {
    const refuse: Filter = { name: 'request-id', onRequest: () => errorReply('UNKNOWN_TENANT', 'no such tenant') }
    const p = await startWith({ tenant: { create: hungResponse }, 'request-id': { create: () => refuse } }, backend, { totalMs: 500 }, [{ name: 'tenant' }, { name: 'request-id' }])
    try {
      const r = await request(`http://127.0.0.1:${p.port}/x`, { headersTimeout: 20_000, bodyTimeout: 20_000 })
      const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
      expect(r.statusCode).toBe(504)
      expect(body.errors[0]!.message).toContain('"tenant"')
      expect(await filterErrors(p.registry, 'tenant')).toBe(1)
      await expect.poll(() => p.logs.find(TIMED_OUT).length, { timeout: 10_000 }).toBe(1)
    } finally {
      await p.close()
    }
  })

  it('a response filter that settles in time, or rejects, is unaffected (no timer left to fire)', async () => {
    let n = 0
    const slow: Filter = {
      name: 'tenant',
      onResponse: (_ctx, res) =>
        new Promise<void>((resolve, reject) =>
          setTimeout(() => {
            res.headers['x-seen'] = 'yes'
            if (n++ === 2) reject(new Error('boom'))
            else resolve()
          }, 50),
        ),
    }
    const p = await startWith({ tenant: { create: () => slow } }, backend, { totalMs: 400 })
    try {
      for (let i = 0; i < 3; i++) {
        const r = await request(`http://127.0.0.1:${p.port}/ok-${i}`)
        await r.body.dump()
        expect(r.statusCode).toBe(200) // (fail-open on the rejection)
        expect(r.headers['x-seen']).toBe('yes')
      }
      await new Promise((r) => setTimeout(r, 700))
      expect(p.logs.find(TIMED_OUT)).toEqual([])
      expect(await filterErrors(p.registry, 'tenant')).toBe(1) // the one rejection, nothing else
    } finally {
      await p.close()
    }
  })
})
