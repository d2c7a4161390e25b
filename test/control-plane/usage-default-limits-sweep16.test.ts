// Budget alerts (budget.80 / budget.100) come from the daily limit the quota filter enforces —
// a tenant's own limitPerDay, or quotas.defaults when it has none. Tenants on the default limit
// used to raise no alert at all. A real control plane, reports posted as a proxy does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
let proxyToken: string
beforeAll(async () => {
  cp = await startTestControlPlane({
    seed: {
      ...seedDocument(),
      tenants: { acme: {}, globex: {}, initech: {}, hooli: {} },
      quotas: {
        defaults: { graphql: { limitPerDay: 100 } },
        tenants: { globex: { graphql: { limitPerDay: null } }, initech: { graphql: { limitPerDay: 1000 } }, hooli: { graphql: { rate: 50 } } },
      },
    } as never,
  })
  proxyToken = await cp.token({ roles: ['proxy'] })
})
afterAll(async () => {
  await cp?.close()
})

let seq = 0
async function report(tenants: Record<string, { requests: number; byKind: { graphql: number } }>) {
  const body = { proxyId: 'lim-proxy', bootId: 'lim-boot', seq: ++seq, at: new Date().toISOString(), tenants }
  const r = await cp.api('/v1/usage', { method: 'POST', token: proxyToken, body: JSON.stringify(body) })
  expect(r.status).toBe(200)
}

async function budgetAlerts(tenant: string): Promise<{ kind: string; detail: { limit: number; used: number } }[]> {
  const r = await cp.api(`/v1/alerts?tenant=${tenant}`)
  expect(r.status).toBe(200)
  return ((await r.json()) as { items: { kind: string; detail: { limit: number; used: number } }[] }).items.filter((a) => a.kind.startsWith('budget.'))
}

describe('budget alerts use the limit the quota filter enforces', () => {
  it('a tenant on the default limitPerDay gets budget.80 then budget.100; an own limit or an own null wins', async () => {
    const u = (n: number) => ({ requests: n, byKind: { graphql: n } })
    await report({ acme: u(85), globex: u(500), initech: u(500), hooli: u(85) })
    expect((await budgetAlerts('acme')).map((a) => a.kind)).toEqual(['budget.80'])
    expect((await budgetAlerts('acme'))[0]!.detail).toMatchObject({ limit: 100, used: 85 })
    // hooli's own entry sets only a rate: its daily limit is still the default.
    expect((await budgetAlerts('hooli')).map((a) => a.kind)).toEqual(['budget.80'])
    // globex's own null removes the limit; initech's own 1000 is not reached.
    expect(await budgetAlerts('globex')).toEqual([])
    expect(await budgetAlerts('initech')).toEqual([])
    await report({ acme: u(20), initech: u(400) })
    expect((await budgetAlerts('acme')).map((a) => a.kind).sort()).toEqual(['budget.100', 'budget.80'])
    expect((await budgetAlerts('initech')).map((a) => a.kind)).toEqual(['budget.80'])
    expect((await budgetAlerts('initech'))[0]!.detail).toMatchObject({ limit: 1000, used: 900 })
  })
})
