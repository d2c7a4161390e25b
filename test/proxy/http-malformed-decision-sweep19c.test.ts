// HTTP requests run the chain in proxy/exchange.ts, not chain.ts: a filter returning `null`
// threw "Cannot read properties of null (reading 'then')" out of every catch (the request hung,
// the worker died), and a reply HTTP cannot carry (a CR/LF in a header value, a number as a
// value, status 101) became a plain 500 from the head writer counted under no filter. Now each is
// that filter's failure: counted in igw_filter_errors_total, logged, answered 500 whatever its
// failMode. A real WorkerProxy with a test filter in the tenant slot, a real backend, undici.
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

const REPLIES: Record<string, unknown> = {
  null: null,
  crlf: { status: 401, headers: { 'www-authenticate': 'Bearer\r\nset-cookie: injected=1' }, body: 'no' },
  number: { status: 429, headers: { 'retry-after': 5 }, body: 'slow down' },
  status101: { status: 101, headers: {}, body: '' },
  ok: { status: 403, headers: { 'x-why': 'listed', 'set-cookie': ['a=1', 'b=2'] }, body: 'denied' },
}

describe('HTTP: a filter decision HTTP cannot carry (sweep19c)', () => {
  let backend: RawBackend
  let proxy: WorkerProxy
  let url: string
  const metrics = new ProxyMetrics(new Registry())
  const logs = new LogCapture()
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    const probe: Filter = {
      name: 'tenant',
      onRequest(ctx: RequestContext): Decision {
        const kind = String(ctx.req.headers['x-reply'] ?? '')
        return (kind === '' ? undefined : REPLIES[kind]) as Decision
      },
    }
    const mods: FilterModules = { ...filterModules, tenant: { create: () => probe } }
    const config = validateConfig({ log: { level: 'info' }, routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'tenant', failMode: 'open' }] }] })
    proxy = new WorkerProxy({ workerId: 0, logger: createLogger('info', logs as never), metrics, shared: {}, modules: mods }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    await proxy?.drain(100)
    await backend?.close()
  })
  const errorsCounted = async () => {
    const line = (await metrics.registry.getSingleMetricAsString('igw_filter_errors_total')).split('\n').find((l) => l.startsWith('igw_filter_errors_total{filter="tenant"}'))
    return line === undefined ? 0 : Number(line.split(' ').pop())
  }

  it.each(['null', 'crlf', 'number', 'status101'])('%s: 500 naming the filter (even fail-open), counted and logged; the worker serves on', async (kind) => {
    const before = await errorsCounted()
    const r = await request(`${url}/x`, { headers: { 'x-reply': kind }, headersTimeout: 10_000 })
    expect(r.statusCode).toBe(500)
    expect(r.headers['set-cookie']).toBeUndefined()
    const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(body.errors[0]).toEqual({ message: 'filter "tenant" failed', extensions: { code: 'INTERNAL_SERVER_ERROR' } })
    expect(await errorsCounted()).toBe(before + 1)
    expect(logs.find('filter answered with a reply HTTP cannot carry').length).toBeGreaterThan(0)
    const next = await request(`${url}/x`)
    expect(next.statusCode).toBe(200)
    await next.body.dump()
  })

  it('a well-formed reply is sent as it is (list values included)', async () => {
    const r = await request(`${url}/x`, { headers: { 'x-reply': 'ok' } })
    expect(r.statusCode).toBe(403)
    expect(r.headers['x-why']).toBe('listed')
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2'])
    expect(await r.body.text()).toBe('denied')
  })
})
