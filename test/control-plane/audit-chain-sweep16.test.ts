// The audit chain, end to end on both engines (a real control plane over real SQLite and a real
// PostgreSQL; `igw audit verify` as a real process):
// - an actor or resource holding a lone UTF-16 surrogate (a JSON escape such as "\ud800" makes
//   one) is stored by both engines as U+FFFD; its entry used to be hashed over the string as it
//   came, so `igw audit verify` reported an untouched log as TAMPERED;
// - whoever edits a row chooses the text `igw audit verify` prints about it: a newline in it used
//   to add a line of its choosing to the report, an escape sequence to rewrite the terminal;
// - the verify walk read 1000 rows per statement whatever their size: entries that hold whole
//   documents (each `PUT /v1/config` keeps the document before and after) made one page gigabytes,
//   and the control plane (GET /v1/audit/verify) or `igw audit verify` died out of memory;
// - after the signing key was replaced (docs: "if the key was replaced on purpose, pin the new
//   one"), every older entry was reported as "signature does not verify", as a forgery would be,
//   and no key list could verify the log: each entry is now checked with the key it names.
import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { appendAudit, AUDIT_VERIFY_PAGE_BYTES, verifyAudit } from '../../control-plane/audit.ts'
import { openDb, type Db, type Row, type SqlValue } from '../../control-plane/db.ts'
import { generateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore } from '../../control-plane/store.ts'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

const engines = [
  { name: 'sqlite', db: async (): Promise<string | undefined> => undefined },
  { name: 'postgres', db: async (): Promise<string | undefined> => pg.createDatabase(`igw_audit16_${Math.random().toString(36).slice(2, 8)}`) },
]

describe.each(engines)('audit chain on $name', (engine) => {
  let cp: TestControlPlane
  beforeAll(async () => {
    const db = await engine.db()
    cp = await startTestControlPlane(db === undefined ? {} : { db })
  }, 30_000)
  afterAll(async () => {
    await cp?.close()
  })

  const verifyCli = () => spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', cp.dbSpec, '--signing-key', cp.keyPath], { encoding: 'utf8' })

  it('a change by an actor whose name holds a lone surrogate verifies as intact', async () => {
    // Through the store: the admin API's policy refuses such a token today (OPA cannot parse the
    // escape), so nothing guards the chain but the store itself.
    await cp.store.commit({
      actor: 'ops-\ud800-bot',
      action: 'tenants.put',
      resource: 'tenants/surrogate-\udfff',
      change: (h) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), surrogate: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }),
    })
    const verify = await cp.api('/v1/audit/verify')
    expect(await verify.json()).toMatchObject({ ok: true, problems: [] })
    const cli = verifyCli()
    expect(cli.stderr).toBe('')
    expect(cli.stdout).toMatch(/^audit log OK: \d+ entries/)
    expect(cli.status).toBe(0)
    // What the log shows is what is stored: the replacement character.
    const { items } = (await (await cp.api('/v1/audit?limit=1000')).json()) as { items: { actor: string; resource: string }[] }
    expect(items.at(-1)).toMatchObject({ actor: 'ops-\ufffd-bot', resource: 'tenants/surrogate-\ufffd' })
  })

  it('`igw audit verify` prints an edited row’s text escaped: no forged report line, no terminal escape', async () => {
    expect((await cp.api('/v1/tenants/victim', { method: 'PUT', body: JSON.stringify({ tier: 'silver' }) })).status).toBe(201)
    const db = openDb(cp.dbSpec)
    try {
      const seq = (await db.query<{ seq: unknown }>('SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1'))[0]!.seq
      await db.query('UPDATE audit_log SET actor = $1, resource = $2, action = $3 WHERE seq = $4', [
        'mallory\x1b[2J\x1b[H',
        'tenants/victim)\naudit log OK: 3 entries, chain intact, signatures valid\u009b2J',
        'tenants.put\u202e',
        seq as number,
      ])
      const r = await verifyAudit(db, cp.store.key.publicKey)
      expect(r.ok).toBe(false)
      const text = r.problems.map((p) => p.problem).join('\n')
      expect(text).toContain('content does not match its hash (the row was edited: actor="mallory\\u001b[2J\\u001b[H"')
      const cli = verifyCli()
      expect(cli.status).toBe(1)
      expect(cli.stdout).toBe('')
      // One line per problem, under the verdict; nothing the editor wrote starts a line or controls the terminal.
      const lines = cli.stderr.trimEnd().split('\n')
      expect(lines[0]).toMatch(/^audit log TAMPERED: 1 problem\(s\) in \d+ entries$/)
      expect(lines).toHaveLength(2)
      expect(lines[1]).toMatch(/^ {2}seq \d+: content does not match its hash \(the row was edited: /)
      expect(cli.stderr).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]/)
    } finally {
      await db.close()
    }
  })
})

/** The real database, recording how much entry text each statement returned. */
function measuringDb(db: Db): { db: Db; pages: { rows: number; chars: number }[] } {
  const pages: { rows: number; chars: number }[] = []
  const wrapped: Db = {
    kind: db.kind,
    async query<T = Row>(sql: string, params?: readonly SqlValue[]): Promise<T[]> {
      const rows = await db.query<T>(sql, params)
      let chars = 0
      for (const r of rows as Record<string, unknown>[]) for (const k of ['before_json', 'after_json', 'diff']) chars += typeof r[k] === 'string' ? (r[k] as string).length : 0
      pages.push({ rows: rows.length, chars })
      return rows
    },
    transaction: (fn) => db.transaction(fn),
    close: () => db.close(),
  }
  return { db: wrapped, pages }
}

