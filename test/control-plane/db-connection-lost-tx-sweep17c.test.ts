// A PostgreSQL connection lost while a transaction holds it (the backend terminated by an
// operator or a restart's fast shutdown between two statements; the socket closed mid-statement)
// made pg emit 'error' on the checked-out client, which had no listener: an uncaught exception
// that crashed the control plane. Now the transaction fails as DatabaseUnavailable (the API's 503)
// and the pool serves the next request.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DatabaseUnavailable, openDb, type Db } from '../../control-plane/db.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { startTcpRelay, type TcpRelay } from '../helpers/tcp-relay.ts'

let pg: TestPostgres
let admin: Db
let relay: TcpRelay

beforeAll(async () => {
  pg = await startPostgres()
  admin = openDb(pg.url)
  relay = await startTcpRelay(pg.port)
}, 60_000)

afterAll(async () => {
  await admin?.close()
  await relay?.close()
  await pg?.close()
})

/** The error a promise rejected with (or 'resolved'). */
async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => 'resolved',
    (err: unknown) => err,
  )
}

async function healthy(db: Db): Promise<void> {
  await expect.poll(async () => (await db.query<{ x: number }>('SELECT 1 AS x').catch(() => []))[0]?.x, { timeout: 20_000, interval: 100 }).toBe(1)
  expect(await db.transaction((tx) => tx.query<{ x: number }>('SELECT 2 AS x'))).toEqual([{ x: 2 }])
}

describe('PostgreSQL connection lost inside a transaction', () => {
  it('backend terminated between two statements: DatabaseUnavailable, no crash, pool healthy', async () => {
    const db = openDb(pg.url)
    try {
      const err = await failure(
        db.transaction(async (tx) => {
          const [row] = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
          await admin.query('SELECT pg_terminate_backend($1)', [row!.pid])
          // The server's FATAL arrives while no statement is in flight.
          await new Promise((resolve) => setTimeout(resolve, 500))
          return tx.query('SELECT 1')
        }),
      )
      expect(err).toBeInstanceOf(DatabaseUnavailable)
      await healthy(db)
    } finally {
      await db.close()
    }
  }, 60_000)

  it('socket closed while a statement runs: DatabaseUnavailable, no crash, pool healthy', async () => {
    const db = openDb(`postgres://postgres@127.0.0.1:${relay.port}/postgres`)
    try {
      const err = await failure(
        db.transaction(async (tx) => {
          // Short: the server only notices the lost client when the statement ends, and its
          // transaction holds the write lock until then.
          const pending = tx.query('SELECT pg_sleep(2)')
          await new Promise((resolve) => setTimeout(resolve, 300))
          relay.cutAll()
          return pending
        }),
      )
      expect(err).toBeInstanceOf(DatabaseUnavailable)
      await healthy(db)
    } finally {
      await db.close()
    }
  }, 60_000)
})
