// `igw control-plane --db postgress://igw:secret@…` (a typo in the scheme) and `igw audit verify
// --db …` quoted the whole URL, password included, in the error that goes to the terminal and the
// logs. The credentials are redacted now; the rest of the URL still tells the operator the typo.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runControlPlane } from '../../control-plane/cli.ts'
import { parseFlags } from '../../proxy/cli.ts'

const IGW = fileURLToPath(new URL('../../bin/igw.js', import.meta.url))
const BAD = 'postgress://igw:s3cr3t-pw@db.internal:5432/igw'

describe('--db with a mistyped scheme', () => {
  it('igw control-plane: the ConfigError names the flag and the host, not the password', async () => {
    const err = await runControlPlane(parseFlags(['control-plane', '--db', BAD, '--auth-secret', 'x'.repeat(40), '--listen', '127.0.0.1:0', '--metrics-listen', 'off'], {}).flags).then(
      () => undefined,
      (e: unknown) => e as Error,
    )
    expect(err).toBeDefined()
    const text = `${err!.message} ${JSON.stringify(err)}`
    expect(text).toContain('--db')
    expect(text).toContain('db.internal')
    expect(text).not.toContain('s3cr3t-pw')
  })

  it('igw audit verify: exit 78, the password not printed', () => {
    const r = spawnSync(process.execPath, [IGW, 'audit', 'verify', '--db', BAD], { encoding: 'utf8', timeout: 30_000 })
    expect(r.status).toBe(78)
    expect(r.stdout + r.stderr).toContain('db.internal')
    expect(r.stdout + r.stderr).not.toContain('s3cr3t-pw')
  })
})
