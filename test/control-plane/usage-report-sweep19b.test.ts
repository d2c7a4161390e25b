// Per-tenant usage as a usage or billing consumer reads it: a real proxy (worker threads, the real
// quota and persisted filters) counts, its counters are posted as a usage report to a real control
// plane (SQLite and a real PostgreSQL), and the signed statement is read back.
//  - a quota refusal of a request that can never fit (400 BAD_REQUEST, reason too_expensive) is
//    its own key, `rejections.too_expensive`, not mixed into BAD_REQUEST with malformed requests;
//  - counters named like Object.prototype members ("toString", "constructor") sum as numbers in a
//    statement (they became strings such as "function toString() { [native code] }3");
//  - a fractional cost (a plugin's hint) is reported as the quota charges it, rounded up per
//    request (it was summed as set, then rounded per report: 0.4-unit requests were never billed).
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RequestContext } from '../../proxy/context.ts'
import { TenantUsage, type UsageSnapshot } from '../../proxy/tenant-usage.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/** 10^18 estimated units (charged as 10^9): over any burst below. */
const ENORMOUS = '{ items(first: 1000000000) { more(first: 1000000000) { id } } }'

let pg: TestPostgres
let backend: DemoBackend
const planes: TestControlPlane[] = []
beforeAll(async () => {
  pg = await startPostgres()
  backend = await startDemoBackend()
}, 60_000)
afterAll(async () => {
  for (const cp of planes) await cp.close()
  await backend?.close()
  await pg?.close()
})

async function plane(engine: 'sqlite' | 'postgres', name: string): Promise<TestControlPlane> {
  const cp = await startTestControlPlane(engine === 'postgres' ? { db: await pg.createDatabase(name) } : {})
  planes.push(cp)
  return cp
}

let seq = 0
async function postReport(cp: TestControlPlane, tenants: UsageSnapshot | Record<string, unknown>, at = new Date()): Promise<void> {
  const token = await cp.token({ roles: ['proxy'] })
  const body = { proxyId: 'sweep19b', bootId: 'boot-1', seq: ++seq, at: at.toISOString(), tenants }
  const r = await cp.api('/v1/usage', { method: 'POST', token, body: JSON.stringify(body) })
  expect(r.status, await r.clone().text()).toBe(200)
  expect(((await r.json()) as { accepted: boolean }).accepted).toBe(true)
}

interface Statement {
  days: { day: string; requests: number; costUnits: number; rejections: Record<string, unknown>; dlpActions: Record<string, unknown>; byKind: Record<string, unknown> }[]
  totals: { requests: number; costUnits: number; rejections: Record<string, unknown>; dlpActions: Record<string, unknown>; byKind: Record<string, unknown> }
}

async function statement(cp: TestControlPlane, tenant: string, at = new Date()): Promise<Statement> {
  const day = at.toISOString().slice(0, 10) // acme is in UTC
  const r = await cp.api(`/v1/tenants/${tenant}/statement?from=${day}&to=${day}`)
  expect(r.status).toBe(200)
  return (await r.json()) as Statement
}

async function gql(url: string, query: string): Promise<{ status: number; body: { errors?: { extensions?: Record<string, unknown> }[] } }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  return { status: res.statusCode, body: (await res.body.json()) as { errors?: { extensions?: Record<string, unknown> }[] } }
}

