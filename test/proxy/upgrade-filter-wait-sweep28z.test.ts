// A request-phase filter that never decides, on a WebSocket upgrade of a route with
// `timeouts.totalMs: 0`: the upgrade path (runRequestChain) bounded the wait only by a finite
// deadline, so the handshake and the client's socket were held for ever. It gets headersMs now,
// as an HTTP exchange's request phase: 504 naming the filter and the wait.
import type { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startWorkerProxy } from '../helpers/proxy.ts'
import { echoHandler, rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'

let backend: RawBackend
let proxy: WorkerProxy
let port = 0
let registry: Registry
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  const hung: Filter = { name: 'tenant', onRequest: () => new Promise(() => undefined) }
  const mods: FilterModules = { ...filterModules, tenant: { create: () => hung } }
  const config = validateConfig({
    routes: [{ name: 'ws', upstream: backend.url, type: 'http', timeouts: { totalMs: 0, headersMs: 300, bodyIdleMs: 300 }, filters: [{ name: 'tenant', failMode: 'open' }] }],
  })
  ;({ proxy, port, registry } = await startWorkerProxy(config, mods))
})
afterAll(async () => {
  await proxy?.drain(100)
  await backend?.close()
})

describe('a hung filter on a WebSocket upgrade of a route with totalMs: 0', () => {
  it('is answered 504 after headersMs, the filter named, counted', async () => {
    const head = 'GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
    const raw = (await rawExchange(port, head, 8_000)).toString('latin1')
    expect(raw.startsWith('HTTP/1.1 504 ')).toBe(true)
    expect(raw).toContain('filter \\"tenant\\" did not decide within 300 ms')
    const errors = await registry.getSingleMetric('igw_filter_errors_total')!.get()
    expect(errors.values.find((v) => v.labels.filter === 'tenant')?.value).toBe(1)
  })
})
