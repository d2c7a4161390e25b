// A tenant filter placed after the cache never runs on a hit: with requireTenant: false (the only
// way such a route started) one user's stored answer was served to a request without any token,
// and entries were keyed without the tenant. Such a route is now refused at start.
import { describe, expect, it } from 'vitest'
import { startTestProxy } from '../helpers/proxy.ts'

describe('cache: a tenant filter after the cache', () => {
  it('refuses to start, whatever requireTenant says', async () => {
    const route = (filters: unknown[]) => ({ tenants: { acme: {} }, routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: filters as never }] })
    await expect(startTestProxy(route([{ name: 'cache', requireTenant: false }, { name: 'tenant' }]))).rejects.toThrow(/tenant filter runs after cache/)
    // Before it, with or without requireTenant, starts.
    const ok = await startTestProxy(route([{ name: 'tenant' }, { name: 'cache', requireTenant: false }]))
    await ok.close()
  })
})
