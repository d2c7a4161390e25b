// A reload (SIGHUP, a file change, a control plane push) that arrives while the proxy drains.
// It was applied: the draining threads built a new version for nothing, and the supervisor
// started a new upstream health checker after close() had stopped the previous one, so the
// upstreams went on being probed after close() returned (for good in an embedding process).
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('reload during drain (sweep18d)', () => {
  const cleanups: (() => Promise<unknown> | void)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('is not applied, and no health probe runs after close() returned', async () => {
    let probes = 0
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    let slowArrived = false
    const backend: RawBackend = await startRawBackend((req, res) => {
      if (req.url === '/health') {
        probes++
        res.end('ok')
        return
      }
      slowArrived = true
      void released.then(() => res.end('{"data":{"slow":true}}'))
    })
    cleanups.push(() => backend.close())
    const doc = {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      shutdown: { drainTimeoutMs: 10_000 },
      upstreams: { api: { url: backend.url, healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 500 } } },
      routes: [{ name: 'graphql', upstream: 'api' }],
    } satisfies Partial<GatewayConfigInput>
    let loads = 0
    const proxy: TestProxy = await startTestProxy(doc as never, {
      loadConfig: () => {
        loads++
        return validateConfig({ ...doc, log: { level: 'debug' } })
      },
    })
    let closed = false
    cleanups.push(() => (closed ? undefined : proxy.close()))
    await expect.poll(() => probes, { timeout: 10_000 }).toBeGreaterThan(0)

    // one request in flight holds the drain open
    const slow = request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{slow}"}' })
    await expect.poll(() => slowArrived, { timeout: 10_000 }).toBe(true)
    const closing = proxy.close().then(() => (closed = true))
    await expect.poll(() => proxy.logs.find('draining').length, { timeout: 10_000 }).toBe(1)

    const result = await proxy.reload()
    expect(result.ok).toBe(false)
    expect(result.version).toBe(1)
    expect(result.error).toMatch(/draining/)
    expect(proxy.version()).toBe(1)

    release()
    const res = await slow
    expect(res.statusCode).toBe(200)
    await res.body.dump()
    await closing
    expect(proxy.logs.find('config applied')).toHaveLength(0)

    // nothing probes the upstream any more once close() returned (interval 100 ms: 1.5 s is
    // fifteen intervals; one probe already in flight at close may still land)
    const after = probes
    await new Promise((r) => setTimeout(r, 1_500))
    expect(probes - after).toBeLessThanOrEqual(1)
    expect(loads).toBe(0)
  })
})
