// A PostgreSQL that stops answering on connections the pool already holds (a network partition,
// a frozen host: the TCP connection stays open, no reply comes) used to hang statements forever:
// connectionTimeoutMillis only bounds opening a connection. The request hung, kept its pool slot,
// and so did every transaction behind it. Now a statement without an answer fails as
// DatabaseUnavailable (the API's 503) within the query timeout, its connection is dropped, and
// the pool serves again once the server answers.
//
// The partition is a real TCP relay between the pool and a real PostgreSQL that stops relaying.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { DatabaseUnavailable, openDb } from '../../control-plane/db.ts'
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

/** Settles to what p did, or 'still waiting' after ms. */
function within<T>(p: Promise<T>, ms: number): Promise<{ ok: T } | { err: unknown } | 'still waiting'> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.then(
      (ok) => ({ ok }),
      (err: unknown) => ({ err }),
    ),
    new Promise<'still waiting'>((resolve) => {
      timer = setTimeout(() => resolve('still waiting'), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

it('a statement on a pooled connection whose server stopped answering fails as DatabaseUnavailable, and the pool recovers', async () => {
  const db = openDb(`postgres://postgres@127.0.0.1:${relay.port}/postgres`)
  try {
    // Two pooled connections, idle and open.
    await Promise.all([db.query('SELECT pg_sleep(0.2)'), db.query('SELECT pg_sleep(0.2)')])
    relay.frozen = true
    const q = within(db.query('SELECT 1 AS x'), 45_000)
    const tx = within(db.transaction((t) => t.query('SELECT 2 AS x')), 45_000)
    const [qr, txr] = await Promise.all([q, tx])
    expect(qr, 'a pooled query hung on a frozen connection').not.toBe('still waiting')
    expect(txr, 'a transaction hung on a frozen connection').not.toBe('still waiting')
    expect((qr as { err: unknown }).err).toBeInstanceOf(DatabaseUnavailable)
    expect((txr as { err: unknown }).err).toBeInstanceOf(DatabaseUnavailable)

    // The server answers again: the frozen connections were dropped, new ones work.
    relay.frozen = false
    relay.cutAll()
    await expect.poll(async () => (await db.query<{ x: number }>('SELECT 3 AS x').catch(() => []))[0]?.x, { timeout: 20_000, interval: 200 }).toBe(3)
    expect(await db.transaction((t) => t.query<{ x: number }>('SELECT 4 AS x'))).toEqual([{ x: 4 }])
  } finally {
    relay.frozen = false
    relay.cutAll()
    await db.close()
  }
}, 120_000)
