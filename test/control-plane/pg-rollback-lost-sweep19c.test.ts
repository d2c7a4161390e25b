// A transaction that fails for its own reason (a 412, a document that does not validate) just as
// the connection to PostgreSQL stops answering: its ROLLBACK gets no answer either. That client
// went back to the pool with the ROLLBACK still pending, so once the server answered again the
// next request queued behind it and failed as unavailable after the query timeout (15 s). Now
// the client is discarded, and the next request works at once.
//
// The partition is a real TCP relay between the pool and a real PostgreSQL that stops relaying.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { openDb } from '../../control-plane/db.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { startTcpRelay, type TcpRelay } from '../helpers/tcp-relay.ts'

let pg: TestPostgres
let relay: TcpRelay
beforeAll(async () => {
  pg = await startPostgres()
  relay = await startTcpRelay(pg.port)
}, 60_000)
afterAll(async () => {
  await relay?.close()
  await pg?.close()
})

it('a failed transaction whose ROLLBACK got no answer does not hand its connection to the next request', async () => {
  // The pool holds one connection (nothing ran concurrently): the next request gets that client back.
  // A 3 s query timeout (the URL override) instead of the default 15 s: the lost ROLLBACK fails
  // sooner; a client handed back with it still pending fails the next request all the same.
  const db = openDb(`postgres://postgres@127.0.0.1:${relay.port}/postgres?query_timeout=3000`)
  try {
    await db.query('SELECT 1')
    const failed = db
      .transaction(async (tx) => {
        await tx.query('SELECT 1')
        relay.frozen = true
        throw new Error('412: the head moved')
      })
      .then(
        () => 'committed',
        (err: unknown) => err,
      )
    // The caller hears why it failed (not that the rollback did).
    expect(await failed).toMatchObject({ message: '412: the head moved' })

    // The server answers again: the next request is served, not stuck behind the lost ROLLBACK.
    relay.frozen = false
    const t0 = Date.now()
    const next = await db.query<{ x: number }>('SELECT 7 AS x').then(
      (rows) => rows,
      (err: unknown) => err,
    )
    expect(next, `after ${Date.now() - t0} ms`).toEqual([{ x: 7 }])
    expect(await db.transaction((tx) => tx.query<{ x: number }>('SELECT 8 AS x'))).toEqual([{ x: 8 }])
  } finally {
    relay.frozen = false
    await db.close()
  }
}, 120_000)
