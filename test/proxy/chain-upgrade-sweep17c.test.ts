// The request chain on WebSocket upgrades (proxy/chain.ts), through a real WorkerProxy, a real
// ws client and a real node:http backend. Defects: a filter whose decision never came (a hung
// dependency) held the handshake — and the client's socket — for ever, past the route's total
// timeout; and a value a filter added to the response was written raw into a refusal's head.
import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

async function startWith(f: Filter, backend: RawBackend, failMode: 'open' | 'closed', totalMs: number) {
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'ws', upstream: backend.url, type: 'http', timeouts: { totalMs }, filters: [{ name: 'request-id' }, { name: 'tenant', failMode }] }],
  })
  const logs = new LogCapture()
  const metrics = new ProxyMetrics(new Registry())
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const port = (proxy.server.address() as AddressInfo).port
  return { port, logs, metrics, close: () => proxy.drain(100) }
}

/** The answer to an upgrade the proxy refused: status, headers and body (or an error if none came). */
async function refusal(port: number): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`, { handshakeTimeout: 15_000 })
  const failed = once(ws, 'error').then(([e]) => {
    throw e as Error
  })
  const answered = once(ws, 'unexpected-response').then(async ([, res]) => {
    const r = res as IncomingMessage
    let body = ''
    r.setEncoding('utf8')
    r.on('data', (c: string) => (body += c))
    await once(r, 'end')
    return { status: r.statusCode ?? 0, headers: r.headers, body }
  })
  try {
    return await Promise.race([answered, failed])
  } finally {
    ws.terminate()
  }
}

describe('request chain on WebSocket upgrades (sweep17c)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it.each(['open', 'closed'] as const)('a filter that never decides (failMode %s) gets the client a 504 at the route deadline, counted and logged', async (failMode) => {
    const hang: Filter = { name: 'hang', onRequest: () => new Promise(() => undefined) }
    const s = await startWith(hang, backend, failMode, 300)
    try {
      const r = await refusal(s.port)
      expect(r.status).toBe(504)
      expect((JSON.parse(r.body) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
      expect(r.headers['x-request-id']).toBeDefined()
      expect(await s.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')).toContain('igw_filter_errors_total{filter="hang"} 1')
      await expect.poll(() => s.logs.find('filter did not decide before the request deadline').length, { timeout: 10_000 }).toBe(1)
      expect(s.logs.find('filter did not decide before the request deadline')[0]).toMatchObject({ filter: 'hang', failMode })
      await expect.poll(() => s.logs.find('access').length, { timeout: 10_000 }).toBe(1)
      expect(s.logs.find('access')[0]).toMatchObject({ status: 504, code: 'UPSTREAM_TIMEOUT', filter: 'hang' })
    } finally {
      await s.close()
    }
  })

  it('a slow filter that decides within the deadline still answers with its own decision', async () => {
    const slow: Filter = {
      name: 'slow',
      onRequest: () => new Promise((r) => setTimeout(() => r(errorReply('RATE_LIMITED', 'slow down')), 50)),
    }
    const s = await startWith(slow, backend, 'closed', 10_000)
    try {
      const r = await refusal(s.port)
      expect(r.status).toBe(429)
      expect(await s.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')).not.toContain('filter="slow"')
    } finally {
      await s.close()
    }
  })

  it('a CR/LF in a value a filter adds cannot split the head of an upgrade refusal', async () => {
    const splitter: Filter = {
      name: 'splitter',
      onRequest: (ctx) => {
        ctx.addResponseHeader('x-note', 'v\r\nset-cookie: injected=1')
        return errorReply('RATE_LIMITED', 'slow down')
      },
    }
    const s = await startWith(splitter, backend, 'closed', 10_000)
    try {
      const r = await refusal(s.port)
      expect(r.headers['set-cookie']).toBeUndefined()
      expect(r.status).toBe(500) // the filter failed (closed), instead of a refusal carrying an injected header
      expect(await s.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')).toContain('igw_filter_errors_total{filter="splitter"} 1')
    } finally {
      await s.close()
    }
  })
})
