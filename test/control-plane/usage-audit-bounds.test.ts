// Two bounds of the control plane's store, on real SQLite files and a real PostgreSQL:
// usage counters saturate at USAGE_COUNTER_MAX instead of overflowing (a proxy token sending huge
// counts must not make every later report for a tenant fail), and `verifyAudit` reads the audit
// log in pages instead of loading it whole, with the same verdicts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { appendAudit, AUDIT_VERIFY_PAGE_ROWS, verifyAudit, type VerifyResult } from '../../control-plane/audit.ts'
import { openDb, type Db, type Row, type SqlValue } from '../../control-plane/db.ts'
import { generateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore } from '../../control-plane/store.ts'
import { localDay, USAGE_COUNTER_MAX } from '../../control-plane/usage.ts'
import { capturingLogger, metricSample, seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 30_000)
afterAll(async () => {
  await pg?.close()
})

const engines = dbEngines('igw_bounds', () => pg)

const MAX = 9007199254740991

interface DayRow {
  day: string
  requests: number
  errors: number
  costUnits: number
  bytesExported: number
  byKind: Record<string, number>
}

describe.each(engines)('usage counters on $name', (engine) => {
  let cp: TestControlPlane
  let lines: Record<string, unknown>[]
  let proxy: string
  let seq = 0
  const report = (tenants: Record<string, unknown>) =>
    cp.api('/v1/usage', { method: 'POST', token: proxy, body: JSON.stringify({ proxyId: 'edge-1', bootId: 'boot-1', seq: ++seq, at: new Date().toISOString(), tenants }) })
  const today = async (tenant: string): Promise<DayRow | undefined> => {
    const day = localDay(new Date(), tenant === 'globex' ? 'America/New_York' : 'UTC')
    const r = await cp.api(`/v1/tenants/${tenant}/statement?from=${day}&to=${day}`)
    expect(r.status).toBe(200)
    return ((await r.json()) as { days: DayRow[] }).days[0]
  }
  const saturations = async () => metricSample(await (await fetch(`${cp.metricsUrl}/metrics`)).text(), 'igw_control_plane_usage_counter_saturations_total')
  const warnings = () => lines.filter((l) => l.msg === 'usage counters at their maximum: counts beyond it are not recorded')

  beforeAll(async () => {
    const captured = capturingLogger()
    lines = captured.lines
    const seed = seedDocument()
    seed.tenants = { ...(seed.tenants as object), initech: { tier: 'bronze' }, hooli: { tier: 'bronze' } }
    cp = await startTestControlPlane({ db: await engine.spec(), logger: captured.logger, seed })
    proxy = await cp.token({ sub: 'edge', roles: ['proxy'] })
  }, 30_000)
  afterAll(async () => {
    await cp?.close()
  })

  it('the limit is Number.MAX_SAFE_INTEGER: stored and read back exactly by both engines and JavaScript', () => {
    expect(USAGE_COUNTER_MAX).toBe(MAX)
    expect(Number.isSafeInteger(USAGE_COUNTER_MAX)).toBe(true)
  })

  it('reports with the largest valid counts saturate the counters at the limit: every report answers 200, the statement reads the limit exactly, a warning and a metric show it', async () => {
    const before = await saturations()
    const huge = { requests: MAX, errors: MAX, costUnits: MAX, bytesExported: MAX, byKind: { graphql: MAX } }
    for (let i = 0; i < 5; i++) {
      const r = await report({ acme: huge, globex: { requests: 3, byKind: { graphql: 3 } } })
      expect(r.status).toBe(200)
      expect(await r.json()).toMatchObject({ accepted: true })
    }
    // Before: SQLite stored 5 × MAX, which node:sqlite refuses to read (the statement was a 500);
    // PostgreSQL stored 45035996273704955, read back as an inexact JavaScript number.
    const acme = await today('acme')
    expect(acme).toMatchObject({ requests: MAX, errors: MAX, costUnits: MAX, bytesExported: MAX, byKind: { graphql: MAX } })
    // Other tenants count as usual.
    expect(await today('globex')).toMatchObject({ requests: 15, byKind: { graphql: 15 } })
    // Five counters of acme stood at the limit after each of the five reports.
    expect(before).toBe(0)
    expect(await saturations()).toBe(25)
    const warned = warnings()
    expect(warned).toHaveLength(5)
    expect(warned[4]).toMatchObject({ level: 40, proxyId: 'edge-1', limit: MAX, saturatedCounters: 5 })
    expect(warned[4]!.counters).toEqual(expect.arrayContaining([expect.objectContaining({ tenant: 'acme', metric: 'requests' }), expect.objectContaining({ tenant: 'acme', metric: 'kind.graphql' })]))
    // A small later report for the saturated tenant is accepted too, and the counter stays put.
    const later = await report({ acme: { requests: 1 } })
    expect(later.status).toBe(200)
    expect(await later.json()).toMatchObject({ accepted: true })
    expect((await today('acme'))!.requests).toBe(MAX)
    expect(await saturations()).toBe(26)
  })

  // PostgreSQL only: this is where the sum past 2^63 - 1 was an error (SQLite turned it into a
  // REAL; its failure, unreadable values above 2^53 - 1, is the test above). Each SQLite report
  // is an fsync'd commit, and a thousand of them are seconds on a busy machine.
  it.runIf(engine.name === 'postgres')('the review’s attack, 1030 reports of the largest counts (past 2^63 - 1 when summed): all answer 200 and the counter reads the limit', async () => {
    // Ten proxy ids (one token may name any) sending 103 reports each, in parallel.
    const statuses = new Set<number>()
    await Promise.all(
      Array.from({ length: 10 }, async (_, p) => {
        for (let i = 1; i <= 103; i++) {
          const body = JSON.stringify({ proxyId: `attacker-${p}`, bootId: 'b', seq: i, at: new Date().toISOString(), tenants: { initech: { requests: MAX } } })
          statuses.add((await cp.api('/v1/usage', { method: 'POST', token: proxy, body })).status)
        }
      }),
    )
    // Before: PostgreSQL answered 500 (bigint out of range) from the 1025th report on; SQLite had
    // turned the sum into an inexact REAL.
    expect([...statuses]).toEqual([200])
    expect((await today('initech'))!.requests).toBe(MAX)
  }, 30_000)

  it('a counter left above the limit (by older code, up to the BIGINT maximum) comes back to the limit on the next report, which answers 200', async () => {
    expect((await report({ hooli: { requests: 1 } })).status).toBe(200)
    await cp.db.query("UPDATE usage_daily SET value = 9223372036854775807 WHERE tenant = 'hooli' AND metric = 'requests'")
    // Before: `value + 1` past the BIGINT maximum — a 500 on PostgreSQL, a REAL on SQLite.
    const r = await report({ hooli: { requests: 1 } })
    expect(r.status).toBe(200)
    expect((await today('hooli'))!.requests).toBe(MAX)
  })
})

