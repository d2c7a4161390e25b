// Schema migrations, one list for both engines: the SQL is the common subset of SQLite and
// PostgreSQL (TEXT, BIGINT, UUID, CHECK, ON CONFLICT), so the same statements run on each.
// Times are epoch milliseconds (BIGINT); JSON is stored as TEXT (the exact bytes that were signed
// or hashed, which a JSON column type might re-serialize).
import { DatabaseUnavailable, StorageFull, type Db } from './db.ts'

/**
 * A statement for both engines, or one engine's own (an engine-specific statement is skipped on
 * the other; the migration is still recorded there, so both engines count versions alike).
 */
export type Statement = string | { readonly postgres: string } | { readonly sqlite: string }

export interface Migration {
  version: number
  name: string
  statements: Statement[]
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'config versions, tenants, quotas, audit, proxies, usage, alerts',
    statements: [
      // Every version of the config document, as authored; the signed envelope is what proxies get.
      `CREATE TABLE config_versions (
        version BIGINT PRIMARY KEY,
        document TEXT NOT NULL,
        digest TEXT NOT NULL,
        envelope TEXT NOT NULL,
        author TEXT NOT NULL,
        summary TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      // Tenant identities: the config key (what the tenant filter resolves) ↔ a stable UUID.
      `CREATE TABLE tenants (
        id UUID PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
      )`,
      // The seed's table, verbatim in shape: daily limits per tenant and kind.
      `CREATE TABLE api_quotas (
        tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('graphql','ingest','embeddings','subscriptions')),
        limit_per_day BIGINT NOT NULL CHECK (limit_per_day >= 0),
        PRIMARY KEY (tenant_id, kind)
      )`,
      `CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        before_json TEXT,
        after_json TEXT,
        diff TEXT NOT NULL,
        config_version BIGINT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
      )`,
      `CREATE TABLE proxies (
        id TEXT PRIMARY KEY,
        hostname TEXT,
        boot_id TEXT,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        connected INTEGER NOT NULL DEFAULT 0,
        applied_version BIGINT,
        acked_at BIGINT,
        nack_version BIGINT,
        nack_error TEXT,
        nack_at BIGINT,
        usage_seq BIGINT NOT NULL DEFAULT 0
      )`,
      // Per tenant, per local day (the tenant's time zone), per counter.
      `CREATE TABLE usage_daily (
        tenant TEXT NOT NULL,
        day TEXT NOT NULL,
        metric TEXT NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (tenant, day, metric)
      )`,
      `CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        at BIGINT NOT NULL,
        tenant TEXT,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        detail TEXT NOT NULL
      )`,
      'CREATE INDEX alerts_at ON alerts (at)',
    ],
  },
  {
    version: 2,
    name: 'signed plugin packages',
    statements: [
      // Accepted uploads only (refusals are in audit_log). name@version is immutable, as on npm:
      // a changed artifact is a new version. The artifact is kept as base64 TEXT, the common
      // subset of SQLite (BLOB) and PostgreSQL (BYTEA), exactly as uploaded and signed.
      `CREATE TABLE plugins (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        publisher TEXT NOT NULL,
        description TEXT,
        key_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        size BIGINT NOT NULL CHECK (size > 0),
        signature TEXT NOT NULL,
        artifact TEXT NOT NULL,
        uploaded_by TEXT NOT NULL,
        uploaded_at BIGINT NOT NULL,
        PRIMARY KEY (name, version)
      )`,
      'CREATE INDEX plugins_publisher ON plugins (publisher)',
    ],
  },
  {
    version: 3,
    name: 'proxies id index in byte order (PostgreSQL)',
    statements: [
      // PushHub.list pages with `ORDER BY id COLLATE "C"` on PostgreSQL (byte order whatever the
      // database's collation). Under a locale collation (ICU, en_US.UTF-8) the primary key's index
      // is in the locale's order and cannot serve it: every page sorted the whole table. SQLite's
      // primary key is already in byte (BINARY) order. IF NOT EXISTS: an operator may have created
      // it by hand.
      { postgres: 'CREATE INDEX IF NOT EXISTS proxies_id_c ON proxies (id COLLATE "C")' },
    ],
  },
  {
    version: 4,
    name: 'audit entries name their request id and detail',
    statements: [
      // The x-request-id of the admin request that made the change (joins an entry to the access
      // log and to the client's own logs), and what an action needs said beyond before/after (a
      // rollback: the version restored and the one it replaced; canonical JSON). Both NULL in
      // older entries, whose hash leaves them out: those entries verify as before.
      'ALTER TABLE audit_log ADD COLUMN request_id TEXT',
      'ALTER TABLE audit_log ADD COLUMN detail TEXT',
    ],
  },
]

/** The SQL of `s` for this engine, or undefined when it is the other engine's. */
function statementFor(s: Statement, kind: Db['kind']): string | undefined {
  if (typeof s === 'string') return s
  return kind === 'postgres' ? (s as { postgres?: string }).postgres : (s as { sqlite?: string }).sqlite
}

/** The database holds migrations this igw does not know: a newer igw migrated it. */
export class SchemaTooNew extends Error {
  readonly unknown: { version: number; name: string }[]
  constructor(unknown: { version: number; name: string }[]) {
    const latest = MIGRATIONS.reduce((n, m) => Math.max(n, m.version), 0)
    const list = unknown.map((u) => `${u.version} (${JSON.stringify(u.name)})`).join(', ')
    super(
      `the database was migrated by a newer igw: it has schema migration${unknown.length === 1 ? '' : 's'} ${list}, and this igw knows migrations up to ${latest}. ` +
        'Run the newer igw (or restore a backup taken before it migrated); this one does not start on a schema it does not know.',
    )
    this.name = 'SchemaTooNew'
    this.unknown = unknown
  }
}

/**
 * A step of the schema could not be applied (the transaction rolled back: nothing of it is kept).
 * The engine's error alone ("must be owner of table audit_log", "permission denied for schema
 * public") did not say that the start was migrating, nor which step.
 */
export class MigrationFailed extends Error {
  constructor(step: string, cause: unknown) {
    const e = cause as { message?: unknown; code?: unknown }
    // 42501 insufficient_privilege; "must be owner" is 42501 too.
    const hint = e.code === '42501' ? " (the role in --db may use the tables but not create or alter them: run this igw once as the tables' owner, or with a role that may create in the schema, then as this role)" : ''
    super(`${step} failed: ${String(e.message ?? cause)}${hint}`, { cause })
    this.name = 'MigrationFailed'
  }
}

/** Run one migration step; an error the database gave for the statements becomes MigrationFailed. */
async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (err) {
    // Transient (a 503 to retry) or out of space: not a fault of the migration.
    if (err instanceof DatabaseUnavailable || err instanceof StorageFull) throw err
    // Nor is a database that cannot be opened at all, which the first statement finds: a
    // connection or login failure, a database that does not exist (SQLSTATE classes 08, 28, 3D),
    // too many connections, an admin shutdown (53, 57). Those are "cannot open --db".
    const code = (err as { code?: unknown }).code
    if (typeof code === 'string' && /^(08|28|3D|53|57)/.test(code)) throw err
    throw new MigrationFailed(name, err)
  }
}

/** Apply pending migrations in order; each in its own transaction. Returns the versions applied. */
export async function migrate(db: Db): Promise<number[]> {
  // Under the write lock like every step after it: PostgreSQL does not serialize two concurrent
  // CREATE TABLE IF NOT EXISTS (two replicas starting on an empty database: one failed with a
  // unique violation on pg_type).
  const recorded = await step('creating the schema_migrations table', () => db.transaction(async (tx) => {
    // Created only when missing, as every later step runs only when pending: PostgreSQL checks the
    // right to create in the schema even for CREATE … IF NOT EXISTS of a table that exists, and a
    // role that may use the tables but not create any (least privilege: the migrations run by the
    // owner; by default on PostgreSQL 15, whose `public` schema grants CREATE to its owner only)
    // failed every start, on a database fully migrated, with "permission denied for schema public".
    const exists =
      db.kind === 'postgres'
        ? (await tx.query<{ t: unknown }>("SELECT to_regclass('schema_migrations') AS t"))[0]?.t != null
        : (await tx.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")).length > 0
    if (!exists) await tx.query('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)')
    return tx.query<{ version: unknown; name: unknown }>('SELECT version, name FROM schema_migrations ORDER BY version')
  }))
  // A database a newer igw migrated has tables or columns this one does not know: writing to it
  // (a version row without a new NOT NULL column, a column whose meaning changed) would fail at
  // every write or, worse, store rows the newer igw misreads. Refuse to start instead.
  const known = new Set(MIGRATIONS.map((m) => m.version))
  const unknown = recorded.filter((r) => !known.has(Number(r.version)))
  if (unknown.length > 0) throw new SchemaTooNew(unknown.map((r) => ({ version: Number(r.version), name: String(r.name) })))
  const applied: number[] = []
  for (const m of MIGRATIONS) {
    const done = await step(`schema migration ${m.version} (${JSON.stringify(m.name)})`, () => db.transaction(async (tx) => {
      const rows = await tx.query('SELECT version FROM schema_migrations WHERE version = $1', [m.version])
      if (rows.length > 0) return false
      for (const s of m.statements) {
        const sql = statementFor(s, db.kind)
        if (sql !== undefined) await tx.query(sql)
      }
      await tx.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()])
      return true
    }))
    if (done) applied.push(m.version)
  }
  return applied
}
