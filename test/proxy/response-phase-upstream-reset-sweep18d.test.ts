// The upstream failed (reset mid-body) while a filter's async onResponse was still pending (a
// filter reading the body before the head): the 502 went through the whole response phase again,
// so the pending filter's onResponse — and every filter that had already run — was called a second
// time for one request (a cache storing twice, a usage counter counting twice). Each filter's
// onResponse runs at most once per request: the 502 passes only the filters that had not run,
// as the response-phase deadline's 504 does. Real WorkerProxy, raw TCP upstream, undici client.
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
import { startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

describe('upstream reset while an async response-phase filter is pending', () => {
  let upstream: RawTcpUpstream
  beforeAll(async () => {
    // Head and part of a 100 000-byte body, then a reset.
    upstream = await startRawTcpUpstream((sock) => {
      sock.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n' + '{"data":' + ' '.repeat(1000))
      setTimeout(() => sock.resetAndDestroy(), 100)
    })
  })
  afterAll(async () => {
    await upstream?.close()
  })

  it('each filter\'s onResponse runs once; the 502 goes through only the filters that had not run', async () => {
    const calls = { first: 0, reader: 0, last: 0 }
    const statuses: number[] = []
    // Index 0: runs last in the response phase (not yet run when the upstream fails).
    const first: Filter = {
      name: 'tenant',
      onResponse: (_ctx, res) => {
        calls.first++
        statuses.push(res.status)
      },
    }
    // Index 1: reads the body before the head, pending while the upstream fails.
    const reader: Filter = {
      name: 'request-id',
      onResponse: (_ctx, res) => {
        calls.reader++
        const body = res.body
        if (Buffer.isBuffer(body)) return
        body.on('error', () => undefined)
        body.resume()
        return new Promise<void>((resolve) => body.once('close', resolve))
      },
    }
    // Index 2: runs first in the response phase (done before the upstream fails).
    const last: Filter = { name: 'cache', onResponse: () => void calls.last++ }
    const config = validateConfig({
      log: { level: 'info' },
      routes: [{ name: 'api', upstream: upstream.url, type: 'http', timeouts: { totalMs: 10_000 }, filters: [{ name: 'tenant' }, { name: 'request-id' }, { name: 'cache' }] }],
    })
    const logs = new LogCapture()
    const proxy = new WorkerProxy(
      { workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: { ...filterModules, tenant: { create: () => first }, 'request-id': { create: () => reader }, cache: { create: () => last } } as FilterModules },
      config,
    )
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    const port = (proxy.server.address() as AddressInfo).port
    try {
      const r = await request(`http://127.0.0.1:${port}/graphql`, { headersTimeout: 20_000, bodyTimeout: 20_000 })
      const body = (await r.body.json()) as { errors: { extensions: { code: string } }[] }
      expect(r.statusCode).toBe(502)
      expect(body.errors[0]!.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
      await new Promise((resolve) => setTimeout(resolve, 300)) // a late second call would show by now
      expect(calls).toEqual({ first: 1, reader: 1, last: 1 })
      expect(statuses).toEqual([502])
      await expect.poll(() => logs.lines.filter((l) => l.status === 502).length, { timeout: 10_000 }).toBe(1)
    } finally {
      await proxy.drain(100)
    }
  })
})
