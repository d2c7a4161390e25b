// A new proxy's first config stream and its first usage report arrive together. The report's
// transaction looked the proxy up, found no row, and inserted one; the stream inserts the same
// row outside that transaction. When the stream's insert landed in between, the report failed
// on the primary key with a 500 (and the proxy retried it). Now the report upserts the row.
//
// The window is made wide on purpose, on a real PostgreSQL: a trigger (in this test's database
// only) holds the report's insert on an advisory lock the test holds, while the stream connects.
import { afterAll, beforeAll, expect, it } from 'vitest'
import pg from 'pg'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let server: TestPostgres
let cp: TestControlPlane
let gate: pg.Client
beforeAll(async () => {
  server = await startPostgres()
  const url = await server.createDatabase('race')
  cp = await startTestControlPlane({ db: url })
  gate = new pg.Client({ connectionString: url })
  await gate.connect()
  // Only the usage report's insert (it carries a usage high-water) waits for the gate.
  await gate.query(`CREATE FUNCTION hold_usage_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.usage_seq > 0 THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF; RETURN NEW; END $$`)
  await gate.query('CREATE TRIGGER hold_usage_insert BEFORE INSERT ON proxies FOR EACH ROW EXECUTE FUNCTION hold_usage_insert()')
}, 60_000)
afterAll(async () => {
  await gate?.end()
  await cp?.close()
  await server?.close()
})

const report = (proxyId: string, seq: number) => JSON.stringify({ proxyId, bootId: 'b1', seq, at: new Date().toISOString(), tenants: { acme: { requests: 1 } } })

it('a usage report whose proxy row is created by the first stream meanwhile is counted, not a 500', async () => {
  const proxy = await cp.token({ sub: 'racer', roles: ['proxy'] })
  for (const id of ['new-1', 'new-2']) {
    await gate.query('SELECT pg_advisory_lock(4242)')
    let posted: Promise<Response>
    try {
      posted = cp.api('/v1/usage', { method: 'POST', token: proxy, body: report(id, 1) })
      // The report looked for the row, found none, and now waits inside its insert.
      await expect
        .poll(async () => (await gate.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted")).rows[0].n, { timeout: 5_000, interval: 20 })
        .toBe(1)
      const stream = new AbortController()
      const opened = await cp.api(`/v1/stream?proxy=${id}&boot=b1`, { token: proxy, signal: stream.signal })
      expect(opened.status).toBe(200)
      stream.abort()
    } finally {
      await gate.query('SELECT pg_advisory_unlock(4242)')
    }
    const res = await posted
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ accepted: true, alerts: 0 })
    // Counted once: the same report again is a duplicate; the next one counts.
    expect(await (await cp.api('/v1/usage', { method: 'POST', token: proxy, body: report(id, 1) })).json()).toEqual({ accepted: false, alerts: 0 })
    expect(await (await cp.api('/v1/usage', { method: 'POST', token: proxy, body: report(id, 2) })).json()).toEqual({ accepted: true, alerts: 0 })
  }
  const rows = (await (await cp.api('/v1/proxies')).json()) as { items: { id: string }[] }
  expect(rows.items.map((r) => r.id).sort()).toEqual(['new-1', 'new-2'])
}, 30_000)
