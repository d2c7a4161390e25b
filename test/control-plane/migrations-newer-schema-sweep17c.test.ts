// A database that a NEWER igw migrated (schema_migrations holds versions this igw does not know)
// used to be accepted silently: the control plane started and wrote rows into a schema it does
// not understand. It now refuses to start, naming the unknown migration and what it knows, and
// changes nothing in the database.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDb, type Db } from '../../control-plane/db.ts'
import { MIGRATIONS, migrate } from '../../control-plane/migrations.ts'
import { startTestControlPlane } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

const latest = Math.max(...MIGRATIONS.map((m) => m.version))

const engines = dbEngines('igw_newer17c', () => pg)

async function count(db: Db, table: string): Promise<number> {
  const rows = await db.query<{ n: unknown }>(`SELECT COUNT(*) AS n FROM ${table}`)
  return Number(rows[0]!.n)
}

describe.each(engines)('a database migrated by a newer igw, on $name', ({ spec }) => {
  it('migrate() refuses with a clear error naming the unknown migration', async () => {
    const db = openDb(await spec())
    try {
      await migrate(db)
      // What a newer igw would have left: its migration recorded (and its schema change made).
      await db.query('ALTER TABLE config_versions ADD COLUMN origin TEXT NOT NULL DEFAULT \'x\'')
      await db.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [latest + 1, 'config version origins', Date.now()])
      const err = await migrate(db).then(
        () => undefined,
        (e: unknown) => e as Error,
      )
      expect(err, 'migrate() accepted a schema it does not know').toBeInstanceOf(Error)
      expect(err!.name).toBe('SchemaTooNew')
      expect(err!.message).toContain('newer igw')
      expect(err!.message).toContain(`${latest + 1} ("config version origins")`)
      expect(err!.message).toContain(`up to ${latest}`)
      // Nothing was changed by the refused start.
      expect(await count(db, 'schema_migrations')).toBe(MIGRATIONS.length + 1)
    } finally {
      await db.close()
    }
  }, 60_000)

  it('the control plane does not start on it (and writes no seed version)', async () => {
    const url = await spec()
    const db = openDb(url)
    try {
      await migrate(db)
      await db.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [latest + 7, 'from the future', Date.now()])
    } finally {
      await db.close()
    }
    const started = startTestControlPlane({ db: url })
    const err = await started.then(
      async (cp) => {
        await cp.close()
        return undefined
      },
      (e: unknown) => e as Error,
    )
    expect(err, 'the control plane started on a newer schema').toBeInstanceOf(Error)
    expect(err!.message).toMatch(/migrated by a newer igw/)
    const again = openDb(url)
    try {
      expect(await count(again, 'config_versions')).toBe(0)
    } finally {
      await again.close()
    }
  }, 60_000)
})
