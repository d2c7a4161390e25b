// The chain's contract, driven through a real WorkerProxy listener and a real backend, with
// filter implementations substituted for the built-in names (the registry is the only
// indirection; the proxy code under test is the production code).
import type { AddressInfo } from 'node:net'
import { Transform } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'

const order: string[] = []

function modules(first: Filter, second: Filter): FilterModules {
  return { ...filterModules, 'request-id': { create: () => first }, tenant: { create: () => second } }
}

async function startWith(mods: FilterModules, backend: RawBackend, failModes: ['open' | 'closed', 'open' | 'closed'] = ['closed', 'closed']) {
  const config = validateConfig({
    log: { level: 'silent' },
    routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'request-id', failMode: failModes[0] }, { name: 'tenant', failMode: failModes[1] }] }],
  })
  const metrics = new ProxyMetrics(new Registry())
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`
  return { proxy, url, metrics, close: () => proxy.drain(100) }
}

describe('filter chain', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('runs request phases in order and response phases in reverse; sync and async mix', async () => {
    order.length = 0
    const a: Filter = {
      name: 'a',
      onRequest: (ctx) => {
        order.push('req:a')
        ctx.setUpstreamHeader('x-from-a', '1')
      },
      onResponse: (_ctx, res) => {
        order.push('res:a')
        res.headers['x-seen-by-a'] = String(res.headers['x-seen-by-b'])
      },
    }
    const b: Filter = {
      name: 'b',
      onRequest: async (ctx) => {
        await new Promise((r) => setTimeout(r, 5))
        order.push('req:b')
        ctx.addResponseHeader('x-added', 'yes')
        return undefined
      },
      onResponse: async (_ctx, res) => {
        await new Promise((r) => setTimeout(r, 5))
        order.push('res:b')
        res.headers['x-seen-by-b'] = 'b'
      },
    }
    const s = await startWith(modules(a, b), backend)
    try {
      const res = await request(`${s.url}/x`)
      const body = (await res.body.json()) as { headers: Record<string, string> }
      expect(body.headers['x-from-a']).toBe('1')
      expect(res.headers['x-added']).toBe('yes')
      expect(res.headers['x-seen-by-a']).toBe('b')
      expect(order).toEqual(['req:a', 'req:b', 'res:b', 'res:a'])
    } finally {
      await s.close()
    }
  })

  it('a filter may answer directly; only earlier filters see that reply', async () => {
    order.length = 0
    const a: Filter = { name: 'a', onResponse: (_c, res) => void order.push(`res:a:${res.status}:${res.local}`) }
    const b: Filter = {
      name: 'b',
      onRequest: () => errorReply('RATE_LIMITED', 'slow down', { retryAfterSeconds: 2 }, { 'retry-after': '2' }),
      onResponse: () => void order.push('res:b'),
    }
    const s = await startWith(modules(a, b), backend)
    try {
      const before = backend.requests.length
      const res = await request(`${s.url}/x`)
      expect(res.statusCode).toBe(429)
      expect(res.headers['retry-after']).toBe('2')
      expect(await res.body.json()).toEqual({ errors: [{ message: 'slow down', extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 2 } }] })
      expect(backend.requests.length).toBe(before)
      expect(order).toEqual(['res:a:429:true'])
    } finally {
      await s.close()
    }
  })

  it('a response filter can wrap the body stream (content-length dropped)', async () => {
    const upper: Filter = {
      name: 'upper',
      onResponse: (_c, res) => {
        res.body = (res.body as NodeJS.ReadableStream).pipe(
          new Transform({
            transform(chunk: Buffer, _e, cb) {
              cb(null, Buffer.from(chunk.toString().toUpperCase()))
            },
          }),
        )
      },
    }
    const s = await startWith(modules(upper, { name: 'noop' }), backend)
    try {
      const res = await request(`${s.url}/lower`)
      expect(res.headers['content-length']).toBeUndefined()
      expect(await res.body.text()).toContain('"URL":"/LOWER"')
    } finally {
      await s.close()
    }
  })

  it('a filter that only observes the bytes (observeBody) keeps Content-Length', async () => {
    let seen = 0
    const tap: Filter = {
      name: 'tap',
      onResponse: (_c, res) => {
        res.observeBody(
          (res.body as NodeJS.ReadableStream).pipe(
            new Transform({
              transform(chunk: Buffer, _e, cb) {
                seen += chunk.length
                cb(null, chunk)
              },
            }),
          ) as unknown as import('node:stream').Readable,
        )
      },
    }
    const s = await startWith(modules(tap, { name: 'noop' }), backend)
    try {
      const res = await request(`${s.url}/sized`)
      const text = await res.body.text()
      expect(res.headers['content-length']).toBe(String(Buffer.byteLength(text)))
      expect(seen).toBe(Buffer.byteLength(text))
    } finally {
      await s.close()
    }
  })

  it.each([
    ['sync throw', () => {
      throw new Error('boom')
    }],
    ['async rejection', async () => {
      throw new Error('boom')
    }],
  ])('%s: fail-closed answers 500, fail-open skips the filter; both are counted', async (_n, onRequest) => {
    const broken: Filter = { name: 'broken', onRequest: onRequest as Filter['onRequest'] }
    const closed = await startWith(modules(broken, { name: 'noop' }), backend, ['closed', 'closed'])
    try {
      const res = await request(`${closed.url}/x`)
      expect(res.statusCode).toBe(500)
      expect(((await res.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('INTERNAL_SERVER_ERROR')
      expect((await closed.metrics.registry.getSingleMetricAsString('igw_filter_errors_total'))).toContain('igw_filter_errors_total{filter="broken"} 1')
    } finally {
      await closed.close()
    }
    const open = await startWith(modules(broken, { name: 'noop' }), backend, ['open', 'closed'])
    try {
      const res = await request(`${open.url}/x`)
      expect(res.statusCode).toBe(200)
      await res.body.dump()
      expect((await open.metrics.registry.getSingleMetricAsString('igw_filter_errors_total'))).toContain('igw_filter_errors_total{filter="broken"} 1')
    } finally {
      await open.close()
    }
  })

  it('a response filter that throws fails closed with 500 instead of an unvetted response', async () => {
    const broken: Filter = {
      name: 'broken',
      onResponse: () => {
        throw new Error('cannot vet')
      },
    }
    const s = await startWith(modules(broken, { name: 'noop' }), backend)
    try {
      const res = await request(`${s.url}/secret`)
      expect(res.statusCode).toBe(500)
      expect(await res.body.text()).not.toContain('/secret')
    } finally {
      await s.close()
    }
  })
})
