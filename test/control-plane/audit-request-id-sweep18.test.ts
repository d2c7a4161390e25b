// Audit entries name the admin request that made them (its x-request-id: the caller's when it is a
// plain token, else the one the server answers with), so an entry can be joined to the access log
// and to the client's own logs; a rollback's entry names the version it restored and the one it
// replaced. Both are covered by the entry's hash; entries written before they existed (migration
// 4) still verify. SQLite and PostgreSQL.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { canonicalJson, sha256Hex } from '../../config/canonical-json.ts'
import { openDb } from '../../control-plane/db.ts'
import { MIGRATIONS } from '../../control-plane/migrations.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

interface Entry {
  seq: number
  action: string
  resource: string
  requestId: string | null
  detail?: Record<string, unknown>
  configVersion: number | null
}

async function entries(cp: TestControlPlane): Promise<Entry[]> {
  return ((await (await cp.api('/v1/audit?limit=1000')).json()) as { items: Entry[] }).items
}

async function verify(cp: TestControlPlane): Promise<{ ok: boolean; entries: number; problems: { seq: number; problem: string }[] }> {
  return (await (await cp.api('/v1/audit/verify')).json()) as never
}

/**
 * A database as an igw before migration 4 left it: migrations 1–3 and one audit entry hashed and
 * signed the way that igw did (no request id, no detail in the hash).
 */
async function oldDatabase(dbSpec: string, keyPath: string): Promise<void> {
  const key = loadOrCreateSigningKey(keyPath)
  const db = openDb(dbSpec)
  try {
    await db.transaction(async (tx) => {
      await tx.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)')
      for (const m of MIGRATIONS.filter((x) => x.version <= 3)) {
        for (const s of m.statements) {
          const sql = typeof s === 'string' ? s : db.kind === 'postgres' ? (s as { postgres?: string }).postgres : (s as { sqlite?: string }).sqlite
          if (sql !== undefined) await tx.query(sql)
        }
        await tx.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()])
      }
      const row = { seq: 1, at: Date.now() - 60_000, actor: 'legacy-admin', action: 'dlp.detokenize', resource: 'dlp/tokens', before: null, after: canonicalJson({ tokens: ['t1'], justification: 'incident 42' }), diff: canonicalJson([{ path: '', op: 'add', after: { tokens: ['t1'], justification: 'incident 42' } }]), configVersion: null }
      const hash = sha256Hex(`${'0'.repeat(64)}\n${canonicalJson(row)}`)
      await tx.query(
        'INSERT INTO audit_log (seq, at, actor, action, resource, before_json, after_json, diff, config_version, prev_hash, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)',
        [row.seq, row.at, row.actor, row.action, row.resource, null, row.after, row.diff, null, '0'.repeat(64), hash, key.keyId, key.sign(hash)],
      )
    })
  } finally {
    await db.close()
  }
}

