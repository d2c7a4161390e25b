// The per-worker per-tenant counters behind the control plane's usage reports (pure, no sockets).
import { describe, expect, it } from 'vitest'
import type { RequestContext } from '../../proxy/context.ts'
import { mergeUsage, TenantUsage, UNLISTED_TENANT } from '../../proxy/tenant-usage.ts'

const graphqlRoute = { type: 'graphql', config: { filters: [{ name: 'tenant' }] } }
const ingestRoute = { type: 'graphql', config: { filters: [{ name: 'tenant' }, { name: 'quota', kind: 'ingest' }] } }
const exportRoute = { type: 'http', config: { filters: [{ name: 'tenant' }] } }

function ctx(tenant: string | undefined, route: object, extra: Partial<{ cost: number; errorCode: string; dlpActions: Record<string, number> }> = {}): RequestContext {
  return { tenant, route, cost: 1, errorCode: undefined, dlpActions: undefined, ...extra } as unknown as RequestContext
}

describe('tenant usage counters', () => {
  it('counts requests, errors, cost, kinds, rejections, export bytes and DLP actions per tenant; drain resets', () => {
    const u = new TenantUsage()
    u.setTenants(['acme', 'globex'])
    u.request(ctx('acme', graphqlRoute, { cost: 3 }), 200)
    u.request(ctx('acme', ingestRoute, { cost: 5 }), 200)
    u.request(ctx('acme', graphqlRoute), 502, 0)
    u.request(ctx('acme', graphqlRoute, { errorCode: 'RATE_LIMITED' }), 429)
    u.request(ctx('acme', graphqlRoute, { errorCode: 'UPSTREAM_TIMEOUT' }), 504)
    u.request(ctx('globex', exportRoute, { dlpActions: { 'email:mask': 4 } }), 200, 1234)
    u.request(ctx('stranger', graphqlRoute), 200)
    u.request(ctx(undefined, graphqlRoute), 403)
    u.subscription(ctx('globex', graphqlRoute), 101)
    u.subscription(ctx('globex', graphqlRoute), 403)
    const snap = u.drain()
    expect(snap.acme).toEqual({ requests: 5, errors: 2, costUnits: 10, rejections: { RATE_LIMITED: 1 }, bytesExported: 0, dlpActions: {}, byKind: { graphql: 5, ingest: 5 } })
    expect(snap.globex).toEqual({ requests: 1, errors: 0, costUnits: 1, rejections: {}, bytesExported: 1234, dlpActions: { 'email:mask': 4 }, byKind: { subscriptions: 1 } })
    expect(snap[UNLISTED_TENANT]!.requests).toBe(1)
    expect(Object.keys(snap).sort()).toEqual([UNLISTED_TENANT, 'acme', 'globex'].sort())
    expect(u.drain()).toEqual({})
  })

  it('merges worker snapshots by adding', () => {
    const a = new TenantUsage()
    const b = new TenantUsage()
    for (const u of [a, b]) {
      u.setTenants(['acme'])
      u.request(ctx('acme', graphqlRoute, { errorCode: 'QUOTA_EXCEEDED' }), 429)
      u.request(ctx('acme', graphqlRoute, { cost: 2 }), 200)
    }
    const merged = mergeUsage(mergeUsage({}, a.drain()), b.drain())
    expect(merged.acme).toMatchObject({ requests: 4, costUnits: 4, rejections: { QUOTA_EXCEEDED: 2 }, byKind: { graphql: 4 } })
  })
})
