// Cleanups (ctx.addCleanup) on every way a request ends, through a real WorkerProxy and a real
// backend. The defect: a cleanup added once the request was over (an async filter that was still
// deciding when the client left) was kept for a run that had already happened, and never ran —
// what it released (a concurrency slot, a single-flight fill) leaked for good.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

async function startWith(first: Filter, second: Filter, backend: RawBackend, failModes: ['open' | 'closed', 'open' | 'closed'] = ['closed', 'closed']) {
  const mods: FilterModules = { ...filterModules, 'request-id': { create: () => first }, tenant: { create: () => second } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'request-id', failMode: failModes[0] }, { name: 'tenant', failMode: failModes[1] }] }],
  })
  const logs = new LogCapture()
  const metrics = new ProxyMetrics(new Registry())
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`
  return { url, logs, metrics, close: () => proxy.drain(100) }
}

describe('chain cleanups (sweep17c)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('a cleanup added after the request ended (client left during an async onRequest) runs at once', async () => {
    let entered!: () => void
    const inFilter = new Promise<void>((r) => (entered = r))
    let released = 0
    let resolvedAfterClose = false
    const slow: Filter = {
      name: 'slot-taker',
      // Takes a slot only once its (slow) decision is made — by then the client has gone.
      onRequest: (ctx) =>
        new Promise((resolve) => {
          ctx.res!.once('close', () => {
            setImmediate(() => {
              resolvedAfterClose = true
              ctx.addCleanup(() => void released++)
              resolve(undefined)
            })
          })
          entered()
        }),
    }
    const s = await startWith({ name: 'noop' }, slow, backend)
    try {
      const ac = new AbortController()
      const pending = request(`${s.url}/slot`, { signal: ac.signal }).catch((err: unknown) => err)
      await inFilter
      ac.abort()
      await pending
      await expect.poll(() => resolvedAfterClose, { timeout: 10_000 }).toBe(true)
      await expect.poll(() => released, { timeout: 10_000 }).toBe(1)
      // exactly once, and the request logged as the client's abort
      await new Promise((r) => setTimeout(r, 100))
      expect(released).toBe(1)
      expect(s.logs.find('access').at(-1)).toMatchObject({ status: 499, aborted: true })
    } finally {
      await s.close()
    }
  })

  it('a cleanup that throws when run late is logged, and the worker keeps serving', async () => {
    let entered!: () => void
    const inFilter = new Promise<void>((r) => (entered = r))
    let added = false
    const slow: Filter = {
      name: 'bad-cleanup',
      onRequest: (ctx) =>
        new Promise((resolve) => {
          ctx.res!.once('close', () =>
            setImmediate(() => {
              ctx.addCleanup(() => {
                throw new Error('release failed')
              })
              added = true
              resolve(undefined)
            }),
          )
          entered()
        }),
    }
    const s = await startWith({ name: 'noop' }, slow, backend)
    try {
      const ac = new AbortController()
      const pending = request(`${s.url}/x`, { signal: ac.signal }).catch((err: unknown) => err)
      await inFilter
      ac.abort()
      await pending
      await expect.poll(() => added, { timeout: 10_000 }).toBe(true)
      await expect.poll(() => s.logs.find('cleanup failed').length, { timeout: 10_000 }).toBe(1)
    } finally {
      await s.close()
    }
  })

  it.each([
    ['a proxied response', undefined, 200],
    ['a later filter answering itself', () => errorReply('RATE_LIMITED', 'slow down'), 429],
    [
      'a later filter failing closed',
      () => {
        throw new Error('boom')
      },
      500,
    ],
    [
      'a later filter rejecting',
      async () => {
        throw new Error('boom')
      },
      500,
    ],
  ] as const)('a cleanup added in the request phase runs exactly once after %s', async (_n, second, status) => {
    let released = 0
    const taker: Filter = {
      name: 'taker',
      onRequest: (ctx) => {
        ctx.addCleanup(() => void released++)
      },
    }
    const other: Filter = second === undefined ? { name: 'noop' } : { name: 'other', onRequest: second as Filter['onRequest'] }
    const s = await startWith(taker, other, backend)
    try {
      const res = await request(`${s.url}/x`)
      await res.body.dump()
      expect(res.statusCode).toBe(status)
      await expect.poll(() => released, { timeout: 10_000 }).toBe(1)
      await new Promise((r) => setTimeout(r, 50))
      expect(released).toBe(1)
    } finally {
      await s.close()
    }
  })
})
