// Stray operands and per-command help. Only `config validate` takes operands, yet `igw audit
// verify other.db` (a forgotten --db) verified the default database, `igw policy test
// policies/dlp` ran every policy's tests and `igw version x` said there is no command "version".
// `igw audit verify --help` said its key is "created if missing" (verify only reads it: a missing
// one exits 78), and `igw demo --help` named neither IGW_DEMO_BACKEND nor IGW_DEMO_CONTROL_PLANE.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { commandUsage } from '../../proxy/cli.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const exec = promisify(execFile)
const cwd = mkdtempSync(join(tmpdir(), 'igw-cli-sweep24z-'))
afterAll(() => rmSync(cwd, { recursive: true, force: true }))

async function igw(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [IGW_BIN, ...args], { cwd, timeout: 20_000 })
    return { code: 0, ...r }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('one-shot commands take no operands', () => {
  it.each([
    [['audit', 'verify', 'other.db'], 'igw: audit verify takes no arguments, got "other.db"'],
    [['policy', 'test', 'policies/dlp'], 'igw: policy test takes no arguments, got "policies/dlp"'],
    [['policy', 'build', '--check', 'dlp'], 'igw: policy build takes no arguments, got "dlp"'],
    [['version', 'x'], 'igw: version takes no arguments, got "x"'],
  ])('igw %j is a usage error naming the stray word, exit 2', { timeout: 30_000 }, async (args, line) => {
    const r = await igw(args)
    expect(r.stderr.split('\n')[0]).toBe(line)
    expect(r.code, r.stderr).toBe(2)
    expect(r.stdout).toBe('')
  })
})

describe('per-command help says what the command does', () => {
  it('audit verify reads its key, never creates it', () => {
    const help = commandUsage('audit verify')!
    const line = help.split('\n').find((l) => l.includes('--signing-key'))!
    expect(line).not.toContain('created if missing')
    expect(line).toContain('never created')
    // the control plane does create it
    expect(commandUsage('control-plane')!).toContain('created if missing')
  })

  it('demo names the variables that place its backend and control plane', () => {
    const help = commandUsage('demo')!
    expect(help).toMatch(/IGW_DEMO_BACKEND .*default 127\.0\.0\.1:4000/)
    expect(help).toMatch(/IGW_DEMO_CONTROL_PLANE .*default 127\.0\.0\.1:7070/)
  })
})
