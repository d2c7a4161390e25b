// The control plane's graceful SIGTERM lets admin requests in flight finish for a grace period
// (10 s) — which had no flag or environment variable: an orchestrator with a shorter
// terminationGracePeriodSeconds SIGKILLed it mid-drain, one with longer drains could not allow
// them. `--shutdown-grace-ms` / IGW_SHUTDOWN_GRACE_MS set it; a bad value stops the start naming it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const SECRET = 'a-secret-of-more-than-32-characters-for-hs256'
const scratch = mkdtempSync(join(tmpdir(), 'igw-cli-grace-sweep18b-'))
const children: ChildProcess[] = []
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** Start `igw control-plane`, wait for its listening line; SIGTERM it while a PUT is half sent; the exit code and log lines. */
async function termWithRequestInFlight(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; lines: Record<string, unknown>[] }> {
  const dir = mkdtempSync(join(scratch, 'cp-'))
  const child = spawn(process.execPath, [IGW_BIN, 'control-plane', '--db', `sqlite:${join(dir, 'igw.db')}`, '--auth-secret', SECRET, '--listen', '127.0.0.1:0', '--metrics-listen', 'off', ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  children.push(child)
  const exited = once(child, 'exit')
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const lines = () => out.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>]
    } catch {
      return []
    }
  })
  await expect.poll(() => lines().some((l) => l.msg === 'igw control plane listening'), { timeout: 30_000, interval: 50 }).toBe(true)
  const port = Number(String(lines().find((l) => l.msg === 'igw control plane listening')!.listen).split(':').pop())
  const token = await mintToken(SECRET, { sub: 'grace-admin', roles: ['admin'] })
  const body = JSON.stringify({ tier: 'gold' })
  const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/tenants/slow', method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': String(body.length + 10) } })
  req.on('error', () => undefined)
  await new Promise<void>((resolve) => req.write(body, () => resolve())) // 10 bytes short: in flight until cut
  // The request has reached the server (its handler is reading the body) before SIGTERM.
  await new Promise((r) => setTimeout(r, 1_000))
  child.kill('SIGTERM')
  const [code] = await exited
  req.destroy()
  return { code: code as number | null, lines: lines() }
}

describe('igw control-plane --shutdown-grace-ms', () => {
  it('IGW_SHUTDOWN_GRACE_MS sets the grace period SIGTERM gives admin requests in flight', { timeout: 60_000 }, async () => {
    const r = await termWithRequestInFlight([], { IGW_SHUTDOWN_GRACE_MS: '300' })
    expect(r.code).toBe(0)
    expect(r.lines.find((l) => /still in flight after the grace period/.test(String(l.msg)))).toMatchObject({ graceMs: 300, requests: 1 })
  })

  it('--shutdown-grace-ms wins over the environment', { timeout: 60_000 }, async () => {
    const r = await termWithRequestInFlight(['--shutdown-grace-ms', '200'], { IGW_SHUTDOWN_GRACE_MS: '5000' })
    expect(r.code).toBe(0)
    expect(r.lines.find((l) => /still in flight after the grace period/.test(String(l.msg)))).toMatchObject({ graceMs: 200 })
  })

  it.each(['abc', '-1', '1.5', '99999999999'])('--shutdown-grace-ms %s stops the start naming the flag (exit 78)', (value) => {
    const r = spawnSync(process.execPath, [IGW_BIN, 'control-plane', '--auth-secret', SECRET, '--metrics-listen', 'off', '--db', 'sqlite::memory:', '--listen', '127.0.0.1:0', `--shutdown-grace-ms=${value}`], { cwd: scratch, encoding: 'utf8', timeout: 30_000 })
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(78)
    expect(`${r.stdout}${r.stderr}`.trim()).toBe(`--shutdown-grace-ms: invalid config\n  expected milliseconds from 0 to 3600000, got "${value}"`)
  })

  it('is listed in igw --help with its environment twin', () => {
    const r = spawnSync(process.execPath, [IGW_BIN, '--help'], { encoding: 'utf8', timeout: 30_000 })
    expect(`${r.stdout}${r.stderr}`).toMatch(/--shutdown-grace-ms\s+\[IGW_SHUTDOWN_GRACE_MS\]/)
  })
})
