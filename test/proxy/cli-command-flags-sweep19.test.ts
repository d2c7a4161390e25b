// What an operator types at `igw`, run against the real bin/igw.js:
// - a flag typed for a command that does not read it was silently ignored (`igw demo --config
//   igw.yaml` ran the demo's own config; `igw control-plane --redis …`, `igw proxy --db …` started
//   without what was asked): now a usage error, exit 2, naming the flag and the ones that apply;
// - `igw --version` / `igw version` was "Unknown option", exit 2;
// - `igw help <command>` / `igw <command> --help` printed the whole table, not that command's flags;
// - an unknown flag quoted Node's advice to pass it as a positional after `--` (no command takes one).
// Environment twins stay allowed everywhere (one environment may serve several commands).
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN, ROOT } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-cli-flags-sweep19-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const STACK_LINE = /^\s+at .+:\d+:\d+\)?$/m

function igw(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { cwd: scratch, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' })
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, out: `${r.stdout}${r.stderr}` }
}

describe('igw: a flag the command does not read is a usage error', () => {
  it.each([
    [['demo', '--config', 'igw.yaml', '--listen', '127.0.0.1:0'], 'igw demo: --config does not apply to this command (--listen, --admin-listen, --workers, --redis, --log-level)'],
    [['demo', '--upstream=http://127.0.0.1:4000'], 'igw demo: --upstream does not apply'],
    [['control-plane', '--auth-secret', 'x'.repeat(40), '--listen', '127.0.0.1:0', '--metrics-listen', 'off', '--db', 'sqlite::memory:', '--redis', 'redis://127.0.0.1:6379', '--workers', '4'], 'igw control-plane: --workers, --redis do not apply to this command'],
    [['proxy', '--upstream', 'http://127.0.0.1:1', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--db', 'sqlite:x.db'], 'igw proxy: --db does not apply to this command'],
    [['audit', 'verify', '--listen', ':7070'], 'igw audit verify: --listen does not apply to this command (--db, --signing-key, --previous-keys)'],
    [['config', 'schema', '--check'], 'igw config schema: --check does not apply to this command (it takes no flags)'],
    [['control-plane', '--no-auth-require-exp', '--upstream', 'http://x:1'], 'igw control-plane: --upstream does not apply'],
  ])('igw %j: exit 2, one line naming it, nothing started', (args, message) => {
    const r = igw(args)
    expect(r.code, r.out).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain(message)
    expect(r.stderr).toContain(`see igw help ${r.stderr.startsWith('igw audit') ? 'audit verify' : r.stderr.startsWith('igw config') ? 'config schema' : args[0]}`)
    expect(r.out).not.toMatch(STACK_LINE)
    expect(r.out).not.toContain('listening')
  })

  it('environment twins of other commands are still taken quietly (one environment may serve several commands)', () => {
    // IGW_DB / IGW_AUTH_SECRET are the control plane's; `config validate` ignores them as before
    const file = join(scratch, 'ok.yaml')
    const r0 = spawnSync('bash', ['-c', `printf 'mode: sidecar\\nroutes: [{name: d, upstream: "http://127.0.0.1:4000"}]\\n' > ${file}`])
    expect(r0.status).toBe(0)
    const r = igw(['config', 'validate', file], { IGW_DB: 'sqlite:x.db', IGW_AUTH_SECRET: 'x'.repeat(40), IGW_CONTROL_PLANE_KEY: 'k.pem' })
    expect(r.code, r.out).toBe(0)
    expect(r.stdout).toBe(`${file}: valid\n`)
    // and the proxy's own flags still apply to `config validate` (an override checked with the file)
    const bad = igw(['config', 'validate', file, '--workers', '0'])
    expect(bad.code, bad.out).toBe(78)
    expect(bad.stderr).toMatch(/workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0/)
  })
})

describe('igw --version, igw help <command>, unknown flags', () => {
  it('--version and `igw version` print the package version, exit 0', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
    for (const args of [['--version'], ['version'], ['proxy', '--version']]) {
      const r = igw(args)
      expect(r.code, `${args.join(' ')}: ${r.out}`).toBe(0)
      expect(r.stdout).toBe(`igw ${version}\n`)
    }
  })

  it('`igw help demo` and `igw demo --help` list the demo\'s flags only; `igw help audit` the one command under it', () => {
    for (const args of [['help', 'demo'], ['demo', '--help']]) {
      const r = igw(args)
      expect(r.code, r.out).toBe(0)
      expect(r.stdout).toMatch(/^igw demo: /)
      expect(r.stdout).toMatch(/--admin-listen\s+\[IGW_ADMIN_LISTEN\]/)
      expect(r.stdout).not.toContain('--config')
      expect(r.stdout).not.toContain('--auth-secret')
    }
    const cp = igw(['help', 'control-plane'])
    expect(cp.stdout).toMatch(/--shutdown-grace-ms\s+\[IGW_SHUTDOWN_GRACE_MS\]/)
    expect(cp.stdout).not.toContain('--upstream')
    const audit = igw(['help', 'audit'])
    expect(audit.stdout).toMatch(/^igw audit verify: /)
    expect(audit.stdout).toContain('--previous-keys')
    // the whole table for `igw --help` and `igw help` (every flag, each with its twin)
    const all = igw(['--help'])
    expect(all.code).toBe(0)
    expect(all.stdout).toMatch(/--control-plane-token\s+\[IGW_CONTROL_PLANE_TOKEN\]/)
    expect(all.stdout).toMatch(/--auth-secret\s+\[IGW_AUTH_SECRET\]/)
    expect(igw(['help']).stdout).toBe(all.stdout)
  })

  it('an unknown flag is named plainly (no advice to pass it after `--`), exit 2', () => {
    const r = igw(['proxy', '--verbose'])
    expect(r.code, r.out).toBe(2)
    expect(r.stderr.split('\n')[0]).toBe('igw: unknown flag --verbose')
    expect(r.out).not.toContain("after '--'")
    expect(igw(['-v']).stderr.split('\n')[0]).toBe('igw: unknown flag -v (did you mean --version?)')
  })
})
