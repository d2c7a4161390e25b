// An address the host refuses (not one of its own: EADDRNOTAVAIL) for `igw control-plane --listen`
// or `--metrics-listen` was "igw control-plane: invalid config / listen EADDRNOTAVAIL: …", exit 78
// (fix the config) naming no flag, where a taken port is exit 69 naming it. In `igw demo`, the same
// for IGW_DEMO_CONTROL_PLANE / IGW_DEMO_BACKEND came out in Node's words (no variable named), the
// backend's with exit 1. Now: one line naming the flag or variable, exit 69 (EX_UNAVAILABLE).
// 192.0.2.1 is TEST-NET-1 (RFC 5737), on no host: only bind() is tried, which sends nothing.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-listen-refused-sweep19-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const STACK_LINE = /^\s+at .+:\d+:\d+\)?$/m
const SECRET = 'k'.repeat(40)

function igw(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { cwd: scratch, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' })
  return { code: r.status, out: `${r.stdout}${r.stderr}` }
}

describe('a listen address not on this host', () => {
  it.each([
    [['--listen', '192.0.2.1:7070', '--metrics-listen', 'off'], 'igw: --listen 192.0.2.1:7070 is not available on this host [EADDRNOTAVAIL]'],
    [['--listen', '127.0.0.1:0', '--metrics-listen', '192.0.2.1:9902'], 'igw: --metrics-listen 192.0.2.1:9902 is not available on this host [EADDRNOTAVAIL]'],
  ])('igw control-plane %j: exit 69, the flag named', (args, line) => {
    const r = igw(['control-plane', '--auth-secret', SECRET, '--db', 'sqlite::memory:', ...args])
    expect(r.code, r.out).toBe(69)
    expect(r.out.trim()).toBe(line)
  })

  it.each([
    ['IGW_DEMO_CONTROL_PLANE', { IGW_DEMO_CONTROL_PLANE: '192.0.2.1:7070', IGW_DEMO_BACKEND: '127.0.0.1:0' }, 'cannot listen on 192.0.2.1:7070 (IGW_DEMO_CONTROL_PLANE, the control plane): address not available on this host [EADDRNOTAVAIL]'],
    ['IGW_DEMO_BACKEND', { IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0', IGW_DEMO_BACKEND: '192.0.2.1:4000' }, 'igw demo: cannot listen on 192.0.2.1:4000 (IGW_DEMO_BACKEND, the sample backend): address not available on this host [EADDRNOTAVAIL]'],
  ])('igw demo with %s on it: exit 69, the variable named, no stack, nothing left behind', (_name, env, line) => {
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const r = igw(['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { ...env, TMPDIR: tmp })
    expect(r.code, r.out).toBe(69)
    expect(r.out).toContain(line)
    expect(r.out).not.toMatch(STACK_LINE)
    expect(r.out).not.toContain('Ctrl-C stops everything')
    expect(readdirSync(tmp)).toEqual([])
  })
})
