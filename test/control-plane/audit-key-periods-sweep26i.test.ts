// `igw audit verify --previous-keys` used to accept an entry signed by any of those keys at any
// position in the chain: whoever held a replaced (possibly leaked) private key and the database
// could rewrite every entry written since the replacement, re-sign the chain with the old key, and
// it verified as intact. A replaced key now verifies only up to its successor's first entry, plus
// a bounded overlap for a rolling restart (old and new replicas writing side by side).
// A real SQLite file, the real migrations, the real CLI.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest'
import { appendAudit, AUDIT_KEY_OVERLAP_ENTRIES, AUDIT_KEY_OVERLAP_MS, verifyAudit } from '../../control-plane/audit.ts'
import { openDb, type Db } from '../../control-plane/db.ts'
import { migrate } from '../../control-plane/migrations.ts'
import { generateSigningKey, type SigningKey } from '../../control-plane/signing.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

let dir: string
let spec: string
let db: Db
beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'igw-audit26i-'))
  dirs.push(dir)
  spec = `sqlite:${join(dir, 'igw.db')}`
  db = openDb(spec)
  await migrate(db)
})
afterEach(async () => {
  await db.close()
})

const T0 = Date.UTC(2025, 0, 1)
const append = (key: SigningKey, at: number, resource = 'tenants/acme') =>
  db.transaction((tx) => appendAudit(tx, key, { actor: 'alice', action: 'tenants.put', resource, after: { at } }, at))
const pemFile = (key: SigningKey, name: string): string => {
  const path = join(dir, name)
  writeFileSync(path, key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 })
  return path
}

describe('audit entries signed by a replaced key', () => {
  it('a tail re-signed with the old key after its successor took over is named, entry by entry (API and CLI)', async () => {
    const oldKey = generateSigningKey()
    const newKey = generateSigningKey()
    for (let i = 0; i < 3; i++) await append(oldKey, T0 + i)
    // seq 4: the new key's first entry; then more than the overlap allows.
    const takeover = T0 + 60_000
    const total = 3 + AUDIT_KEY_OVERLAP_ENTRIES + 6
    for (let seq = 4; seq <= total; seq++) await append(newKey, takeover + (seq - 4) * 1000)
    expect(await verifyAudit(db, [newKey.publicKey, oldKey.publicKey])).toMatchObject({ ok: true, entries: total, problems: [] })

    // The forger rewrites the last entries with the old key (the chain re-linked, `at` chosen to look in the overlap).
    const from = 3 + AUDIT_KEY_OVERLAP_ENTRIES + 3
    await db.query('DELETE FROM audit_log WHERE seq >= $1', [from])
    for (let seq = from; seq <= total; seq++) await append(oldKey, takeover + 1, 'tenants/mallory')
    const r = await verifyAudit(db, [newKey.publicKey, oldKey.publicKey])
    expect(r.ok).toBe(false)
    expect(r.entries).toBe(total)
    expect(r.problems.map((p) => p.seq)).toEqual(Array.from({ length: total - from + 1 }, (_, i) => from + i))
    for (const p of r.problems) expect(p.problem).toContain(`signed by key ${oldKey.keyId}, which key ${newKey.keyId} replaced at seq 4`)
    // A further previous key that never signed changes nothing.
    expect((await verifyAudit(db, [newKey.publicKey, oldKey.publicKey, generateSigningKey().publicKey])).problems).toEqual(r.problems)

    const cli = spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', spec, '--signing-key', pemFile(newKey, 'new.pem'), '--previous-keys', pemFile(oldKey, 'old.pem')], { encoding: 'utf8', timeout: 30_000 })
    expect(cli.status, cli.stdout + cli.stderr).toBe(1)
    expect(cli.stderr).toContain(`seq ${from}: signed by key ${oldKey.keyId}, which key ${newKey.keyId} replaced at seq 4`)
  }, 30_000)

  it('a rolling restart (old and new key interleaved for a while) verifies; an old-key entry past the overlap time does not', async () => {
    const k1 = generateSigningKey()
    const k2 = generateSigningKey()
    const k3 = generateSigningKey()
    await append(k1, T0)
    await append(k1, T0 + 1000)
    // k2's replicas roll out while k1's still write, one clock a little behind.
    await append(k2, T0 + 2000)
    await append(k1, T0 + 1500)
    await append(k2, T0 + 3000)
    await append(k1, T0 + 4000)
    // Then k3 replaces k2 the same way.
    await append(k3, T0 + 10_000)
    await append(k2, T0 + 11_000)
    await append(k3, T0 + 12_000)
    for (const previous of [[k1, k2], [k2, k1]]) {
      expect(await verifyAudit(db, [k3.publicKey, ...previous.map((k) => k.publicKey)])).toMatchObject({ ok: true, entries: 9, problems: [] })
    }
    // k2 again, within the entries allowed but past the overlap time: k2 was put back or forged.
    await append(k2, T0 + 10_000 + AUDIT_KEY_OVERLAP_MS + 1)
    const r = await verifyAudit(db, [k3.publicKey, k1.publicKey, k2.publicKey])
    expect(r.problems).toEqual([{ seq: 10, problem: expect.stringContaining(`signed by key ${k2.keyId}, which key ${k3.keyId} replaced at seq 7`) as string }])
  })

  it('a previous key that first signs after the current key did is a replaced key too', async () => {
    const current = generateSigningKey()
    const other = generateSigningKey()
    for (let i = 0; i < AUDIT_KEY_OVERLAP_ENTRIES + 2; i++) await append(current, T0 + i)
    // Not seen before: without the rule it would read as a newer key taking over from the current one.
    await append(other, T0 + AUDIT_KEY_OVERLAP_ENTRIES + 2)
    const r = await verifyAudit(db, [current.publicKey, other.publicKey])
    expect(r.problems).toEqual([{ seq: AUDIT_KEY_OVERLAP_ENTRIES + 3, problem: expect.stringContaining(`signed by key ${other.keyId}, which key ${current.keyId} replaced at seq 1`) as string }])
  })
})
