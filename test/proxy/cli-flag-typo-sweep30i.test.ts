// A mistyped flag (`igw proxy --uptream http://…`, the first thing a user types wrong) was named
// with no hint and followed by the table of every command's flags (control-plane auth, audit keys,
// …), so the one line that mattered scrolled away. It names the nearest flag the command reads, and
// the usage shown is that command's. A flag without its value, or a stray word (`igw audit verify
// other.db`), shows the command's usage too.
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

function igw(args: string[]) {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('igw <command> with a mistyped flag', () => {
  it('names the nearest flag of that command and prints that command\'s usage, exit 2', () => {
    const r = igw(['proxy', '--uptream', 'http://127.0.0.1:4000'])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stdout).toBe('')
    const lines = r.stderr.split('\n')
    expect(lines[0]).toBe('igw: unknown flag --uptream (did you mean --upstream?)')
    expect(r.stderr).toContain('usage: igw proxy [flags]')
    expect(r.stderr).not.toContain('--auth-secret')

    const v = igw(['config', 'validate', 'igw.yaml', '--listn', ':8080'])
    expect(v.code, v.stderr).toBe(2)
    expect(v.stderr.split('\n')[0]).toBe('igw: unknown flag --listn (did you mean --listen?)')
    expect(v.stderr).toContain('usage: igw config validate <file>… [flags]')
  })

  it('suggests only flags the command reads, and none for a word far from every flag', () => {
    // the demo takes no --upstream: no suggestion of a flag it would then refuse
    expect(igw(['demo', '--upstream', 'http://127.0.0.1:4000']).stderr.split('\n')[0]).toMatch(/^igw demo: --upstream does not apply/)
    const d = igw(['demo', '--uptream', 'http://127.0.0.1:4000'])
    expect(d.code).toBe(2)
    expect(d.stderr.split('\n')[0]).toBe('igw: unknown flag --uptream')
    expect(d.stderr).toContain('usage: igw demo [flags]')
    expect(igw(['proxy', '--verbose']).stderr.split('\n')[0]).toBe('igw: unknown flag --verbose')
  })

  it('a flag without its value shows the command\'s usage, not every command\'s', () => {
    const r = igw(['proxy', '--listen'])
    expect(r.code).toBe(2)
    expect(r.stderr.split('\n')[0]).toMatch(/^igw: --listen needs a value: /)
    expect(r.stderr).toContain('usage: igw proxy [flags]')
    expect(r.stderr).not.toContain('--auth-secret')
  })

  it('a stray word after a command shows that command\'s usage', () => {
    const r = igw(['audit', 'verify', 'other.db'])
    expect(r.code).toBe(2)
    expect(r.stderr.split('\n')[0]).toBe('igw: audit verify takes no arguments, got "other.db"')
    expect(r.stderr).toContain('usage: igw audit verify [flags]')
    expect(r.stderr).not.toContain('--upstream')
  })
})
