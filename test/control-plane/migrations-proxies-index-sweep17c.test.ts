// PushHub.list pages proxies with `ORDER BY id COLLATE "C"` on PostgreSQL (byte order whatever
// the database's collation). On a database whose collation is a locale's (ICU here, as production
// PostgreSQL often is), the primary key's index is in that locale's order and cannot serve the
// query: every page read and sorted the whole table. Migration 3 adds `proxies_id_c` on
// `proxies (id COLLATE "C")`, for PostgreSQL only; the plan of the very query PushHub.list sends
// must use it.
import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDb, type Db, type SqlValue } from '../../control-plane/db.ts'
import { MIGRATIONS, migrate } from '../../control-plane/migrations.ts'
import { PushHub } from '../../control-plane/push.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

/** A database whose default collation is ICU "en-US". */
function icuDatabase(name: string): string {
  const r = spawnSync('createdb', ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '--template=template0', '--locale-provider=icu', '--icu-locale=en-US', name], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`createdb ${name} failed: ${r.stderr}`)
  return `postgres://postgres@127.0.0.1:${pg.port}/${name}`
}

/** The Db with every SELECT on proxies recorded (sql, params), to EXPLAIN what PushHub.list really sends. */
function recording(db: Db, seen: { sql: string; params: readonly SqlValue[] }[]): Db {
  return Object.assign(Object.create(db) as Db, {
    kind: db.kind,
    query: async <T>(sql: string, params: readonly SqlValue[] = []) => {
      if (/^\s*select .* from proxies/i.test(sql)) seen.push({ sql, params })
      return db.query<T>(sql, params)
    },
    transaction: db.transaction.bind(db),
    close: db.close.bind(db),
  })
}

async function planOf(db: Db, sql: string, params: readonly SqlValue[]): Promise<string> {
  const rows = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, params)
  return rows.map((r) => r['QUERY PLAN']).join('\n')
}

describe('proxies_id_c (migration 3)', () => {
  it('PostgreSQL with an ICU collation: the paging query of PushHub.list uses the byte-order index', async () => {
    const db = openDb(icuDatabase('igw_pidx17c'))
    try {
      await migrate(db)
      const idx = await db.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE tablename = 'proxies' AND indexname = 'proxies_id_c'")
      expect(idx).toHaveLength(1)
      expect(idx[0]!.indexdef).toMatch(/COLLATE "C"/)

      const now = Date.now()
      const ids: string[] = []
      for (let i = 0; i < 5000; i++) ids.push(`${['p-', 'p_', 'P', 'p.'][i % 4]}${String(i).padStart(5, '0')}`)
      for (let i = 0; i < ids.length; i += 500) {
        const batch = ids.slice(i, i + 500)
        await db.query(`INSERT INTO proxies (id, first_seen, last_seen) VALUES ${batch.map((_id, j) => `($${j + 2}, $1, $1)`).join(', ')}`, [now, ...batch])
      }
      await db.query('ANALYZE proxies')

      const seen: { sql: string; params: readonly SqlValue[] }[] = []
      const hub = new PushHub(recording(db, seen))
      try {
        const first = await hub.list({ limit: 40 })
        const second = await hub.list({ after: first.at(-1)!.id, limit: 40 })
        expect(second).toHaveLength(40)
      } finally {
        await hub.close()
      }
      expect(seen).toHaveLength(2)
      for (const q of seen) {
        const plan = await planOf(db, q.sql, q.params)
        expect(plan, plan).toMatch(/Index Scan using proxies_id_c/)
        expect(plan, plan).not.toMatch(/\bSort\b/)
      }
    } finally {
      await db.close()
    }
  }, 60_000)

  it('is recorded on both engines; SQLite gets no extra index (its primary key is in byte order already)', async () => {
    const db = openDb(`sqlite:${join(mkdtempSync(join(tmpdir(), 'igw-pidx17c-')), 'igw.db')}`)
    try {
      expect(await migrate(db)).toEqual(MIGRATIONS.map((m) => m.version))
      expect(await migrate(db)).toEqual([])
      const versions = await db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')
      expect(versions.map((r) => Number(r.version))).toContain(3)
      const idx = await db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'proxies_id_c'")
      expect(idx).toEqual([])
    } finally {
      await db.close()
    }
  })

  it('PostgreSQL: an index created by hand before the upgrade does not stop the migration', async () => {
    const db = openDb(icuDatabase('igw_pidx17c_hand'))
    try {
      // A database at migration 2 whose operator added the index as a workaround.
      await db.query('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)')
      for (const m of MIGRATIONS.filter((m) => m.version <= 2)) {
        for (const s of m.statements) await db.query(s as string)
        await db.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, 1])
      }
      await db.query('CREATE INDEX proxies_id_c ON proxies (id COLLATE "C")')
      expect(await migrate(db)).toEqual(MIGRATIONS.filter((m) => m.version >= 3).map((m) => m.version))
      expect(await migrate(db)).toEqual([])
    } finally {
      await db.close()
    }
  }, 60_000)
})
