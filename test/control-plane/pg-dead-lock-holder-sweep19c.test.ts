// Several control planes share one PostgreSQL and serialize their writes on one advisory lock,
// held until the holder's transaction ends. An instance cut off mid-transaction (its host crashed
// or a network partition: no FIN reaches the server) left its session idle in the transaction,
// holding the lock until the server's TCP keepalive gave up (two hours by default): every write
// of every other instance failed with 503 meanwhile, and each attempt left a backend queued on
// the lock. Now the server ends a session idle in a transaction, and lock waits end server-side.
//
// The partition is a real TCP relay between instance A and a real PostgreSQL that, once cut,
// relays nothing either way and does not pass a close on (as a dead host or a partition).
import { connect, createServer, type Socket } from 'node:net'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { verifyAudit } from '../../control-plane/audit.ts'
import { DatabaseUnavailable, openDb } from '../../control-plane/db.ts'
import { generateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore } from '../../control-plane/store.ts'
import { seedDocument } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

interface Partition {
  port: number
  cut: boolean
  close(): Promise<void>
}

async function startPartitionableRelay(target: number): Promise<Partition> {
  const sockets = new Set<Socket>()
  const server = createServer((c) => {
    const u = connect(target, '127.0.0.1')
    sockets.add(c).add(u)
    c.on('data', (d: Buffer) => void (state.cut || u.write(d)))
    u.on('data', (d: Buffer) => void (state.cut || c.write(d)))
    c.on('error', () => undefined)
    u.on('error', () => undefined)
    // Cut off, a close is not passed on either: the server keeps its session.
    c.on('close', () => {
      sockets.delete(c)
      if (!state.cut) u.destroy()
    })
    u.on('close', () => {
      sockets.delete(u)
      if (!state.cut) c.destroy()
    })
  })
  const state: Partition = {
    port: 0,
    cut: false,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as { port: number }).port
  return state
}

let pg: TestPostgres
let relay: Partition
beforeAll(async () => {
  pg = await startPostgres()
  relay = await startPartitionableRelay(pg.port)
}, 60_000)
afterAll(async () => {
  await relay?.close()
  await pg?.close()
})

it('an instance cut off while holding the write lock does not block the other instances’ writes for long', async () => {
  const url = await pg.createDatabase('igw_dead_holder')
  // Every connection gets both server-side bounds by default, the lock wait ending before the
  // client's 15 s query timeout...
  const plain = openDb(url)
  try {
    const settings = await plain.query<{ name: string; ms: number }>("SELECT name, setting::int AS ms FROM pg_settings WHERE name IN ('idle_in_transaction_session_timeout', 'lock_timeout') ORDER BY name")
    expect(settings).toEqual([
      { name: 'idle_in_transaction_session_timeout', ms: expect.any(Number) },
      { name: 'lock_timeout', ms: expect.any(Number) },
    ])
    expect(settings[0]!.ms).toBeGreaterThan(0)
    expect(settings[0]!.ms).toBeLessThanOrEqual(60_000)
    expect(settings[1]!.ms).toBeGreaterThan(0)
    expect(settings[1]!.ms).toBeLessThan(15_000)
  } finally {
    await plain.close()
  }
  // ...which the scenario shortens through the URL overrides (the defaults would make it wait
  // 15 s), in the same order: B's lock wait ends server-side before its query timeout, and A's
  // session ends on the server, not by A's client giving up (the cut relay passes no close on).
  const key = generateSigningKey()
  const b = new ConfigStore(openDb(`${url}?lock_timeout=2000`), key)
  await b.init(seedDocument())
  const aDb = openDb(`postgres://postgres@127.0.0.1:${relay.port}/igw_dead_holder?idle_in_transaction_session_timeout=3000&query_timeout=5000`)
  const a = new ConfigStore(aDb, key)
  await a.init()
  try {
    // A is inside a write transaction (it holds the lock) when the network between it and the server goes.
    let holding!: () => void
    const held = new Promise<void>((resolve) => (holding = resolve))
    let resume!: () => void
    const gate = new Promise<void>((resolve) => (resume = resolve))
    const aTx = aDb
      .transaction(async (tx) => {
        holding()
        await gate
        await tx.query('SELECT 1')
      })
      .then(
        () => 'committed',
        (err: unknown) => err,
      )
    await held
    relay.cut = true
    resume()

    // B's writes: 503 at first, then they go through once the server has ended A's session.
    const t0 = Date.now()
    let committed: number | undefined
    const failures: unknown[] = []
    while (committed === undefined && Date.now() - t0 < 75_000) {
      try {
        committed = (await b.commit({ actor: 'bob', action: 'tenants.put', resource: 'tenants/initech', change: (h) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), initech: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }) })).version
      } catch (err) {
        failures.push(err)
        await new Promise((resolve) => setTimeout(resolve, 500))
      }
    }
    expect(committed, `B could not write for ${Date.now() - t0} ms while the cut-off A held the lock`).toBe(2)
    for (const f of failures) expect(f).toBeInstanceOf(DatabaseUnavailable)

    // No session is left idle in a transaction or queued on the lock.
    const stuck = await b.db.query<{ n: unknown }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'igw_dead_holder' AND (state = 'idle in transaction' OR wait_event_type = 'Lock')")
    expect(Number(stuck[0]!.n)).toBe(0)

    // A's transaction failed as the database being unavailable: nothing of it was kept.
    expect(await aTx).toBeInstanceOf(DatabaseUnavailable)

    // The network is back: A writes again, after B's version, and the chain is one line.
    relay.cut = false
    let aVersion: number | undefined
    await expect
      .poll(
        async () => {
          aVersion ??= await a
            .commit({ actor: 'alice', action: 'tenants.put', resource: 'tenants/hooli', change: (h) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), hooli: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }) })
            .then((r) => r.version, () => undefined)
          return aVersion
        },
        { timeout: 45_000, interval: 500 },
      )
      .toBe(3)
    const v = await verifyAudit(b.db, key.publicKey)
    expect(v.problems).toEqual([])
    expect(v.entries).toBe(3)
  } finally {
    relay.cut = false
    await aDb.close()
    await b.db.close()
  }
}, 180_000)