describe('usage reports: too_expensive refusals are their own rejections key (sweep 19b)', () => {
  let proxy: TestProxy
  beforeAll(async () => {
    proxy = await startTestProxy({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { rate: 0.001, burst: 2 } } } },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never,
    })
  })
  afterAll(async () => {
    await proxy?.close()
  })

  it.each(['sqlite', 'postgres'] as const)('the proxy counts them as too_expensive, malformed requests stay BAD_REQUEST, and the statement shows both (%s)', async (engine) => {
    // Two requests that can never fit (400 BAD_REQUEST), one that does not parse (BAD_REQUEST, in
    // a 200: the client takes application/json, where GraphQL over HTTP answers a parse failure so).
    for (let i = 0; i < 2; i++) {
      const r = await gql(proxy.url, ENORMOUS)
      expect(r.status).toBe(400)
      expect(r.body.errors![0]!.extensions).toMatchObject({ code: 'BAD_REQUEST', reason: 'too_expensive' })
    }
    const bad = await gql(proxy.url, '{ hello')
    expect(bad.status).toBe(200)
    expect(bad.body.errors![0]!.extensions).toMatchObject({ code: 'BAD_REQUEST' })
    const ok = await gql(proxy.url, '{ hello }')
    expect(ok.status).toBe(200)

    await expect.poll(() => proxy.logs.find('access').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(4)
    let usage: UsageSnapshot = {}
    await expect
      .poll(
        async () => {
          const got = await proxy.collectUsage()
          for (const [t, c] of Object.entries(got)) {
            const into = (usage[t] ??= { requests: 0, errors: 0, costUnits: 0, rejections: {}, bytesExported: 0, dlpActions: {}, byKind: {} })
            into.requests += c.requests
            into.costUnits += c.costUnits
            for (const [k, v] of Object.entries(c.rejections)) into.rejections[k] = (into.rejections[k] ?? 0) + v
            for (const [k, v] of Object.entries(c.byKind)) into.byKind[k] = (into.byKind[k] ?? 0) + v
          }
          return usage.acme?.requests ?? 0
        },
        { timeout: 10_000 },
      )
      .toBe(4)
    expect(usage.acme!.rejections).toEqual({ too_expensive: 2, BAD_REQUEST: 1 })
    // Nothing was spent on the refused ones: one admitted request of cost 1.
    expect(usage.acme!.costUnits).toBe(1)
    expect(usage.acme!.byKind).toEqual({ graphql: 1 })

    const cp = await plane(engine, 'igw_usage_too_expensive_19b')
    await postReport(cp, usage)
    const s = await statement(cp, 'acme')
    expect(s.totals.rejections).toEqual({ too_expensive: 2, BAD_REQUEST: 1 })
    expect(s.totals.requests).toBe(4)
    usage = {}
  })
})

describe('statements: counters named like Object.prototype members (sweep 19b)', () => {
  it.each(['sqlite', 'postgres'] as const)('sum as numbers, per day and in the totals (%s)', async (engine) => {
    const cp = await plane(engine, 'igw_usage_proto_keys_19b')
    const report = {
      acme: { requests: 5, rejections: { toString: 3, constructor: 1, RATE_LIMITED: 1 }, dlpActions: { valueOf: 2, hasOwnProperty: 4 } },
    }
    // Two reports on the same day: the second adds to the first row, the statement sums them.
    await postReport(cp, report)
    await postReport(cp, report)
    const s = await statement(cp, 'acme')
    expect(s.days).toHaveLength(1)
    for (const m of [s.days[0]!, s.totals]) {
      expect(m.requests).toBe(10)
      expect(m.rejections).toEqual({ toString: 6, constructor: 2, RATE_LIMITED: 2 })
      expect(m.dlpActions).toEqual({ valueOf: 4, hasOwnProperty: 8 })
    }
  })
})

describe('usage reports: fractional costs are reported as the quota charges them (sweep 19b)', () => {
  const route = { type: 'graphql', config: { filters: [{ name: 'tenant' }, { name: 'quota' }] } }
  const ctx = (cost: number) => ({ tenant: 'acme', route, cost, errorCode: undefined, dlpActions: undefined }) as unknown as RequestContext

  it('rounded up per request, as the quota filter charges (sums stay integers)', () => {
    const u = new TenantUsage()
    u.setTenants(['acme'])
    for (let i = 0; i < 10; i++) u.request(ctx(0.1), 200)
    u.request(ctx(2.5), 200)
    u.request(ctx(0), 200)
    const snap = u.drain()
    expect(snap.acme).toMatchObject({ requests: 12, costUnits: 13, byKind: { graphql: 13 } })
    expect(Number.isInteger(snap.acme!.costUnits)).toBe(true)
  })

  it.each(['sqlite', 'postgres'] as const)('one 0.4-unit request per report interval is billed, not rounded away (%s)', async (engine) => {
    const cp = await plane(engine, 'igw_usage_fractional_19b')
    const u = new TenantUsage()
    u.setTenants(['acme'])
    for (let i = 0; i < 3; i++) {
      u.request(ctx(0.4), 200)
      await postReport(cp, u.drain())
    }
    const s = await statement(cp, 'acme')
    expect(s.totals.requests).toBe(3)
    expect(s.totals.costUnits).toBe(3)
    expect(s.totals.byKind).toEqual({ graphql: 3 })
  })
})