/** A Db that records every statement and how many rows it returned. */
function countingDb(db: Db): { db: Db; calls: { sql: string; params: readonly SqlValue[]; rows: number }[] } {
  const calls: { sql: string; params: readonly SqlValue[]; rows: number }[] = []
  const wrapped: Db = {
    kind: db.kind,
    async query<T = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
      const rows = await db.query<T>(sql, params)
      calls.push({ sql, params, rows: rows.length })
      return rows
    },
    transaction: (fn) => db.transaction(fn),
    close: () => db.close(),
  }
  return { db: wrapped, calls }
}

describe.each(engines)('verifyAudit on $name reads the log in pages', (engine) => {
  // Two full pages of the default 1000 rows and a short third: every boundary the walk has, with
  // 30 % less to write and verify than 3000 (each walk below reads the whole log).
  const ENTRIES = 2100
  let db: Db
  const key = generateSigningKey()
  let head: string

  beforeAll(async () => {
    db = openDb(await engine.spec())
    const store = new ConfigStore(db, key)
    await store.init(seedDocument()) // entry 1: the seed version
    // The real append path (what every commit and store.audit() runs), in one transaction to keep this quick.
    head = await db.transaction(async (tx) => {
      let last = ''
      for (let i = 2; i <= ENTRIES; i++) last = (await appendAudit(tx, key, { actor: 'bob', action: 'tenants.put', resource: `tenants/t${i}`, before: null, after: { tier: 'gold', i } })).hash
      return last
    })
  }, 30_000)
  afterAll(async () => {
    await db?.close()
  })

  it('an intact log of 2100 entries verifies in pages of 1000 rows (no statement returns more), with the head hash', async () => {
    const c = countingDb(db)
    const r = await verifyAudit(c.db, key.publicKey)
    expect(r).toEqual({ ok: true, entries: ENTRIES, headHash: head, problems: [] })
    // 1000 + 1000 + 100: the short page ends the walk. Before: one statement of 2100 rows.
    expect(c.calls.map((q) => q.rows)).toEqual([1000, 1000, 100])
    expect(c.calls.every((q) => /\blimit \$\d\b/i.test(q.sql))).toBe(true)
    expect(AUDIT_VERIFY_PAGE_ROWS).toBe(1000)
    // Keyset pagination: each page starts after the last seq of the one before.
    expect(c.calls.slice(1).map((q) => Number(q.params[0]))).toEqual([1000, 2000])
  })

  it('a page size that does not divide the log: the same result, in ceil(n / size) statements', async () => {
    const c = countingDb(db)
    const r = await verifyAudit(c.db, key.publicKey, { pageRows: 800 })
    expect(r).toEqual({ ok: true, entries: ENTRIES, headHash: head, problems: [] })
    expect(c.calls.map((q) => q.rows)).toEqual([800, 800, 500])
  })

  it('an entry edited in the middle of a later page, and one deleted at a page boundary, are named exactly as a whole-log walk names them', async () => {
    const row = async (seq: number) => (await db.query<Record<string, SqlValue>>('SELECT * FROM audit_log WHERE seq = $1', [seq]))[0]!
    const edited = await row(2050)
    const removed = await row(2001)
    await db.query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2050")
    await db.query('DELETE FROM audit_log WHERE seq = 2001')
    try {
      const expected: VerifyResult = {
        ok: false,
        entries: ENTRIES - 1,
        headHash: head,
        problems: [
          // 2001 was the first row of page 3: the link and sequence checks carry across pages.
          { seq: 2002, problem: 'sequence gap: expected seq 2001 (entries missing or renumbered)' },
          { seq: 2002, problem: 'prev_hash does not link to the entry before it (an entry was removed, inserted or re-hashed)' },
          { seq: 2050, problem: 'content does not match its hash (the row was edited: actor="mallory" action=tenants.put resource=tenants/t2050)' },
        ],
      }
      const c = countingDb(db)
      expect(await verifyAudit(c.db, key.publicKey)).toEqual(expected)
      // (Up to here the old whole-log read gave the same answer: these are its words.)
      expect(c.calls.map((q) => q.rows)).toEqual([1000, 1000, 99])
      // Other page sizes give the same verdict (2001: the deleted row would have been the first of page 2).
      for (const pageRows of [999, 2001]) expect(await verifyAudit(db, key.publicKey, { pageRows })).toEqual(expected)
    } finally {
      await db.query('UPDATE audit_log SET actor = $1 WHERE seq = 2050', [edited.actor!])
      const cols = Object.keys(removed)
      await db.query(`INSERT INTO audit_log (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`, cols.map((k) => removed[k]!))
    }
    expect((await verifyAudit(db, key.publicKey)).ok).toBe(true)
  }, 20_000)
})
