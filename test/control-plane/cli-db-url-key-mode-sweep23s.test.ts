// `igw control-plane` and `igw audit verify` on two operator mistakes:
// - a --db PostgreSQL URL that is not a valid URL (a port above 65535, a raw "/" in the password):
//   pg parses it only at its first connection, and the start said "igw control-plane: invalid
//   config / Invalid URL", naming neither the flag nor the value (audit verify: "cannot read the
//   audit log … Invalid URL"). Now: --db, the URL with its credentials redacted, and the fix.
// - a signing key file others may read (0644, Kubernetes' default Secret mode): whoever reads it
//   can sign snapshots every proxy applies and audit entries. It was taken without a word; now
//   the started control plane warns naming the file and its mode, as for the DLP keyring.
import { spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { runControlPlane } from '../../control-plane/cli.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-cli-sweep23s-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))
const SECRET = 'a-secret-of-more-than-32-characters-for-hs256'

function keyFile(name: string, mode: number): string {
  const path = join(scratch, name)
  writeFileSync(path, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }))
  chmodSync(path, mode)
  return path
}

describe('a --db URL that is not a valid URL', () => {
  const urls = ['postgres://igw:pw-23s-a@db.internal:99999/igw', 'postgres://igw:pw/23s#b@db.internal:5432/igw']

  it.each(urls)('igw control-plane --db %s names --db, the password redacted', async (url) => {
    const err = await runControlPlane({ db: url, 'auth-secret': SECRET, listen: '127.0.0.1:0', 'metrics-listen': 'off', 'log-level': 'silent', 'signing-key': keyFile('k-url.pem', 0o600) }).then(
      async (cp) => {
        await cp.close()
        return undefined
      },
      (e: unknown) => e as Error,
    )
    expect(err).toBeInstanceOf(ConfigError)
    expect(err!.message).toMatch(/^--db: /)
    const problem = (err as ConfigError).problems.join('\n')
    expect(problem).toMatch(/is not a valid URL: expected postgres:\/\/user:password@host:port\/database/)
    expect(problem).toContain('db.internal')
    expect(problem).not.toMatch(/pw-23s|pw\/23s/)
  })

  it('igw audit verify: exit 78 naming --db', () => {
    const r = spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', urls[0]!, '--signing-key', keyFile('k-verify.pem', 0o600)], { encoding: 'utf8', timeout: 30_000 })
    const out = `${r.stdout}${r.stderr}`
    expect(r.status, out).toBe(78)
    expect(out.trim()).toBe('--db: invalid config\n  "postgres://[redacted]@db.internal:99999/igw" is not a valid URL: expected postgres://user:password@host:port/database (percent-encode "/", "?" and "#" in the password)')
  })
})

/**
 * Start the real bin on `key`, stop it (SIGTERM) once it says it listens, and return every line it
 * wrote: the key check runs in the same tick as the listening line, before any signal is handled.
 */
async function startLines(key: string): Promise<string[]> {
  const dir = mkdtempSync(join(scratch, 'cp-'))
  const child = spawn(process.execPath, [IGW_BIN, 'control-plane', '--auth-secret', SECRET, '--listen', '127.0.0.1:0', '--metrics-listen', 'off', '--db', `sqlite:${join(dir, 'igw.db')}`, '--signing-key', key], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const lines: string[] = []
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  try {
    for await (const line of createInterface({ input: child.stdout! })) {
      lines.push(line)
      if (line.includes('igw control plane listening')) child.kill('SIGTERM')
    }
  } finally {
    clearTimeout(timer)
    child.kill('SIGKILL')
    await exited
  }
  expect(lines.some((l) => l.includes('igw control plane listening')), `${lines.join('\n')}\n${stderr}`).toBe(true)
  return lines
}

describe('a signing key file others may read', () => {
  // Which modes count (0600, 0400 and a pod fsGroup's 0440 do not) is exposedMode's, tested with the DLP keyring.
  it('0644: the started control plane warns naming the file and its mode', async () => {
    const lines = await startLines(keyFile('k-0644.pem', 0o644))
    const warned = lines.map((l) => JSON.parse(l) as { level: string; msg: string; file?: string; mode?: string }).filter((l) => l.file !== undefined)
    expect(warned).toEqual([expect.objectContaining({ level: 'warn', file: join(scratch, 'k-0644.pem'), mode: '0644' })])
    expect(warned[0]!.msg).toContain('make it 0600 (or 0400)')
  }, 30_000)
})
