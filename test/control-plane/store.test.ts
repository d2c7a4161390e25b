// The store against both engines: real SQLite (node:sqlite) and a real PostgreSQL server.
import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { verifyAudit } from '../../control-plane/audit.ts'
import { openDb, type Db } from '../../control-plane/db.ts'
import { MIGRATIONS, migrate } from '../../control-plane/migrations.ts'
import { openSnapshot } from '../../control-plane/snapshot.ts'
import { generateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore, ValidationFailed } from '../../control-plane/store.ts'
import { writeQuotaLimit } from '../../control-plane/quota-section.ts'
import { seedDocument } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
})
afterAll(async () => {
  await pg?.close()
})

const engines = dbEngines('igw_store', () => pg).map(({ name, spec }) => ({
  name,
  open: async (): Promise<{ spec: string; db: Db }> => {
    const s = await spec()
    return { spec: s, db: openDb(s) }
  },
}))

describe.each(engines)('store on $name', (engine) => {
  it('migrations create every table once; re-running applies nothing', async () => {
    const { db } = await engine.open()
    try {
      expect(await migrate(db)).toEqual(MIGRATIONS.map((m) => m.version))
      expect(await migrate(db)).toEqual([])
      for (const t of ['config_versions', 'tenants', 'api_quotas', 'audit_log', 'proxies', 'usage_daily', 'alerts', 'plugins']) {
        const rows = await db.query(`SELECT COUNT(*) AS n FROM ${t}`)
        expect(Number((rows[0] as { n: unknown }).n)).toBe(0)
      }
      const applied = await db.query<{ version: unknown }>('SELECT version FROM schema_migrations')
      expect(applied.map((r) => Number(r.version)).sort()).toEqual(MIGRATIONS.map((m) => m.version).sort())
    } finally {
      await db.close()
    }
  })

  it('api_quotas has the seed shape: kind CHECK and (tenant_id, kind) primary key', async () => {
    const { db } = await engine.open()
    try {
      await migrate(db)
      const id = '6f1c1e4e-1111-4a3a-9d3b-000000000001'
      await db.query('INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)', [id, 'acme', 1])
      await db.query('INSERT INTO api_quotas (tenant_id, kind, limit_per_day) VALUES ($1, $2, $3)', [id, 'graphql', 10_000_000_000])
      await expect(db.query('INSERT INTO api_quotas (tenant_id, kind, limit_per_day) VALUES ($1, $2, $3)', [id, 'bitcoin', 1])).rejects.toThrow(/check/i)
      await expect(db.query('INSERT INTO api_quotas (tenant_id, kind, limit_per_day) VALUES ($1, $2, $3)', [id, 'graphql', 2])).rejects.toThrow(/unique|primary/i)
      const rows = await db.query<{ limit_per_day: unknown }>('SELECT limit_per_day FROM api_quotas WHERE tenant_id = $1', [id])
      expect(Number(rows[0]!.limit_per_day)).toBe(10_000_000_000) // BIGINT, not 32-bit
    } finally {
      await db.close()
    }
  })

  it('commits validated versions, projects quotas into api_quotas, signs snapshots, and refuses invalid documents whole', async () => {
    const { db } = await engine.open()
    const key = generateSigningKey()
    const store = new ConfigStore(db, key)
    try {
      await store.init(seedDocument())
      expect(store.head()!.version).toBe(1)
      const r = await store.commit({
        actor: 'alice',
        action: 'quotas.put',
        resource: 'tenants/acme/quotas/graphql',
        change: (h) => ({ document: writeQuotaLimit(h.document, 'acme', 'graphql', 500), before: undefined, after: { limitPerDay: 500 }, result: undefined }),
      })
      expect(r).toMatchObject({ version: 2, changed: true })
      const rows = await store.quotaRows()
      expect(rows).toEqual([{ tenant: 'acme', tenantId: (await store.tenantIds()).get('acme'), kind: 'graphql', limitPerDay: 500 }])
      expect(rows[0]!.tenantId).toMatch(/^[0-9a-f-]{36}$/)
      // The pushed envelope verifies with the key and carries the document.
      const payload = openSnapshot(store.head()!.envelope, key.publicKey)
      expect(payload.version).toBe(2)
      expect((payload.document as { quotas: unknown }).quotas).toEqual({ tenants: { acme: { graphql: { limitPerDay: 500 } } } })
      // A document the proxy schema refuses never becomes a version, and nothing else is written.
      const bad = store.commit({ actor: 'alice', action: 'x', resource: 'routes/graphql', change: (h) => ({ document: { ...h.document, routes: [{ name: 'graphql', upstream: 'htp:/x' }] }, before: 1, after: 2, result: undefined }) })
      await expect(bad).rejects.toBeInstanceOf(ValidationFailed)
      await expect(bad).rejects.toMatchObject({ problems: [expect.stringMatching(/^routes\[0\]\.upstream: /)] })
      expect(store.head()!.version).toBe(2)
      expect((await store.versions()).map((v) => v.version)).toEqual([2, 1])
      // A quota for a tenant the document does not list is refused by the schema's own rule.
      await expect(store.commit({ actor: 'a', action: 'x', resource: 'q', change: (h) => ({ document: writeQuotaLimit(h.document, 'nobody', 'graphql', 1), before: 1, after: 2, result: undefined }) })).rejects.toMatchObject({
        problems: [expect.stringContaining('quotas.tenants.nobody')],
      })
      // Unchanged documents make no version.
      expect((await store.commit({ actor: 'a', action: 'noop', resource: 'config', change: (h) => ({ document: h.document, before: 1, after: 1, result: undefined }) })).changed).toBe(false)
      const audit = await verifyAudit(db, key.publicKey)
      expect(audit).toMatchObject({ ok: true, entries: 2, problems: [] })
    } finally {
      await db.close()
    }
  })

  it('`igw audit verify` passes an intact chain and names the entry whose row was edited', async () => {
    const { spec, db } = await engine.open()
    const dir = mkdtempSync(join(tmpdir(), 'igw-audit-'))
    const keyPath = join(dir, 'signing-key.pem')
    const { loadOrCreateSigningKey } = await import('../../control-plane/signing.ts')
    const key = loadOrCreateSigningKey(keyPath)
    const store = new ConfigStore(db, key)
    await store.init(seedDocument())
    for (const tier of ['silver', 'bronze', 'gold']) {
      await store.commit({ actor: 'bob', action: 'tenants.put', resource: 'tenants/acme', change: (h) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), acme: { tier } } }, before: null, after: { tier }, result: undefined }) })
    }
    const run = () => spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', spec, '--signing-key', keyPath], { encoding: 'utf8' })
    const ok = run()
    expect(ok.stdout).toMatch(/audit log OK: 4 entries/)
    expect(ok.status).toBe(0)
    // Someone with database access rewrites history: who made change 3.
    await db.query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    const bad = run()
    expect(bad.status).toBe(1)
    expect(bad.stderr).toMatch(/TAMPERED/)
    expect(bad.stderr).toMatch(/seq 3: content does not match its hash \(the row was edited: actor="mallory"/)
    expect(bad.stderr).not.toMatch(/seq [124]:/)
    // Deleting an entry breaks the link of the next one.
    await db.query("UPDATE audit_log SET actor = 'bob' WHERE seq = 3")
    // Intact again (in-process: the CLI's exit 0 on an intact chain is checked above; a spawn is ~1 s).
    expect(await verifyAudit(db, key.publicKey)).toMatchObject({ ok: true, problems: [] })
    await db.query('DELETE FROM audit_log WHERE seq = 2')
    const gap = run()
    expect(gap.status).toBe(1)
    expect(gap.stderr).toMatch(/seq 3: sequence gap/)
    expect(gap.stderr).toMatch(/seq 3: prev_hash does not link/)
    // A forged entry re-hashed without the private key fails its signature.
    const { entryHash } = await import('../../control-plane/audit.ts')
    const row = (await db.query<Record<string, unknown>>('SELECT * FROM audit_log WHERE seq = 4'))[0]!
    const forged = { ...row, action: 'forged' } as never
    await db.query('UPDATE audit_log SET action = $1, hash = $2 WHERE seq = 4', ['forged', entryHash(row.prev_hash as string, forged)])
    const r = await verifyAudit(db, key.publicKey)
    expect(r.problems).toContainEqual({ seq: 4, problem: 'signature does not verify with the control plane key' })
    await db.close()
  })
})
