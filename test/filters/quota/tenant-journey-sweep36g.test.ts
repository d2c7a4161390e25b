// A client developer (tenant acme, silver) and the tenant admin living with quotas, through a real
// igw, a real graphql-yoga backend and the real persisted filter. The walk that held (Retry-After
// honoured, daily reset at the tenant's midnight, hints charged, QoS order) stays as a guard; the
// defect: a suspended kind (`limitPerDay: 0`) told clients the quota "resets at midnight".
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber } from '../../../config/quota-usage.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; json: { data?: unknown; errors?: { message: string; extensions: Record<string, unknown> }[] } }

async function gql(url: string, tenant: string, body: unknown): Promise<Answer> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify(body) })
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(await res.body.text()) as Answer['json'] }
}

/** Seconds from now to the next midnight in `tz` (what the docs promise a spent day waits). */
function secondsToMidnight(tz: string): number {
  const now = Date.now()
  const today = localDayNumber(tz, now)
  let lo = now
  let hi = now + 26 * 3600_000
  while (hi - lo > 1000) {
    const mid = Math.floor((lo + hi) / 2)
    if (localDayNumber(tz, mid) === today) lo = mid
    else hi = mid
  }
  return (hi - now) / 1000
}

const HELLO = { query: '{ hello }' }
const FREE = { extensions: { persistedQuery: { version: 1, sha256Hash: 'free' } } }
const HINTED = { extensions: { persistedQuery: { version: 1, sha256Hash: 'hinted' } } }

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

describe('tenant journey (sweep 36g)', () => {
  it('a suspended kind (limitPerDay 0) does not tell the client it resets at midnight; a spent day still does', async () => {
    const p = await startTestProxy({
      tenants: { acme: { tier: 'silver', timezone: 'America/New_York' }, globex: { timezone: 'Asia/Kolkata' } },
      persistedDocuments: { operations: { free: { document: '{ hello(name: "free") }', costUnits: 0 } } } as never,
      quotas: { defaults: { graphql: { rate: 100, burst: 100, limitPerDay: 1 } }, tenants: { globex: { graphql: { limitPerDay: 0 } } } } as never,
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] as never }],
    })
    try {
      for (const body of [HELLO, FREE]) {
        const off = await gql(p.url, 'globex', body)
        expect(off.status).toBe(429)
        const err = off.json.errors![0]!
        expect(err.extensions).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily', limit: 0 })
        expect(Number(off.headers['retry-after'])).toBeGreaterThanOrEqual(1)
        expect(err.message).not.toMatch(/used up|resets at midnight/)
        expect(err.message).toMatch(/switched off/)
      }
      // A day merely used up: the reset promise is true and Retry-After is the tenant's midnight.
      expect((await gql(p.url, 'acme', HELLO)).status).toBe(200)
      const spent = await gql(p.url, 'acme', HELLO)
      expect(spent.status).toBe(429)
      expect(spent.json.errors![0]!.message).toMatch(/resets at midnight America\/New_York/)
      expect(Math.abs(Number(spent.headers['retry-after']) - secondsToMidnight('America/New_York'))).toBeLessThanOrEqual(2)
      expect((await gql(p.url, 'acme', FREE)).status).toBe(200)
    } finally {
      await p.close()
    }
  }, 60_000)

  it('Retry-After of a rate refusal is honoured, the burst and daily refusals are told apart, hints are charged, and the admin metrics move', async () => {
    const p = await startTestProxy({
      tenants: { acme: { tier: 'silver', timezone: 'Asia/Kolkata' } },
      persistedDocuments: { operations: { hinted: { document: '{ hello(name: "hinted") }', costUnits: 3 } } } as never,
      quotas: { defaults: { graphql: { rate: 0.3, burst: 4, limitPerDay: 6 }, budget: { units: 1000, hardCap: true } } } as never,
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] as never }],
    })
    try {
      const first = await gql(p.url, 'acme', HINTED)
      expect(first.status).toBe(200)
      expect(first.headers['ratelimit']).toMatch(/"rate";r=1;t=10, "daily";r=3;t=\d+, "budget";r=997;/)
      expect((await gql(p.url, 'acme', HELLO)).status).toBe(200)
      const burst = await gql(p.url, 'acme', HELLO)
      expect(burst.status).toBe(429)
      expect(burst.json.errors![0]!.extensions).toMatchObject({ code: 'RATE_LIMITED', policy: 'rate' })
      const wait = Number(burst.headers['retry-after'])
      expect(wait).toBe(4) // 1 unit at 0.3/s: 3.33 s, rounded up
      await sleep(wait * 1000 + 50)
      expect((await gql(p.url, 'acme', HELLO)).status).toBe(200)
      await sleep(3400)
      const daily = await gql(p.url, 'acme', HELLO)
      expect(daily.status).toBe(200)
      const spent = await gql(p.url, 'acme', HELLO)
      expect(spent.json.errors![0]!.extensions).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily', limit: 6 })
      const m = await (await request(`${p.adminUrl}/metrics`)).body.text()
      expect(metricSum(m, 'igw_quota_used_today', 'tenant="acme"')).toBe(6)
      expect(metricSum(m, 'igw_budget_used_ratio', 'tenant="acme"')).toBeCloseTo(0.006)
      expect(metricSum(m, 'igw_quota_rejections_total', 'reason="rate"')).toBe(1)
      expect(metricSum(m, 'igw_quota_rejections_total', 'reason="daily"')).toBe(1)
    } finally {
      await p.close()
    }
  }, 60_000)
})
