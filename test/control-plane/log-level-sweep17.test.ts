// `igw control-plane --log-level` (IGW_LOG_LEVEL) is obeyed. The flag was parsed, listed in
// `igw --help` for every command, and then ignored: the control plane always logged at info (a
// line per commit, per NACK…) and `--log-level debug` showed nothing more; a typo was accepted.
// The real CLI, as a child process.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { freePort } from '../helpers/ports.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

function args(dir: string, port: number): string[] {
  return ['control-plane', '--db', `sqlite:${join(dir, 'igw.db')}`, '--listen', `127.0.0.1:${port}`, '--metrics-listen', 'off', '--auth-secret', TEST_AUTH_SECRET]
}

/** Starts `igw control-plane`, commits one change through it, stops it; returns everything it printed. */
async function runOnce(extra: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'igw-loglevel17-'))
  dirs.push(dir)
  const port = await freePort()
  const child = spawn(process.execPath, [IGW_BIN, ...args(dir, port), ...extra], { env: { ...process.env, IGW_LOG_LEVEL: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'exit')
  try {
    const admin = await mintToken(TEST_AUTH_SECRET, { sub: 'admin', roles: ['admin'] })
    await expect.poll(() => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, () => 0), { timeout: 20_000, interval: 100 }).toBe(200)
    const put = await fetch(`http://127.0.0.1:${port}/v1/config`, { method: 'PUT', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ mode: 'sidecar', routes: [{ name: 'default', upstream: 'http://127.0.0.1:9' }] }) })
    expect(put.status).toBe(200)
  } finally {
    child.kill('SIGTERM')
    await exited
  }
  return out
}

describe('igw control-plane --log-level', () => {
  it('warn: no info lines (start, commit); info by default', async () => {
    const quiet = await runOnce(['--log-level', 'warn'])
    expect(quiet).not.toContain('igw control plane listening')
    expect(quiet).not.toContain('config version committed')
    const viaEnv = await runOnce([], { IGW_LOG_LEVEL: 'error' })
    expect(viaEnv).not.toContain('igw control plane listening')
    const normal = await runOnce([])
    expect(normal).toContain('igw control plane listening')
    expect(normal).toContain('config version committed')
  }, 90_000)

  it("writes the proxy's log format: level names, ISO times, its component; the SIGTERM line too", async () => {
    // Numeric levels and epoch times beside the proxy's names and ISO times (one stdout in `igw
    // demo`), and a SIGTERM line with neither level nor time, written past the logger.
    const lines = (await runOnce([])).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines.length).toBeGreaterThan(2)
    for (const l of lines) expect(l).toMatchObject({ level: expect.stringMatching(/^(info|warn|error)$/), time: expect.stringMatching(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/), component: 'control-plane', pid: expect.any(Number) })
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'shutting down', signal: 'SIGTERM' })
  }, 60_000)

  it('an unknown level stops the start (exit 78) naming the flag', () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-loglevel17-'))
    dirs.push(dir)
    const r = spawnSync(process.execPath, [IGW_BIN, ...args(dir, 0), '--log-level', 'loud'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, IGW_LOG_LEVEL: '' } })
    expect(r.status, r.stdout + r.stderr).toBe(78)
    expect(r.stderr).toMatch(/--log-level/)
    expect(r.stderr).toContain('"loud"')
  })
})
