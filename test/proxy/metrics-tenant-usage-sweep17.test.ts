// Per-tenant usage (what the control plane's statements and usedToday are built from) for tenant
// ids that are also names of Object.prototype members. "constructor", "toString" or "valueOf" are
// valid config tenant ids (letters first, up to 128 characters); the usage counters looked them up
// with `counters[id] ??= …`, found Object.prototype's function, and every request of such a tenant
// threw in the worker thread as it finished (the thread died and was restarted) and its usage was
// never reported.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mergeUsage, TenantUsage } from '../../proxy/tenant-usage.ts'
import type { RequestContext } from '../../proxy/context.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const TENANTS = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', 'acme']

describe('tenant usage: tenant ids named like Object.prototype members', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({
      tenants: Object.fromEntries(TENANTS.map((t) => [t, { tier: 'gold' }])),
      routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'tenant' }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('their requests are answered, the worker thread stays up, and their usage is reported', async () => {
    for (const tenant of TENANTS) {
      for (let i = 0; i < 2; i++) {
        const res = await request(`${proxy.url}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-tenant-id': tenant },
          body: JSON.stringify({ query: '{ hello }' }),
        })
        expect(res.statusCode, tenant).toBe(200)
        expect(await res.body.json()).toEqual({ data: { hello: 'Hello, world!' } })
      }
    }
    // The access line of each request is written once it finished: by then the usage is counted.
    await expect.poll(() => proxy.logs.find('access').length, { timeout: 10_000 }).toBe(TENANTS.length * 2)
    const usage = await proxy.collectUsage()
    for (const tenant of TENANTS) {
      expect(Object.hasOwn(usage, tenant), tenant).toBe(true)
      expect(usage[tenant], tenant).toMatchObject({ requests: 2, errors: 0, costUnits: 2, byKind: { graphql: 2 } })
    }
    expect(metricSum(await proxy.metricsText(), 'igw_worker_restarts_total')).toBe(0)
    expect(proxy.logs.lines.filter((l) => l.msg === 'worker thread exited; restarting')).toEqual([])
  })

  it('merging snapshots (the supervisor side) keeps such tenants too', () => {
    const u = new TenantUsage()
    u.setTenants(['constructor', 'toString'])
    const route = { type: 'graphql', config: { filters: [{ name: 'tenant' }] } }
    const ctx = (tenant: string, extra: object = {}) => ({ tenant, route, cost: 1, ...extra }) as unknown as RequestContext
    u.request(ctx('constructor'), 200)
    u.request(ctx('constructor', { errorCode: 'RATE_LIMITED' }), 429)
    u.request(ctx('toString', { dlpActions: { 'email:mask': 2 } }), 200, 10)
    // what a worker posts arrives as a structured clone: plain objects
    const posted = structuredClone(u.drain())
    const merged = mergeUsage(mergeUsage({}, posted), structuredClone(posted))
    expect(Object.keys(merged).sort()).toEqual(['constructor', 'toString'])
    expect(merged.constructor).toEqual({ requests: 4, errors: 0, costUnits: 2, rejections: { RATE_LIMITED: 2 }, bytesExported: 0, dlpActions: {}, byKind: { graphql: 2 } })
    expect(merged.toString).toEqual({ requests: 2, errors: 0, costUnits: 2, rejections: {}, bytesExported: 20, dlpActions: { 'email:mask': 4 }, byKind: { graphql: 2 } })
  })
})
