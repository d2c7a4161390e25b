// A fail-closed filter failing in its response phase turns the answer into a 500; that 500 lost
// the chain's headers (x-request-id above all, which the client quotes when it reports the error),
// while a request-phase 500 kept them. Real WorkerProxy, real node:http backend, undici.
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

describe('a response-phase failure (fail closed)', () => {
  let backend: RawBackend
  let proxy: WorkerProxy
  let port = 0
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    const failing: Filter = {
      name: 'tenant',
      onResponse: () => {
        throw new Error('cannot vet this response')
      },
    }
    const mods: FilterModules = { ...filterModules, tenant: { create: () => failing } }
    const config = validateConfig({ routes: [{ name: 'api', upstream: backend.url, type: 'http', filters: [{ name: 'request-id' }, { name: 'tenant', failMode: 'closed' }] }] })
    proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }, new LogCapture()), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: mods }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    port = (proxy.server.address() as AddressInfo).port
  })
  afterAll(async () => {
    await proxy?.drain(100)
    await backend?.close()
  })

  it('is a 500 that still carries the request id the client sent (and a generated one otherwise)', async () => {
    const given = await request(`http://127.0.0.1:${port}/x`, { headers: { 'x-request-id': 'req-abc-123' } })
    const body = await given.body.text()
    expect(given.statusCode).toBe(500)
    expect(body).toContain('INTERNAL_SERVER_ERROR')
    expect(given.headers['x-request-id']).toBe('req-abc-123')
    const generated = await request(`http://127.0.0.1:${port}/y`)
    await generated.body.dump()
    expect(generated.statusCode).toBe(500)
    expect(String(generated.headers['x-request-id'] ?? '')).toMatch(/^[0-9a-f-]{36}$/)
  })
})
