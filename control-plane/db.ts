// One small SQL interface over two engines: SQLite (node:sqlite, built into Node 24, no native
// module to compile) and PostgreSQL (pg). Queries are written once, PostgreSQL-style with $1..$n
// placeholders; for SQLite they become ?1..?n (numbered parameters bind by position in both).
import { DatabaseSync } from 'node:sqlite'
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import pg from 'pg'
import { redactUrlCredentials } from '../config/redact.ts'

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
  listen?(channel: string, fn: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>>
  close(): Promise<void>
}

const PLACEHOLDER = /\$(\d+)/g

/**
 * The database cannot be reached or cannot take the statement now (PostgreSQL down, restarting,
 * out of connections, read-only during a failover; SQLite locked by another process past its busy timeout). The API answers
 * 503: the request was fine and may be retried. The driver's error is the `cause`, for the log.
 */
export class DatabaseUnavailable extends Error {
  constructor(cause: unknown) {
    super('the database is unavailable', { cause })
    this.name = 'DatabaseUnavailable'
  }
}

/**
 * The store is out of space (the disk or a quota is full: SQLITE_FULL, ENOSPC, EDQUOT, EFBIG;
 * PostgreSQL's SQLSTATE 53100 disk_full, "could not extend file"). The statement's transaction was
 * rolled back: nothing of the change is kept. The API answers 503 (the request was fine; it may
 * succeed once space is freed). The driver's error is the `cause`, for the log.
 */
export class StorageFull extends Error {
  constructor(cause: unknown) {
    super('the database is out of disk space', { cause })
    this.name = 'StorageFull'
  }
}

/** File-system errors that mean "no room to write". */
const FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG'])

/** SQLITE_FULL (13), PostgreSQL's disk_full (53100), or an ENOSPC/EDQUOT/EFBIG from below either. */
function isStorageFull(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false
  const e = err as { code?: unknown; errcode?: unknown }
  if (typeof e.errcode === 'number' && (e.errcode & 0xff) === 13) return true
  return typeof e.code === 'string' && (e.code === '53100' || FULL_CODES.has(e.code))
}

/** A text parameter holds NUL (U+0000), which PostgreSQL's text type cannot store. */
export class NulInText extends Error {
  constructor() {
    super('a text value contains a NUL character (U+0000), which the database cannot store')
    this.name = 'NulInText'
  }
}

/**
 * Refused on both engines, so a value SQLite would take is not one PostgreSQL turns into a 500:
 * the API checks ids, filters and keys where they enter (naming them); this is the net below.
 */
function checkParams(params: readonly SqlValue[]): void {
  for (const p of params) if (typeof p === 'string' && p.includes('\u0000')) throw new NulInText()
}

/**
 * Node's socket errors that mean "no connection to the server". ENETDOWN, EHOSTDOWN, ENETRESET and
 * EADDRNOTAVAIL (an interface going down or losing its address, a VPN or pod network being
 * re-plumbed, ephemeral ports used up) are as transient as a refusal: they were 500s.
 */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'ENETRESET', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED'])
/** pg's own messages for a connection it lost or never got. */
const PG_CONNECTION_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed and is not queryable|Query read timeout)/

/** True for errors that say the PostgreSQL server is out of reach, not that the statement is wrong. */
function isPostgresUnavailable(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false
  const e = err as { code?: unknown; syscall?: unknown; message?: unknown; errors?: unknown }
  if (typeof e.code === 'string') {
    if (NETWORK_CODES.has(e.code)) return true
    // A unix socket (`?host=/var/run/postgresql`, a cloud SQL proxy's socket) whose server is
    // stopped or restarting: PostgreSQL removes the socket file, so connecting is ENOENT, not
    // ECONNREFUSED (only from connect: a missing sslcert file is the URL's error).
    if (e.code === 'ENOENT' && e.syscall === 'connect') return true
    // SQLSTATE class 08 (connection exception), 57P01-57P03 (server shutting down, starting up),
    // 57P05 (idle session timeout), 25P03 (idle-in-transaction timeout: the server ended the
    // session), 53300 (too many connections), 55P03 (lock_timeout: another instance held the write
    // lock too long — see LOCK_TIMEOUT_MS). Also transient, so 503s to retry rather than 500s:
    // 25006 (a read-only transaction: the server is a standby, or a primary being demoted during a
    // failover; the connection is discarded, so the next one may reach the new primary), 40001 and
    // 40P01 (serialization failure, deadlock: PostgreSQL's own advice is to retry), 57014 (the
    // statement was cancelled: a statement_timeout in the URL, pg_cancel_backend), 53200 (out of
    // memory).
    if (/^08...$/.test(e.code) || /^57P0[1235]$/.test(e.code) || e.code === '25P03' || e.code === '53300' || e.code === '55P03') return true
    if (e.code === '25006' || e.code === '40001' || e.code === '40P01' || e.code === '57014' || e.code === '53200') return true
  }
  if (typeof e.message === 'string' && PG_CONNECTION_MESSAGES.test(e.message)) return true
  // `localhost` resolves to ::1 and 127.0.0.1: Node reports both refusals as one AggregateError.
  if (Array.isArray(e.errors)) return e.errors.length > 0 && e.errors.every(isPostgresUnavailable)
  return false
}

/** SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended codes included: another connection holds the lock. */
function isSqliteBusy(err: unknown): boolean {
  const code = (err as { errcode?: unknown } | null)?.errcode
  return typeof code === 'number' && ((code & 0xff) === 5 || (code & 0xff) === 6)
}

/** What to throw for a failed statement: DatabaseUnavailable when the engine says it is out of reach, else the error itself. */
function sqliteFailure(err: unknown): unknown {
  if (err instanceof DatabaseUnavailable || err instanceof StorageFull) return err
  return isSqliteBusy(err) ? new DatabaseUnavailable(err) : isStorageFull(err) ? new StorageFull(err) : err
}
function postgresFailure(err: unknown): unknown {
  if (err instanceof DatabaseUnavailable || err instanceof StorageFull) return err
  return isPostgresUnavailable(err) ? new DatabaseUnavailable(err) : isStorageFull(err) ? new StorageFull(err) : err
}

/** How long SQLite statements wait for a lock another process holds (then: DatabaseUnavailable, a 503). */
const BUSY_WAIT_MS = 5_000

class SqliteDb implements Db {
  readonly kind = 'sqlite'
  readonly #db: DatabaseSync
  #chain: Promise<unknown> = Promise.resolve()

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(resolve(path)), { recursive: true })
    this.#db = new DatabaseSync(path)
    // WAL lets readers (igw audit verify, a second control plane reading) run beside the writer.
    // Switching a new file to WAL takes an exclusive lock: a second process opening the same new
    // file at that moment (two instances, or a restart overlapping the old one) failed its start
    // with "database is locked". Opening waits for it like any statement, up to BUSY_WAIT_MS
    // (synchronously: nothing else runs yet; SQLite answers SQLITE_BUSY at once, without its busy
    // handler, when waiting could deadlock, so it is retried here too); afterwards busy_timeout 0:
    // a lock held by another process is waited for in #waitingForLocks, off the event loop.
    this.#db.exec(`PRAGMA busy_timeout = ${BUSY_WAIT_MS}`)
    const deadline = performance.now() + BUSY_WAIT_MS
    for (;;) {
      try {
        this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON')
        break
      } catch (err) {
        if (!isSqliteBusy(err) || performance.now() >= deadline) {
          this.#db.close()
          throw err
        }
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
      }
    }
    this.#db.exec('PRAGMA busy_timeout = 0')
  }

  /** One statement; the engine's error as it is (SQLITE_BUSY included: the caller decides). */
  #exec<T>(sql: string, params: readonly SqlValue[]): T[] {
    checkParams(params)
    const stmt = this.#db.prepare(sql.replace(PLACEHOLDER, '?$1'))
    if (/^\s*(select|with|pragma)\b/i.test(sql) || /\breturning\b/i.test(sql)) return stmt.all(...params) as T[]
    stmt.run(...params)
    return []
  }

  #run<T>(sql: string, params: readonly SqlValue[]): T[] {
    try {
      return this.#exec<T>(sql, params)
    } catch (err) {
      throw sqliteFailure(err)
    }
  }

  /**
   * Run `step` until it does not meet another process's lock, for at most BUSY_WAIT_MS, waiting
   * between tries on timers. SQLite's own busy_timeout would wait inside the synchronous call:
   * the whole event loop (health checks, config streams, in-memory reads) would stop with it.
   */
  async #waitingForLocks<T>(step: () => T): Promise<T> {
    const deadline = performance.now() + BUSY_WAIT_MS
    let pause = 2
    for (;;) {
      try {
        return step()
      } catch (err) {
        if (!isSqliteBusy(err) || performance.now() >= deadline) throw sqliteFailure(err)
        await new Promise((resolve) => setTimeout(resolve, Math.min(pause, Math.max(1, deadline - performance.now()))))
        pause = Math.min(pause * 2, 50)
      }
    }
  }

  async query<T = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    // Outside a transaction a statement waits for any transaction in progress (one connection).
    await this.#chain
    try {
      return this.#exec<T>(sql, params)
    } catch (err) {
      if (!isSqliteBusy(err)) throw sqliteFailure(err)
    }
    // Another process holds the lock: wait in line with this connection's transactions, so a
    // retry never runs inside one of ours (and is never rolled back with it).
    const p = this.#chain.then(() => this.#waitingForLocks(() => this.#exec<T>(sql, params)))
    this.#chain = p.catch(() => undefined)
    return p
  }

  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      // BEGIN IMMEDIATE takes the write lock up front: two writers never both read the head.
      await this.#waitingForLocks(() => this.#db.exec('BEGIN IMMEDIATE'))
      const tx: Tx = { query: async <R>(sql: string, params: readonly SqlValue[] = []) => this.#run<R>(sql, params) }
      try {
        const out = await fn(tx)
        this.#db.exec('COMMIT')
        return out
      } catch (err) {
        // SQLite may have rolled back by itself (SQLITE_FULL does); a failed ROLLBACK must not
        // hide why the transaction failed.
        if (this.#db.isTransaction) {
          try {
            this.#db.exec('ROLLBACK')
          } catch {
            // the original error is what the caller needs
          }
        }
        throw sqliteFailure(err)
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

/**
 * How long a statement may go without its answer (pg's client-side `query_timeout`) before it
 * fails as DatabaseUnavailable and its connection is dropped. connectionTimeoutMillis only bounds
 * opening a connection: on a pooled connection whose server stopped answering (a network
 * partition, a frozen host) a statement waited forever, and so did the request, its pool slot and
 * every transaction queued behind it. Generous: no statement of the control plane takes this long
 * on a healthy server. `?query_timeout=ms` in the URL overrides it.
 */
const QUERY_TIMEOUT_MS = 15_000

/**
 * Server-side bounds (sent at connect; `?idle_in_transaction_session_timeout=ms` and
 * `?lock_timeout=ms` in the URL override them). Writes of every instance serialize on one
 * advisory lock, which a session holds until its transaction ends. An instance that died or was
 * cut off mid-transaction (a host crash, a network partition: no FIN reaches the server) left its
 * session idle in the transaction, holding the lock until the server's TCP keepalive gave up —
 * two hours by default — and every write of every other instance failed with 503 meanwhile. Each
 * of those waits also left a backend queued on the lock after its client timed out, until
 * max_connections was used up. Now the server ends a session idle inside a transaction after
 * IDLE_IN_TRANSACTION_MS (no transaction of the control plane pauses between statements anywhere
 * near that long), and a wait for a lock ends on the server after LOCK_TIMEOUT_MS, before the
 * client's QUERY_TIMEOUT_MS, as a 503 that may be retried, with the connection kept.
 */
const IDLE_IN_TRANSACTION_MS = 15_000
const LOCK_TIMEOUT_MS = 10_000

/**
 * TCP keepalive on every connection, probing after this long idle (Node then probes every second,
 * ten times). The LISTEN connection only ever reads: when its server or the path to it vanished
 * without a FIN or RST (a host crash, a NAT or firewall dropping the idle flow, a failover moving
 * the address), nothing ever failed on it, it was never opened again, and other instances'
 * commits went unheard until the head poll. Pooled connections idle as long are found dead before
 * a request waits QUERY_TIMEOUT_MS on one.
 */
const KEEPALIVE_IDLE_MS = 10_000

/** How soon a lost LISTEN connection is opened again: doubling from the first to the second. */
const LISTEN_RETRY_MIN_MS = 250
const LISTEN_RETRY_MAX_MS = 5_000

class PostgresDb implements Db {
  readonly kind = 'postgres'
  readonly #pool: pg.Pool
  readonly #url: string

  constructor(url: string) {
    this.#url = url
    // A server that accepts TCP but never answers (a network partition) fails a request after
    // 5 s with a 503 instead of holding it forever; so does waiting that long for a pooled client.
    // A pooled connection that stops answering fails its statement after QUERY_TIMEOUT_MS.
    this.#pool = new pg.Pool({
      connectionString: url,
      max: 10,
      connectionTimeoutMillis: 5_000,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
      lock_timeout: LOCK_TIMEOUT_MS,
    })
    // An idle client that loses its server must not crash the process; the next query reconnects.
    this.#pool.on('error', () => undefined)
  }

  async query<T = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    checkParams(params)
    try {
      const r = await this.#pool.query(sql, params as SqlValue[])
      return r.rows as T[]
    } catch (err) {
      throw postgresFailure(err)
    }
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    let client: pg.PoolClient
    try {
      client = await this.#pool.connect()
    } catch (err) {
      throw postgresFailure(err)
    }
    // A checked-out client has no 'error' listener (the pool's is for idle clients): a connection
    // lost while this transaction holds it (PostgreSQL restarted or the backend terminated between
    // two statements, a reset socket mid-statement) emitted an unhandled 'error' and crashed the
    // process. The statement in flight, or the next one, fails as DatabaseUnavailable instead.
    const onLost = (): void => undefined
    client.on('error', onLost)
    const release = (err?: Error): void => {
      client.release(err)
      client.removeListener('error', onLost)
    }
    let out: T
    try {
      await client.query('BEGIN')
      // Writes serialize on one advisory lock: a config version or an audit entry is appended to
      // a chain whose head every writer reads first, so two writers must not interleave.
      await client.query('SELECT pg_advisory_xact_lock(7070)')
      const tx: Tx = {
        query: async <R>(sql: string, params: readonly SqlValue[] = []) => {
          checkParams(params)
          return (await client.query(sql, params as SqlValue[])).rows as R[]
        },
      }
      out = await fn(tx)
      await client.query('COMMIT')
    } catch (err) {
      if (isPostgresUnavailable(err)) {
        // A client whose connection broke is discarded, not handed to the next request.
        release(err as Error)
        throw new DatabaseUnavailable(err)
      }
      // A ROLLBACK that fails (the connection went while fn was failing for its own reason: a 412,
      // a validation error) leaves a client with a statement that never got its answer: handed
      // back to the pool, the next request queued behind it and failed as unavailable after the
      // query timeout, though the server was back. It is discarded like a broken one.
      const rollback = await client.query('ROLLBACK').then(
        () => undefined,
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      )
      release(rollback)
      throw isStorageFull(err) ? new StorageFull(err) : err
    }
    release()
    return out
  }

  /**
   * LISTEN on a dedicated connection (LISTEN is per session; a pooled client would be handed
   * back), kept open for as long as the caller listens: when the connection is lost (PostgreSQL
   * restarted, a failover, a network cut) it is opened again, with a backoff from 250 ms to 5 s,
   * and `onReconnect` is called once it listens again — notifications sent meanwhile are lost, so
   * the caller re-reads what they would have told it. Without this a lost connection was never
   * replaced and every later NOTIFY went unheard until the process restarted.
   */
  async listen(channel: string, fn: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>> {
    let stopped = false
    /** False until the first LISTEN succeeded: a failure at the start is the caller's error, not retried here. */
    let started = false
    let current: pg.Client | undefined
    let retry: NodeJS.Timeout | undefined
    let delay = LISTEN_RETRY_MIN_MS
    const open = async (): Promise<void> => {
      const client = new pg.Client({ connectionString: this.#url, connectionTimeoutMillis: 5_000, keepAlive: true, keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS })
      let lost = false
      const onLost = (): void => {
        if (lost) return
        lost = true
        client.removeAllListeners('notification')
        void client.end().catch(() => undefined)
        if (current === client) current = undefined
        if (started && !stopped) schedule()
      }
      client.on('error', onLost)
      client.on('end', onLost)
      client.on('notification', (n) => {
        if (n.channel === channel) fn(n.payload ?? '')
      })
      current = client
      try {
        await client.connect()
        await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`)
      } catch (err) {
        onLost()
        throw err
      }
      if (stopped) await client.end().catch(() => undefined)
    }
    const schedule = (): void => {
      if (retry !== undefined || stopped) return
      const wait = delay
      delay = Math.min(delay * 2, LISTEN_RETRY_MAX_MS)
      retry = setTimeout(() => {
        retry = undefined
        // A failed attempt has scheduled the next one already (its connection was lost).
        open().then(
          () => {
            delay = LISTEN_RETRY_MIN_MS
            if (!stopped) onReconnect?.()
          },
          () => undefined,
        )
      }, wait)
      retry.unref()
    }
    await open()
    started = true
    return async () => {
      stopped = true
      clearTimeout(retry)
      retry = undefined
      await current?.end().catch(() => undefined)
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
  // Redacted: a mistyped scheme (`postgress://igw:secret@…`) must not print the password.
  throw new Error(`--db: expected sqlite:<path> or postgres://…, got "${redactUrlCredentials(spec)}"`)
}

/** BIGINT columns come back as strings from pg and numbers from SQLite. */
export function num(v: unknown): number {
  return typeof v === 'number' ? v : Number(v)
}
