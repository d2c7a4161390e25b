// `igw audit verify --db sqlite:/no/such.db` exited 78 naming --signing-key ("cannot read the
// control plane key /no/signing-key.pem"): the default key sits beside the database, so a mistyped
// --db path missed both and the key was read first. The README promises "no database at that path"
// named as --db. Sweep 28l: the database is checked before the key.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-sweep28l-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const verify = (...args: string[]) => {
  const r = spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', ...args], { cwd: scratch, encoding: 'utf8', timeout: 20_000 })
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() }
}

describe('igw audit verify: a missing database is named as --db, not as the key beside it', () => {
  it('--db naming no file (default key path beside it missing too): --db, exit 78', () => {
    const typo = join(scratch, 'nosuch', 'igw.db')
    const r = verify('--db', `sqlite:${typo}`)
    expect(r.status, r.out).toBe(78)
    expect(r.out).toBe(`--db: invalid config\n  no database at ${typo}`)
    expect(existsSync(join(scratch, 'nosuch'))).toBe(false)
  })

  it('the defaults in an empty directory: no ./data/igw.db is named as --db', () => {
    const r = verify()
    expect(r.status, r.out).toBe(78)
    expect(r.out).toBe('--db: invalid config\n  no database at ./data/igw.db')
  })
})
