// A schema migration the database refuses — the usual case: igw upgraded, and its --db role may use
// the tables but not alter them (least privilege; the tables' owner runs the migrations). The start
// said "igw control-plane: invalid config / must be owner of table audit_log": not --db, not that it
// was migrating, nor which step, nor what to do. It names all of it now; the database is left as it
// was, and the owner running the new igw once lets the role start. Real PostgreSQL.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { runControlPlane } from '../../control-plane/cli.ts'
import { openDb } from '../../control-plane/db.ts'
import { migrate } from '../../control-plane/migrations.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres
const dir = mkdtempSync(join(tmpdir(), 'igw-mig23s-'))
beforeAll(async () => {
  server = await startPostgres()
}, 30_000)
afterAll(async () => {
  await server?.close()
  rmSync(dir, { recursive: true, force: true })
})

async function sql(url: string, ...statements: string[]): Promise<pg.QueryResult[]> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    const out: pg.QueryResult[] = []
    for (const s of statements) out.push(await c.query(s))
    return out
  } finally {
    await c.end()
  }
}

const start = (db: string) =>
  runControlPlane({ db, 'auth-secret': 'x'.repeat(40), listen: '127.0.0.1:0', 'metrics-listen': 'off', 'log-level': 'silent', 'signing-key': join(dir, 'signing-key.pem') })

it('a migration the role may not apply names --db, the migration and the remedy; the owner applying it lets the role start', async () => {
  const ownerUrl = await server.createDatabase('mig23s')
  // A database an igw before migration 4 made, run by a role that may only read and write.
  const owner = openDb(ownerUrl)
  try {
    await migrate(owner)
  } finally {
    await owner.close()
  }
  await sql(
    ownerUrl,
    'ALTER TABLE audit_log DROP COLUMN request_id, DROP COLUMN detail',
    'DELETE FROM schema_migrations WHERE version = 4',
    'CREATE ROLE igw_app23s LOGIN',
    'REVOKE CREATE ON SCHEMA public FROM PUBLIC',
    'GRANT USAGE ON SCHEMA public TO igw_app23s',
    'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO igw_app23s',
  )
  const app = new URL(ownerUrl)
  app.username = 'igw_app23s'
  app.password = 'pw-23s' // trust auth ignores it; it must not be printed
  const err = await start(app.toString()).then(
    async (cp) => {
      await cp.close()
      return undefined
    },
    (e: unknown) => e as Error,
  )
  expect(err).toBeInstanceOf(ConfigError)
  expect(err!.message).toMatch(/^--db: /)
  const problem = (err as ConfigError).problems.join('\n')
  expect(problem).toContain('schema migration 4 ("audit entries name their request id and detail") failed: must be owner of table audit_log')
  expect(problem).toContain("run this igw once as the tables' owner")
  expect(problem).not.toContain('pw-23s')
  const [pending] = await sql(ownerUrl, 'SELECT version FROM schema_migrations WHERE version = 4')
  expect(pending!.rows).toEqual([])

  // The remedy it names: the owner migrates, then the role starts.
  const again = openDb(ownerUrl)
  try {
    expect(await migrate(again)).toEqual([4])
  } finally {
    await again.close()
  }
  const cp = await start(app.toString())
  await cp.close()
}, 30_000)
