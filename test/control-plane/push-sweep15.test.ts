// GET /v1/proxies after NACKs and stream closes, on SQLite and on a real PostgreSQL:
// - `lastNack` is resolved by an ACK of the NACKed version or a later one (it used to stay
//   forever, so "proxies with a NACK" never went back to zero); the NACK stays in the control
//   plane's log;
// - a heartbeat touch that was on its way to the database when a stream closed no longer marks
//   the proxy connected again after its disconnect was written (it showed connected for ~45 s);
// - a proxy that leaves while its stream's row is being written is not left connected (no stream
//   was registered, so nothing ever marked it disconnected: connected for ~45 s).
import { createServer, type Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDb, type Db, type SqlValue } from '../../control-plane/db.ts'
import { migrate } from '../../control-plane/migrations.ts'
import { PushHub } from '../../control-plane/push.ts'
import { capturingLogger, startTestControlPlane, type ProxyRow, type TestControlPlane } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

const engines = dbEngines('igw_push15', () => pg)

describe.each(engines)('lastNack on $name', ({ name: engine, spec: dbFor }) => {
  let cp: TestControlPlane
  const log = capturingLogger()
  beforeAll(async () => {
    cp = await startTestControlPlane({ db: await dbFor(`igw_push15_nack_${engine}`), logger: log.logger })
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  const row = async (id: string): Promise<ProxyRow> => {
    const r = await cp.api('/v1/proxies')
    expect(r.status).toBe(200)
    return ((await r.json()) as { items: ProxyRow[] }).items.find((p) => p.id === id)!
  }
  const answer = async (id: string, version: number, status: 'ACK' | 'NACK', error?: string) => {
    const r = await cp.api(`/v1/proxies/${id}/ack`, { method: 'POST', token: await cp.token({ sub: id, roles: ['proxy'] }), body: JSON.stringify({ version, status, ...(error ? { error } : {}) }) })
    expect(r.status).toBe(204)
  }

  it('an ACK of the NACKed version or a later one clears lastNack; an ACK of an older one does not', async () => {
    // Versions 1 to 7 in the store.
    for (let i = 2; i <= 7; i++) expect((await cp.api(`/v1/tenants/nack-t${i}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
    expect(cp.store.head()!.version).toBe(7)
    const id = `nacker-${engine}`
    const ac = new AbortController()
    const res = await fetch(`${cp.url}/v1/stream?proxy=${id}&version=1`, { headers: { authorization: `Bearer ${await cp.token({ sub: id, roles: ['proxy'] })}` }, signal: ac.signal })
    expect(res.status).toBe(200)
    try {
      await answer(id, 1, 'ACK')
      await answer(id, 5, 'NACK', 'cannot read /nonexistent/key.pem')
      expect((await row(id)).lastNack).toMatchObject({ version: 5, error: 'cannot read /nonexistent/key.pem' })
      // A proxy that came back with its last-known-good (4) still has not taken 5.
      await answer(id, 4, 'ACK')
      expect(await row(id)).toMatchObject({ appliedVersion: 4, lastNack: { version: 5 } })
      // It now runs 6: the NACK of 5 is resolved.
      await answer(id, 6, 'ACK')
      expect(await row(id)).toMatchObject({ appliedVersion: 6, lastNack: null })
      // A new NACK shows again, and an ACK of exactly that version resolves it too.
      await answer(id, 7, 'NACK', 'boom')
      expect((await row(id)).lastNack).toMatchObject({ version: 7, error: 'boom' })
      await answer(id, 7, 'ACK')
      expect(await row(id)).toMatchObject({ appliedVersion: 7, lastNack: null })
    } finally {
      ac.abort()
    }
    // NACK of 7, then the proxy applied it but its ACK was lost: it reconnects running 7.
    await answer(id, 7, 'NACK', 'transient')
    expect((await row(id)).lastNack).toMatchObject({ version: 7 })
    const again = new AbortController()
    const back = await fetch(`${cp.url}/v1/stream?proxy=${id}&version=7`, { headers: { authorization: `Bearer ${await cp.token({ sub: id, roles: ['proxy'] })}` }, signal: again.signal })
    expect(back.status).toBe(200)
    try {
      await expect.poll(async () => (await row(id)).lastNack, { timeout: 10_000 }).toBeNull()
    } finally {
      again.abort()
    }
    // A proxy ahead of this store (it went back): it boots with its last-known-good 625, NACKs
    // the head and ACKs 625 — which this store never had: the NACK of the head stands.
    const ahead = `ahead-${engine}`
    const ac2 = new AbortController()
    const res2 = await fetch(`${cp.url}/v1/stream?proxy=${ahead}&version=625`, { headers: { authorization: `Bearer ${await cp.token({ sub: ahead, roles: ['proxy'] })}` }, signal: ac2.signal })
    expect(res2.status).toBe(200)
    try {
      await answer(ahead, 7, 'NACK', 'version 7 is older than version 625, which this proxy runs')
      await answer(ahead, 625, 'ACK')
      expect(await row(ahead)).toMatchObject({ appliedVersion: 625, lastNack: { version: 7 } })
    } finally {
      ac2.abort()
    }
    // The NACKs stay in the control plane's log.
    const nacks = log.lines.filter((l) => l.msg === 'config version NACKed by a proxy' && l.proxy === id)
    expect(nacks.map((l) => [l.version, l.error])).toEqual([
      [5, 'cannot read /nonexistent/key.pem'],
      [7, 'boom'],
      [7, 'transient'],
    ])
  })
})

/** A Db whose statements matching `which` wait for `release()` (the database is slow to answer them). */
function gated(inner: Db, which: RegExp) {
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const state = { held: 0, done: 0, release }
  const db: Db = {
    kind: inner.kind,
    async query<T>(sql: string, params?: readonly SqlValue[]): Promise<T[]> {
      if (!which.test(sql)) return inner.query<T>(sql, params)
      state.held++
      await gate
      try {
        return await inner.query<T>(sql, params)
      } finally {
        state.done++
      }
    },
    transaction: (fn) => inner.transaction(fn),
    close: () => inner.close(),
  }
  return { db, state }
}

describe.each(engines)('heartbeat touch racing a stream close on $name', ({ name: engine, spec: dbFor }) => {
  it('a touch that lands after the disconnect was written leaves the proxy disconnected', async () => {
    const inner = openDb(await dbFor(`igw_push15_touch_${engine}`))
    await migrate(inner)
    const { db, state } = gated(inner, /^UPDATE proxies SET last_seen = \$1, connected = 1 /)
    const hub = new PushHub(db, {}, { heartbeatMs: 50 })
    const server: Server = createServer((_req, res) => void hub.open(res, 'racer', 'host-1', undefined, 0, () => undefined))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const ac = new AbortController()
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/`, { signal: ac.signal })
      expect(res.status).toBe(200)
      // A heartbeat has taken the stream's id and is waiting for the database.
      await expect.poll(() => state.held, { timeout: 30_000, interval: 20 }).toBeGreaterThan(0)
      // The proxy leaves: its row is marked disconnected.
      ac.abort()
      const connected = async () => Number((await inner.query<{ connected: unknown }>('SELECT connected FROM proxies WHERE id = $1', ['racer']))[0]!.connected)
      await expect.poll(connected, { timeout: 10_000 }).toBe(0)
      // Now the touch reaches the database.
      state.release()
      await expect.poll(() => state.done, { timeout: 10_000 }).toBe(state.held)
      expect(await connected()).toBe(0)
      // As any instance on this database lists it (this one no longer holds the stream).
      expect((await hub.list()).find((p) => p.id === 'racer')?.connected).toBe(false)
    } finally {
      ac.abort()
      state.release()
      await hub.close()
      await new Promise<void>((r) => server.close(() => r()))
      await inner.close()
    }
  }, 60_000)
})

describe.each(engines)('a proxy leaving while its stream row is written on $name', ({ name: engine, spec: dbFor }) => {
  it('is marked disconnected, not left connected with no stream to close it', async () => {
    const inner = openDb(await dbFor(`igw_push15_open_${engine}`))
    await migrate(inner)
    const { db, state } = gated(inner, /^INSERT INTO proxies /)
    const hub = new PushHub(db)
    let socketClosed = false
    let opened: Promise<void> | undefined
    const server: Server = createServer((req, res) => {
      req.socket.once('close', () => (socketClosed = true))
      opened = hub.open(res, 'leaver', 'host-1', undefined, 0, () => undefined)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const ac = new AbortController()
    try {
      const pending = fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/`, { signal: ac.signal }).catch(() => undefined)
      // The row is on its way to the database when the proxy goes.
      await expect.poll(() => state.held, { timeout: 10_000, interval: 20 }).toBe(1)
      ac.abort()
      await pending
      await expect.poll(() => socketClosed, { timeout: 10_000 }).toBe(true)
      state.release()
      await opened
      expect(hub.connected).toBe(0)
      const row = (await inner.query<{ connected: unknown }>('SELECT connected FROM proxies WHERE id = $1', ['leaver']))[0]!
      expect(Number(row.connected)).toBe(0)
      expect((await hub.list()).find((p) => p.id === 'leaver')?.connected).toBe(false)
    } finally {
      ac.abort()
      state.release()
      await hub.close()
      await new Promise<void>((r) => server.close(() => r()))
      await inner.close()
    }
  }, 60_000)
})