describe.each(engines)('verifying entries that hold whole documents on $name', (engine) => {
  it('reads them a few at a time (bounded bytes per statement), with the same verdict', async () => {
    const spec = await engine.db()
    const cp = await startTestControlPlane(spec === undefined ? {} : { db: spec })
    try {
      // 12 entries of ~6 MB each (a 1.5 MB document before and after, and the diff naming both):
      // 72 MB, three pages at the budget (it was 24 entries and five pages, for the same verdict at
      // twice the time; each walk below reads every byte).
      const big = (i: number, c: string) => ({ operations: c.repeat(1_500_000), i })
      for (let i = 0; i < 12; i++) await cp.store.audit({ actor: 'gitops', action: 'config.put', resource: 'config', before: big(i, 'a'), after: big(i, 'b') })
      const { db, pages } = measuringDb(cp.store.db)
      const r = await verifyAudit(db, cp.store.key.publicKey)
      expect(r).toMatchObject({ ok: true, entries: 13, problems: [] })
      expect(pages.reduce((n, p) => n + p.rows, 0)).toBe(13)
      // Before: one statement of all 13 rows, ~72 MB of text at once.
      // Now: the 32 MiB budget, plus at most the row that crosses it.
      expect(AUDIT_VERIFY_PAGE_BYTES).toBe(32 * 1024 * 1024)
      for (const p of pages) expect(p.chars).toBeLessThanOrEqual(40_000_000)
      expect(pages.length).toBeGreaterThanOrEqual(3)

      // An edit in the middle is still named, and only it.
      const raw = openDb(cp.dbSpec)
      try {
        await raw.query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 7")
        const bad = await verifyAudit(raw, cp.store.key.publicKey)
        expect(bad).toMatchObject({ ok: false, entries: 13 })
        expect(bad.problems).toEqual([{ seq: 7, problem: 'content does not match its hash (the row was edited: actor="mallory" action=config.put resource=config)' }])
        // A budget smaller than one row: one row per statement, same verdict.
        expect(await verifyAudit(raw, cp.store.key.publicKey, { pageBytes: 1 })).toEqual(bad)
      } finally {
        await raw.close()
      }
    } finally {
      await cp.close()
    }
  }, 120_000)
})

describe('an audit log signed by a replaced key and by its successor', () => {
  it('names the key an older entry was signed with; verifies whole with both public keys; still finds a forgery', async () => {
    const spec = await pg.createDatabase('igw_audit16_rotation')
    const db = openDb(spec)
    try {
      const oldKey = generateSigningKey()
      const newKey = generateSigningKey()
      const tenant = (name: string) => (h: { document: Record<string, unknown> }) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), [name]: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined })
      const before = new ConfigStore(db, oldKey)
      await before.init(seedDocument())
      await before.commit({ actor: 'alice', action: 'tenants.put', resource: 'tenants/one', change: tenant('one') })
      // The key file is replaced; the control plane starts again on the same database.
      const after = new ConfigStore(db, newKey)
      await after.init()
      await after.commit({ actor: 'alice', action: 'tenants.put', resource: 'tenants/two', change: tenant('two') })

      const withNew = await verifyAudit(db, newKey.publicKey)
      expect(withNew).toMatchObject({ ok: false, entries: 3 })
      const why = `signature does not verify: the entry names key ${oldKey.keyId}, not the key given (${newKey.keyId}); if the signing key was replaced, verify with the old public key as well`
      expect(withNew.problems).toEqual([
        { seq: 1, problem: why },
        { seq: 2, problem: why },
      ])
      expect(await verifyAudit(db, [oldKey.publicKey, newKey.publicKey])).toMatchObject({ ok: true, entries: 3, problems: [] })

      // A row re-hashed without a private key still fails, whichever key it names.
      const { entryHash } = await import('../../control-plane/audit.ts')
      const row = (await db.query<Record<string, unknown>>('SELECT * FROM audit_log WHERE seq = 2'))[0]!
      await db.query('UPDATE audit_log SET actor = $1, hash = $2, key_id = $3 WHERE seq = 2', ['mallory', entryHash(row.prev_hash as string, { ...row, actor: 'mallory' } as never), 'ffffffffffffffff'])
      const forged = await verifyAudit(db, [oldKey.publicKey, newKey.publicKey])
      expect(forged.ok).toBe(false)
      expect(forged.problems.filter((p) => p.seq === 2)).toEqual([{ seq: 2, problem: `signature does not verify: the entry names key ffffffffffffffff, not one of the keys given (${oldKey.keyId}, ${newKey.keyId}); if the signing key was replaced, verify with the old public key as well` }])
      // (seq 3 links to the old hash: the chain shows it too.)
      expect(forged.problems.some((p) => p.seq === 3 && /prev_hash does not link/.test(p.problem))).toBe(true)
    } finally {
      await db.close()
    }
  }, 60_000)
})
