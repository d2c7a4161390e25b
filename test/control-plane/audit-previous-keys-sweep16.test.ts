// After the documented signing-key replacement, `igw audit verify` checks the older entries with
// the key that signed them (`--previous-keys`); without it they are reported, naming their key.
// Real control planes on one SQLite file, the real CLI.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { startTestControlPlane } from '../helpers/control-plane.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

describe('igw audit verify across a signing key replacement', () => {
  it('exit 1 naming the old key id without it; exit 0 with --previous-keys', async () => {
    const a = mkdtempSync(join(tmpdir(), 'igw-audit-a-'))
    const b = mkdtempSync(join(tmpdir(), 'igw-audit-b-'))
    dirs.push(a, b)
    const first = await startTestControlPlane({ dir: a })
    const oldKeyId = first.store.key.keyId
    expect((await first.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBeLessThan(300)
    await first.close()
    // The key replaced: same database, another key file.
    const second = await startTestControlPlane({ dir: b, db: first.dbSpec, seed: null })
    expect((await second.api('/v1/tenants/hooli', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).status).toBeLessThan(300)
    await second.close()
    const run = (...extra: string[]) => spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', first.dbSpec, '--signing-key', join(b, 'signing-key.pem'), ...extra], { encoding: 'utf8', timeout: 30_000 })
    const without = run()
    expect(without.status, without.stdout + without.stderr).toBe(1)
    expect(without.stdout + without.stderr).toContain(oldKeyId)
    const withOld = run('--previous-keys', join(a, 'signing-key.pem'))
    expect(withOld.status, withOld.stdout + withOld.stderr).toBe(0)
    expect(withOld.stdout).toMatch(/audit log OK/)
    const bad = run('--previous-keys', join(a, 'nope.pem'))
    expect(bad.status).toBe(78)
    expect(bad.stderr).toMatch(/--previous-keys/)
  })
})
