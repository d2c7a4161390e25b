// A write answered 503 changed nothing; one that changed something is not answered 503. Setting a
// daily quota (REST PUT /v1/tenants/{id}/quotas/{kind}, GraphQL setQuota) committed the new version,
// then read today's use for its answer: a database that failed that read (slow, going away — here
// a table lock outlasting `lock_timeout`) answered "the database is unavailable; try again" for a
// change already made and pushed to the proxies, and the retry with its If-Match got a 412. Now
// the answer is read before the commit (and the tenant's id inside it): a database that fails
// fails the write with nothing changed. On a real PostgreSQL.
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres
let cp: TestControlPlane
let dbUrl: string
beforeAll(async () => {
  server = await startPostgres()
  dbUrl = await server.createDatabase('igw_after_commit31c')
  // Lock waits end (55P03, a 503) after 300 ms instead of 10 s.
  cp = await startTestControlPlane({ db: `${dbUrl}?lock_timeout=300` })
}, 60_000)
afterAll(async () => {
  await cp?.close()
  await server?.close()
})

/** Runs `fn` while another session holds usage_daily (read for `usedToday`) locked. */
async function withUsageLocked<T>(fn: () => Promise<T>): Promise<T> {
  const other = new pg.Client({ connectionString: dbUrl })
  await other.connect()
  try {
    await other.query('BEGIN')
    await other.query('LOCK TABLE usage_daily IN ACCESS EXCLUSIVE MODE')
    return await fn()
  } finally {
    await other.query('ROLLBACK').catch(() => undefined)
    await other.end()
  }
}

const limitOf = (tenant: string, kind: string) => (cp.store.head()!.document as { quotas?: { tenants?: Record<string, Record<string, { limitPerDay?: number }>> } }).quotas?.tenants?.[tenant]?.[kind]?.limitPerDay

async function auditCount(): Promise<number> {
  return ((await (await cp.api('/v1/audit?limit=1000')).json()) as { items: unknown[] }).items.length
}

describe('a quota write while the database fails its reads', () => {
  it('REST: a 503 commits nothing (no version, no audit entry); once the database answers, the write goes through', async () => {
    expect((await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 100 }) })).status).toBe(201)
    const etag = (await cp.api('/v1/tenants/acme/quotas/graphql')).headers.get('etag')!
    const version = cp.store.head()!.version
    const entries = await auditCount()
    const r = await withUsageLocked(() => cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', headers: { 'if-match': etag }, body: JSON.stringify({ limitPerDay: 200 }) }))
    expect(r.status).toBe(503)
    expect(await r.json()).toMatchObject({ status: 503, detail: expect.stringMatching(/^the database is unavailable/) })
    expect(cp.store.head()!.version).toBe(version)
    expect(limitOf('acme', 'graphql')).toBe(100)
    expect(await auditCount()).toBe(entries)
    // The client's retry with the same If-Match is the write it meant, not a 412 over its own change.
    const retry = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', headers: { 'if-match': etag }, body: JSON.stringify({ limitPerDay: 200 }) })
    expect(retry.status).toBe(200)
    expect(await retry.json()).toMatchObject({ tenant: 'acme', tenantId: expect.stringMatching(/^[0-9a-f-]{36}$/), kind: 'graphql', limitPerDay: 200, usedToday: 0 })
    expect(limitOf('acme', 'graphql')).toBe(200)
  }, 60_000)

  it('GraphQL setQuota: SERVICE_UNAVAILABLE commits nothing; the retry with its ifMatch goes through', async () => {
    expect((await cp.api('/v1/tenants/globex/quotas/ingest', { method: 'PUT', body: JSON.stringify({ limitPerDay: 10 }) })).status).toBe(201)
    const ifMatch = (await cp.api('/v1/tenants/globex/quotas/ingest')).headers.get('etag')!
    const version = cp.store.head()!.version
    const entries = await auditCount()
    const mutation = { query: 'mutation($m: String) { setQuota(tenant: "globex", kind: "ingest", limitPerDay: 20, ifMatch: $m) { limitPerDay tenant usedToday etag } }', variables: { m: ifMatch } }
    const r = await withUsageLocked(() => cp.api('/graphql', { method: 'POST', body: JSON.stringify(mutation) }))
    const body = (await r.json()) as { data?: unknown; errors?: { extensions: { code: string } }[] }
    expect(r.status).toBe(503)
    expect(body.errors?.[0]!.extensions.code).toBe('SERVICE_UNAVAILABLE')
    expect(cp.store.head()!.version).toBe(version)
    expect(limitOf('globex', 'ingest')).toBe(10)
    expect(await auditCount()).toBe(entries)
    const retry = (await (await cp.api('/graphql', { method: 'POST', body: JSON.stringify(mutation) })).json()) as { data?: { setQuota: unknown }; errors?: unknown }
    expect(retry.errors).toBeUndefined()
    expect(retry.data!.setQuota).toEqual({ limitPerDay: 20, tenant: 'globex', usedToday: 0, etag: expect.stringMatching(/^"[0-9a-f]+"$/) })
    expect(limitOf('globex', 'ingest')).toBe(20)
  }, 60_000)

  it('a tenant PUT answers its UUID as of its own commit', async () => {
    const r = await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })
    expect(r.status).toBe(201)
    const created = (await r.json()) as { uuid: string }
    expect(created.uuid).toBe((await cp.store.tenantIds()).get('initech'))
    const again = (await (await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).json()) as { uuid: string }
    expect(again.uuid).toBe(created.uuid)
  }, 30_000)
})
