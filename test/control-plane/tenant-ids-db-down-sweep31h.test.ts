// Tenant listings read the head document, kept in memory, and "reads of the head document still
// work" while the database is unavailable (docs/control-plane.md) — but GET /v1/tenants and
// /v1/tenants/{id} read every tenant's uuid from the tenants table on each request, so they
// answered 503 with the rest. The ids change only in commits: the last read serves meanwhile.
// On a real PostgreSQL; the database failing is a lock on tenants outlasting lock_timeout.
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres
let cp: TestControlPlane
let dbUrl: string
beforeAll(async () => {
  server = await startPostgres()
  dbUrl = await server.createDatabase('igw_tenant_ids31h')
  cp = await startTestControlPlane({ db: `${dbUrl}?lock_timeout=300` })
}, 60_000)
afterAll(async () => {
  await cp?.close()
  await server?.close()
})

async function withTenantsLocked<T>(fn: () => Promise<T>): Promise<T> {
  const other = new pg.Client({ connectionString: dbUrl })
  await other.connect()
  try {
    await other.query('BEGIN')
    await other.query('LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE')
    return await fn()
  } finally {
    await other.query('ROLLBACK').catch(() => undefined)
    await other.end()
  }
}

type Tenant = { id: string; uuid?: string }

describe('tenant listings while the database fails (sweep 31h)', () => {
  it('answer from the head with the ids last read; a write still answers 503', async () => {
    const before = (await (await cp.api('/v1/tenants')).json()) as { items: Tenant[] }
    const acme = before.items.find((t) => t.id === 'acme')!
    expect(acme.uuid).toMatch(/^[0-9a-f-]{36}$/)
    const [list, one, write] = await withTenantsLocked(async () => [
      await cp.api('/v1/tenants'),
      await cp.api('/v1/tenants/acme'),
      await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) }),
    ])
    expect(list.status).toBe(200)
    expect(((await list.json()) as { items: Tenant[] }).items).toEqual(before.items)
    expect(one.status).toBe(200)
    expect(((await one.json()) as Tenant).uuid).toBe(acme.uuid)
    expect(write.status).toBe(503)
  })

  it('a tenant created since is listed with its id once the database answers', async () => {
    expect((await cp.api('/v1/tenants/hooli', { method: 'PUT', body: JSON.stringify({ tier: 'silver' }) })).status).toBe(201)
    const items = ((await (await cp.api('/v1/tenants')).json()) as { items: Tenant[] }).items
    expect(items.find((t) => t.id === 'hooli')?.uuid).toMatch(/^[0-9a-f-]{36}$/)
  })
})
