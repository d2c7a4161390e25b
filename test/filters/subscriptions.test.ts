import type { IncomingMessage } from 'node:http'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { subscriptionsFilter, dedupScope } from '../../filters/subscriptions/index.ts'
import { RequestContext } from '../../proxy/context.ts'
import type { RouteRuntime } from '../../proxy/runtime.ts'
import type { FilterDeps } from '../../proxy/filter.ts'

const route = { name: 'gql', timeouts: { totalMs: 0 } } as unknown as RouteRuntime
const req = { method: 'GET', url: '/graphql', headers: {}, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage

function ctx(claims: Record<string, unknown> | undefined, active = 0): RequestContext {
  const c = new RequestContext(req, undefined, route, pino({ level: 'silent' }), 0, '')
  c.subscription = { id: '1', connectionId: 'c', active }
  c.claims = claims
  c.tenant = 'acme'
  c.tier = 'silver'
  return c
}

async function filter(cfg: Record<string, unknown>) {
  return subscriptionsFilter.create({ name: 'subscriptions', failMode: 'closed', ...cfg } as never, {} as FilterDeps)
}

describe('subscriptions filter', () => {
  it('is a no-op on plain HTTP requests', async () => {
    const f = await filter({ dedupClaims: ['sub'], tierClaim: 'tier', maxPerConnection: 1 })
    const c = new RequestContext(req, undefined, route, pino({ level: 'silent' }), 0, '')
    c.claims = { sub: 'u', tier: 'gold' }
    expect(f.onRequest!(c)).toBeUndefined()
    expect(c.tier).toBeUndefined()
  })

  it('scopes sharing by the configured verified claims; nothing without claims', async () => {
    const f = await filter({ dedupClaims: ['sub'] })
    const a = ctx({ sub: 'u1', iat: 1 })
    const b = ctx({ sub: 'u1', iat: 2 })
    const c = ctx({ sub: 'u2' })
    const none = ctx(undefined)
    for (const x of [a, b, c, none]) expect(f.onRequest!(x)).toBeUndefined()
    expect(a.subscription!.dedupScope).toBe(b.subscription!.dedupScope)
    expect(a.subscription!.dedupScope).not.toBe(c.subscription!.dedupScope)
    expect(none.subscription!.dedupScope).toBeUndefined()
    const tenantWide = await filter({ dedupClaims: [] })
    const t = ctx({ sub: 'u9' })
    tenantWide.onRequest!(t)
    expect(t.subscription!.dedupScope).toBe('tenant')
    // the default (no dedupClaims): the hub's credential scope applies
    const d = ctx({ sub: 'u1' })
    ;(await filter({})).onRequest!(d)
    expect(d.subscription!.dedupScope).toBeUndefined()
  })

  it('a claim absent on one side does not match a present one', () => {
    expect(dedupScope({ sub: 'u1' }, ['sub', 'org'])).not.toBe(dedupScope({ sub: 'u1', org: 'o' }, ['sub', 'org']))
  })

  it('takes the tier from a verified claim, ignoring values that are not tiers', async () => {
    const f = await filter({ tierClaim: 'plan.tier' })
    const gold = ctx({ plan: { tier: 'gold' } })
    f.onRequest!(gold)
    expect(gold.tier).toBe('gold')
    const junk = ctx({ plan: { tier: 'platinum' } })
    f.onRequest!(junk)
    expect(junk.tier).toBe('silver')
  })

  it('limits operations per connection with QUOTA_EXCEEDED', async () => {
    const f = await filter({ maxPerConnection: 2 })
    expect(f.onRequest!(ctx(undefined, 1))).toBeUndefined()
    const reply = f.onRequest!(ctx(undefined, 2)) as { status: number; body: string }
    expect(reply.status).toBe(429)
    expect(JSON.parse(reply.body).errors[0].extensions.code).toBe('QUOTA_EXCEEDED')
  })
})
