// One small SQL interface over two engines: SQLite (node:sqlite, built into Node 24, no native
// module to compile) and PostgreSQL (pg). Queries are written once, PostgreSQL-style with $1..$n
// placeholders; for SQLite they become ?1..?n (numbered parameters bind by position in both).
import { DatabaseSync } from 'node:sqlite'
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import pg from 'pg'

export type SqlValue = string | number | bigint | null
export type Row = Record<string, unknown>

export interface Tx {
  query<T = Row>(sql: string, params?: readonly SqlValue[]): Promise<T[]>
}

export interface Db extends Tx {
  readonly kind: 'sqlite' | 'postgres'
  /** Run fn in one transaction (serializable on both engines for our writes); rolls back on throw. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>
  /**
   * PostgreSQL only: call fn for every NOTIFY on channel (from any control plane instance).
   * Returns a stop function. SQLite has no such thing (one instance owns the file).
   */
  listen?(channel: string, fn: (payload: string) => void): Promise<() => Promise<void>>
  close(): Promise<void>
}

const PLACEHOLDER = /\$(\d+)/g

class SqliteDb implements Db {
  readonly kind = 'sqlite'
  readonly #db: DatabaseSync
  #chain: Promise<unknown> = Promise.resolve()

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(resolve(path)), { recursive: true })
    this.#db = new DatabaseSync(path)
    // WAL lets readers (igw audit verify, a second control plane reading) run beside the writer.
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000')
  }

  #run<T>(sql: string, params: readonly SqlValue[]): T[] {
    const stmt = this.#db.prepare(sql.replace(PLACEHOLDER, '?$1'))
    if (/^\s*(select|with|pragma)\b/i.test(sql) || /\breturning\b/i.test(sql)) return stmt.all(...params) as T[]
    stmt.run(...params)
    return []
  }

  async query<T = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    // Outside a transaction a statement waits for any transaction in progress (one connection).
    await this.#chain
    return this.#run<T>(sql, params)
  }

  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      // BEGIN IMMEDIATE takes the write lock up front: two writers never both read the head.
      this.#db.exec('BEGIN IMMEDIATE')
      const tx: Tx = { query: async <R>(sql: string, params: readonly SqlValue[] = []) => this.#run<R>(sql, params) }
      try {
        const out = await fn(tx)
        this.#db.exec('COMMIT')
        return out
      } catch (err) {
        this.#db.exec('ROLLBACK')
        throw err
      }
    }
    const p = this.#chain.then(run, run)
    this.#chain = p.catch(() => undefined)
    return p
  }

  async close(): Promise<void> {
    await this.#chain
    this.#db.close()
  }
}

class PostgresDb implements Db {
  readonly kind = 'postgres'
  readonly #pool: pg.Pool
  readonly #url: string

  constructor(url: string) {
    this.#url = url
    this.#pool = new pg.Pool({ connectionString: url, max: 10 })
    // An idle client that loses its server must not crash the process; the next query reconnects.
    this.#pool.on('error', () => undefined)
  }

  async query<T = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    const r = await this.#pool.query(sql, params as SqlValue[])
    return r.rows as T[]
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect()
    try {
      await client.query('BEGIN')
      // Writes serialize on one advisory lock: a config version or an audit entry is appended to
      // a chain whose head every writer reads first, so two writers must not interleave.
      await client.query('SELECT pg_advisory_xact_lock(7070)')
      const tx: Tx = { query: async <R>(sql: string, params: readonly SqlValue[] = []) => (await client.query(sql, params as SqlValue[])).rows as R[] }
      const out = await fn(tx)
      await client.query('COMMIT')
      return out
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined)
      throw err
    } finally {
      client.release()
    }
  }

  async listen(channel: string, fn: (payload: string) => void): Promise<() => Promise<void>> {
    // A dedicated connection: LISTEN is per session, and a pooled client would be handed back.
    const client = new pg.Client({ connectionString: this.#url })
    client.on('error', () => undefined)
    await client.connect()
    client.on('notification', (n) => {
      if (n.channel === channel) fn(n.payload ?? '')
    })
    await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`)
    return async () => {
      await client.end().catch(() => undefined)
    }
  }

  async close(): Promise<void> {
    await this.#pool.end()
  }
}

/** `sqlite:./data/igw.db`, `sqlite::memory:`, or `postgres://…` / `postgresql://…`. */
export function openDb(spec: string): Db {
  if (spec.startsWith('postgres://') || spec.startsWith('postgresql://')) return new PostgresDb(spec)
  if (spec.startsWith('sqlite:')) return new SqliteDb(spec.slice('sqlite:'.length) || ':memory:')
  throw new Error(`--db: expected sqlite:<path> or postgres://…, got "${spec}"`)
}

/** BIGINT columns come back as strings from pg and numbers from SQLite. */
export function num(v: unknown): number {
  return typeof v === 'number' ? v : Number(v)
}
