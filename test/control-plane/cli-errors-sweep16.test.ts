// `igw control-plane` and `igw audit verify` against an operator's mistakes, through the real
// bin: each is one line naming the flag and what was typed, exit 78 (EX_CONFIG), no stack
// trace. For `audit verify` that matters twice: exit 1 means "tampered", so a check that could
// not run must not exit 1, and a mistyped --db must not create an empty database.
import { spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-cli-sweep16-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const SECRET = 'a-secret-of-more-than-32-characters-for-hs256'
const STACK_LINE = /^\s+at .+:\d+:\d+\)?$/m

function igw(args: string[], cwd = scratch): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { cwd, encoding: 'utf8', timeout: 30_000, env: { ...process.env, IGW_LOG_LEVEL: 'warn' } })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

function keyFile(dir: string): string {
  const path = join(dir, 'signing-key.pem')
  writeFileSync(path, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }))
  return path
}

describe('igw control-plane: a bad flag names the flag and the value', () => {
  const base = ['control-plane', '--auth-secret', SECRET, '--metrics-listen', 'off', '--db', 'sqlite::memory:']

  it.each([':99999', 'abc', '127.0.0.1:'])('--listen %s is one line naming --listen and the value (not Node\'s "options.port should be")', (value) => {
    const r = igw([...base, '--listen', value])
    expect(r.status, r.out).toBe(78)
    expect(r.out.trim()).toBe(`--listen: invalid config\n  expected host:port or :port with a port from 0 to 65535, got "${value}"`)
  })

  it('--listen and --metrics-listen with no port after the colon are refused (they took a random port, port Number("") = 0)', () => {
    const r = igw(['control-plane', '--auth-secret', SECRET, '--db', 'sqlite::memory:', '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:'])
    expect(r.status, r.out).toBe(78)
    expect(r.out.trim()).toBe('--metrics-listen: invalid config\n  expected host:port, :port or off, got "127.0.0.1:"')
  })

  it('a --db that cannot be opened names --db and why (a directory; an unreachable PostgreSQL, password hidden)', () => {
    const dir = mkdtempSync(join(scratch, 'db-'))
    const key = keyFile(dir)
    const asDir = igw(['control-plane', '--auth-secret', SECRET, '--metrics-listen', 'off', '--listen', '127.0.0.1:0', '--signing-key', key, '--db', `sqlite:${dir}`])
    expect(asDir.status, asDir.out).toBe(78)
    expect(asDir.out.trim()).toMatch(new RegExp(`^--db: invalid config\\n {2}cannot open sqlite:${dir}: .+$`))
    expect(asDir.out).not.toMatch(STACK_LINE)

    const pg = igw(['control-plane', '--auth-secret', SECRET, '--metrics-listen', 'off', '--listen', '127.0.0.1:0', '--signing-key', key, '--db', 'postgres://igw:hunter2pw@127.0.0.1:1/igw'])
    expect(pg.status, pg.out).toBe(78)
    // It said only "igw control-plane: invalid config / the database is unavailable".
    expect(pg.out.trim()).toBe('--db: invalid config\n  cannot open postgres://[redacted]@127.0.0.1:1/igw: connect ECONNREFUSED 127.0.0.1:1')
    expect(pg.out).not.toContain('hunter2pw')
  })

  it('a seed file that is not there is named as the file, as for the proxy', () => {
    const r = igw([...base, '--listen', '127.0.0.1:0', '--config', 'no-such-seed.yaml'])
    expect(r.status, r.out).toBe(78)
    expect(r.out.trim()).toMatch(/^no-such-seed\.yaml: invalid config\n {2}cannot read file: ENOENT/)
  })
})

describe('igw audit verify: a check that cannot run is exit 78 with one line, never exit 1 (tampered)', () => {
  it('a mistyped --db path: named, exit 78, and no database (or directory) is created there', () => {
    const dir = mkdtempSync(join(scratch, 'audit-'))
    const key = keyFile(dir)
    const typo = join(dir, 'sub', 'igw.db')
    const r = igw(['audit', 'verify', '--db', `sqlite:${typo}`, '--signing-key', key])
    expect(r.status, r.out).toBe(78)
    expect(r.out.trim()).toBe(`--db: invalid config\n  no database at ${typo}`)
    expect(existsSync(join(dir, 'sub'))).toBe(false)
    expect(readdirSync(dir)).toEqual(['signing-key.pem'])
  })

  it('a SQLite file that is not a control plane database: named, exit 78, no stack trace', () => {
    const dir = mkdtempSync(join(scratch, 'audit-'))
    const key = keyFile(dir)
    // An empty file is a valid (empty) SQLite database without the audit_log table.
    writeFileSync(join(dir, 'empty.db'), '')
    const r = igw(['audit', 'verify', '--db', `sqlite:${join(dir, 'empty.db')}`, '--signing-key', key])
    expect(r.status, r.out).toBe(78)
    expect(r.out.trim()).toMatch(new RegExp(`^--db: invalid config\\n {2}sqlite:${join(dir, 'empty.db')} is not an igw control plane database \\(.*no such table.*\\)$`))
  })

  it('a missing or unusable key names --signing-key, exit 78, no stack trace', () => {
    const dir = mkdtempSync(join(scratch, 'audit-'))
    mkdirSync(join(dir, 'data'))
    writeFileSync(join(dir, 'data', 'igw.db'), '')
    const missing = igw(['audit', 'verify'], dir) // the defaults: ./data/igw.db and ./data/signing-key.pem
    expect(missing.status, missing.out).toBe(78)
    expect(missing.out.trim()).toMatch(/^--signing-key: invalid config\n {2}cannot read the control plane key data\/signing-key\.pem .*ENOENT.*$/)
    writeFileSync(join(dir, 'not-a-key.pem'), 'hello\n')
    const garbage = igw(['audit', 'verify', '--signing-key', 'not-a-key.pem'], dir)
    expect(garbage.status, garbage.out).toBe(78)
    expect(garbage.out.trim()).toMatch(/^--signing-key: invalid config\n {2}not-a-key\.pem is not an ed25519 PEM key \(public or private\): .+$/)
    expect(garbage.out).not.toMatch(STACK_LINE)
  })

  it('an unreachable PostgreSQL: named (password hidden), exit 78', () => {
    const dir = mkdtempSync(join(scratch, 'audit-'))
    const r = igw(['audit', 'verify', '--db', 'postgres://igw:hunter2pw@127.0.0.1:1/igw', '--signing-key', keyFile(dir)])
    expect(r.status, r.out).toBe(78)
    expect(r.out.trim()).toBe('--db: invalid config\n  cannot read the audit log in postgres://[redacted]@127.0.0.1:1/igw: connect ECONNREFUSED 127.0.0.1:1')
  })

  it('a real control plane database still verifies (exit 0)', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(scratch, 'audit-'))
    const db = `sqlite:${join(dir, 'igw.db')}`
    const child = spawn(process.execPath, [IGW_BIN, 'control-plane', '--db', db, '--auth-secret', SECRET, '--listen', '127.0.0.1:0', '--metrics-listen', 'off'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit')
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    await expect.poll(() => out, { timeout: 30_000, interval: 50 }).toContain('igw control plane listening')
    child.kill('SIGTERM')
    expect((await exited)[0]).toBe(0)
    const r = igw(['audit', 'verify', '--db', db, '--signing-key', join(dir, 'signing-key.pem')])
    expect(r.status, r.out).toBe(0)
    expect(r.out).toMatch(/^audit log OK: \d+ entries/)
  })
})