function scenarios(name: string, dbSpec: (dir: string) => Promise<string | undefined>) {
  describe(`audit request ids and rollback detail (${name})`, () => {
    let cp: TestControlPlane
    let dir: string
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'igw-audit18-'))
      const spec = (await dbSpec(dir)) ?? `sqlite:${join(dir, 'igw.db')}`
      await oldDatabase(spec, join(dir, 'signing-key.pem'))
      cp = await startTestControlPlane({ dir, db: spec })
    }, 60_000)
    afterAll(async () => {
      await cp?.close()
      rmSync(dir, { recursive: true, force: true })
    })

    it('an entry written before migration 4 is kept, shows no request id, and still verifies', async () => {
      const all = await entries(cp)
      expect(all[0]).toMatchObject({ seq: 1, action: 'dlp.detokenize', requestId: null })
      expect(all[0]!.detail).toBeUndefined()
      // The seed committed at start, outside any request.
      expect(all[1]).toMatchObject({ seq: 2, action: 'config.seed', requestId: null })
      expect(await verify(cp)).toMatchObject({ ok: true, entries: 2, problems: [] })
    })

    it('REST: the caller’s x-request-id is recorded; else the one the response carries', async () => {
      const given = await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }), headers: { 'x-request-id': 'ops-change-7781' } })
      expect(given.status).toBe(201)
      expect(given.headers.get('x-request-id')).toBe('ops-change-7781')
      const made = await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'silver' }) })
      expect(made.status).toBe(200)
      const generated = made.headers.get('x-request-id')!
      expect(generated).toMatch(/^[0-9a-f-]{36}$/)
      // Not a plain token: replaced, and the replacement is what is recorded.
      const odd = await cp.api('/v1/tenants/initech', { method: 'DELETE', headers: { 'x-request-id': 'has spaces <script>' } })
      expect(odd.status).toBe(200)
      const replaced = odd.headers.get('x-request-id')!
      expect(replaced).not.toBe('has spaces <script>')

      const all = await entries(cp)
      const ofInitech = all.filter((e) => e.resource === 'tenants/initech')
      expect(ofInitech.map((e) => [e.action, e.requestId])).toEqual([
        ['tenants.put', 'ops-change-7781'],
        ['tenants.put', generated],
        ['tenants.delete', replaced],
      ])
      // The filter by resource shows them too.
      const filtered = ((await (await cp.api('/v1/audit?resource=tenants/initech')).json()) as { items: Entry[] }).items
      expect(filtered.map((e) => e.requestId)).toEqual(['ops-change-7781', generated, replaced])
      expect((await verify(cp)).ok).toBe(true)
    })

    it('GraphQL: setQuota and setDlpPreset record the request id', async () => {
      const gql = (query: string, id: string) => cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query }), headers: { 'x-request-id': id } })
      const q = await gql('mutation { setQuota(kind: "graphql", limitPerDay: 900, tenant: "acme") { limitPerDay } }', 'gql-req-1')
      expect(q.status).toBe(200)
      expect(((await q.json()) as { errors?: unknown }).errors).toBeUndefined()
      const d = await gql('mutation { setDlpPreset(preset: "mask_basic", tenant: "acme") }', 'gql-req-2')
      expect(((await d.json()) as { errors?: unknown }).errors).toBeUndefined()
      const all = await entries(cp)
      expect(all.find((e) => e.action === 'quotas.put' && e.resource === 'tenants/acme/quotas/graphql')?.requestId).toBe('gql-req-1')
      expect(all.find((e) => e.action === 'dlp.preset.set')?.requestId).toBe('gql-req-2')
      expect((await verify(cp)).ok).toBe(true)
    })

    it('a rollback’s entry names the version restored and the version it replaced', async () => {
      const head = ((await (await cp.api('/v1/config')).json()) as { version: number }).version
      const r = await cp.api('/v1/config/rollback', { method: 'POST', body: JSON.stringify({ version: 1 }), headers: { 'x-request-id': 'rollback-incident-9' } })
      expect(r.status).toBe(200)
      const committed = ((await r.json()) as { version: number }).version
      const e = (await entries(cp)).find((x) => x.action === 'config.rollback')!
      expect(e).toMatchObject({ requestId: 'rollback-incident-9', configVersion: committed, detail: { restoredVersion: 1, replacedVersion: head } })
      expect((await verify(cp)).ok).toBe(true)
    })

    it('the request id and the detail are covered by the hash: editing either is reported', async () => {
      const all = await entries(cp)
      const rb = all.find((x) => x.action === 'config.rollback')!
      const put = all.find((x) => x.requestId === 'ops-change-7781')!
      const db = openDb(cp.dbSpec)
      try {
        await db.query('UPDATE audit_log SET request_id = $1 WHERE seq = $2', ['someone-else', put.seq])
        await db.query('UPDATE audit_log SET detail = $1 WHERE seq = $2', [canonicalJson({ restoredVersion: 2, replacedVersion: 3 }), rb.seq])
        const v = await verify(cp)
        expect(v.ok).toBe(false)
        expect(v.problems.map((p) => p.seq).sort((a, b) => a - b)).toEqual([put.seq, rb.seq].sort((a, b) => a - b))
        expect(v.problems.every((p) => p.problem.startsWith('content does not match its hash'))).toBe(true)
        // Clearing it is an edit too.
        await db.query('UPDATE audit_log SET request_id = NULL WHERE seq = $1', [put.seq])
        expect((await verify(cp)).problems.some((p) => p.seq === put.seq)).toBe(true)
        await db.query('UPDATE audit_log SET request_id = $1 WHERE seq = $2', ['ops-change-7781', put.seq])
        await db.query('UPDATE audit_log SET detail = $1 WHERE seq = $2', [canonicalJson(rb.detail), rb.seq])
        expect((await verify(cp)).ok).toBe(true)
      } finally {
        await db.close()
      }
    })
  })
}

scenarios('SQLite', async () => undefined)

let pg: TestPostgres | undefined
afterAll(async () => {
  await pg?.close()
})
scenarios('PostgreSQL', async () => {
  pg = await startPostgres()
  return pg.createDatabase('igw_audit_reqid18')
})
