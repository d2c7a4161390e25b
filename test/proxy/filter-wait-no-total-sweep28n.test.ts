// A request-phase filter that never decides (a hung Redis call, a webhook) on a route with
// `timeouts.totalMs: 0` (exports, long streams): the exchange armed its timer only for a finite
// deadline, so the client was held for ever (the response phase already fell back to headersMs).
// Now the wait is bounded by headersMs: 504 UPSTREAM_TIMEOUT naming the filter and a finite budget.
// Real WorkerProxy, real node:http backend, undici client.
import type { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
const logs = new LogCapture()
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  // `/hang…` never decides; `/slow…` decides after 50 ms.
  const f: Filter = {
    name: 'tenant',
    onRequest: (ctx) => (ctx.url.startsWith('/hang') ? new Promise(() => undefined) : new Promise((r) => setTimeout(() => r(undefined), 50))),
  }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const timeouts = { totalMs: 0, headersMs: 300, bodyIdleMs: 300 }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [
      { name: 'gql', match: { pathPrefix: '/hang/graphql' }, upstream: backend.url, type: 'graphql', timeouts, filters: [{ name: 'tenant', failMode: 'open' }] },
      { name: 'http', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http', timeouts, filters: [{ name: 'tenant', failMode: 'open' }] },
    ],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, mods, { logs }))
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

describe('a hung request-phase filter on a route with totalMs: 0', () => {
  it('is answered 504 within headersMs (http and graphql routes), the filter named with a finite budget, counted and logged', async () => {
    const ask = (path: string, body?: string) =>
      request(`http://127.0.0.1:${port}${path}`, { method: body === undefined ? 'GET' : 'POST', body, headers: body === undefined ? {} : { 'content-type': 'application/json' }, headersTimeout: 8_000, bodyTimeout: 8_000 }).then(
        async (r) => ({ status: r.statusCode, body: (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] } }),
        (err: Error) => ({ status: 0, body: { errors: [{ message: err.message, extensions: { code: 'CLIENT' } }] } }),
      )
    const [a, b] = await Promise.all([ask('/hang/x'), ask('/hang/graphql', '{"query":"{a}"}')])
    for (const r of [a, b]) {
      expect(r.status).toBe(504)
      expect(r.body.errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
      expect(r.body.errors[0]!.message).toBe('filter "tenant" did not decide within 300 ms')
    }
    const errors = await registry.getSingleMetric('igw_filter_errors_total')!.get()
    expect(errors.values.find((v) => v.labels.filter === 'tenant')?.value).toBe(2)
    const timeouts = await registry.getSingleMetric('igw_proxy_errors_total')!.get()
    expect(timeouts.values.filter((v) => v.labels.code === 'UPSTREAM_TIMEOUT').map((v) => [v.labels.route, v.value]).sort()).toEqual([['gql', 1], ['http', 1]])
    await expect.poll(() => logs.find('filter did not decide before the request deadline').length, { timeout: 10_000 }).toBe(2)
    expect(logs.find('filter did not decide before the request deadline').map((l) => l.timeoutMs)).toEqual([300, 300])
  })

  it('a filter that decides in time is unaffected', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await request(`http://127.0.0.1:${port}/slow-${i}`)
      await r.body.dump()
      expect(r.statusCode).toBe(200)
    }
    const errors = await registry.getSingleMetric('igw_filter_errors_total')!.get()
    expect(errors.values.find((v) => v.labels.filter === 'tenant')?.value).toBe(2)
  })
})
