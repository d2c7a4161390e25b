// A control plane whose PostgreSQL role may read and write the tables but not create any (least
// privilege: the schema migrated by its owner; also PostgreSQL 15's default for any role but the
// database owner, whose `public` schema grants CREATE to its owner only) failed every start on a
// database already fully migrated: its first statement was CREATE TABLE IF NOT EXISTS
// schema_migrations, and PostgreSQL checks the right to create even when the table exists
// ("permission denied for schema public"). It now starts, serves and commits. Real PostgreSQL.
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { openDb } from '../../control-plane/db.ts'
import { migrate } from '../../control-plane/migrations.ts'
import { startTestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres
beforeAll(async () => {
  server = await startPostgres()
}, 30_000)
afterAll(async () => {
  await server?.close()
})

it('a role without CREATE on the schema starts on a migrated database, reads and commits', async () => {
  const ownerUrl = await server.createDatabase('lp20r')
  // The owner migrates and seeds (a first control plane run as the owner).
  const first = await startTestControlPlane({ db: ownerUrl })
  const seeded = first.store.head()!.version
  await first.close()
  const c = new pg.Client({ connectionString: ownerUrl })
  await c.connect()
  try {
    await c.query('CREATE ROLE igw_app20r LOGIN')
    await c.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC')
    await c.query('GRANT USAGE ON SCHEMA public TO igw_app20r')
    await c.query('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO igw_app20r')
  } finally {
    await c.end()
  }
  const appUrl = new URL(ownerUrl)
  appUrl.username = 'igw_app20r'

  const app = openDb(appUrl.toString())
  try {
    expect(await migrate(app)).toEqual([])
  } finally {
    await app.close()
  }
  const cp = await startTestControlPlane({ db: appUrl.toString(), seed: null })
  try {
    expect(cp.store.head()?.version).toBe(seeded)
    expect((await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
    expect(cp.store.head()?.version).toBe(seeded + 1)
  } finally {
    await cp.close()
  }
})
