// APQ's first step — a hash the gateway does not know, answered PERSISTED_QUERY_NOT_FOUND, then
// the same request with its query — was counted as a tenant rejection: every Apollo client's cold
// start inflated the statement's rejections and the rejections anomaly. It is a request, neither
// a rejection nor charged (the backend never saw it; the retry with the query is charged).
import { describe, expect, it } from 'vitest'
import type { RequestContext } from '../../proxy/context.ts'
import { TenantUsage } from '../../proxy/tenant-usage.ts'

const route = { type: 'graphql', config: { filters: [{ name: 'tenant' }] } }
const ctx = (extra: Partial<{ cost: number; errorCode: string }>) => ({ tenant: 'acme', route, cost: 1, errorCode: undefined, dlpActions: undefined, ...extra }) as unknown as RequestContext

describe('tenant usage and the APQ handshake', () => {
  it('a PERSISTED_QUERY_NOT_FOUND answer is a request, not a rejection, and costs nothing; the retry is charged', () => {
    const u = new TenantUsage()
    u.setTenants(['acme'])
    u.request(ctx({ errorCode: 'PERSISTED_QUERY_NOT_FOUND', cost: 4 }), 200)
    u.request(ctx({ cost: 4 }), 200)
    u.request(ctx({ errorCode: 'PERSISTED_QUERY_NOT_ALLOWED' }), 400)
    const acme = u.drain().acme!
    expect({ requests: acme.requests, costUnits: acme.costUnits }).toEqual({ requests: 3, costUnits: 4 })
    expect(acme.rejections).toEqual({ PERSISTED_QUERY_NOT_ALLOWED: 1 })
  })
})
