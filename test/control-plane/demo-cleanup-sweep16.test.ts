// `igw demo` keeps its SQLite, signing key and DLP keyring in a temp directory: it goes with the
// run however the run ends (Ctrl-C after the drain, a port taken at start), and a bad proxy flag
// is refused before anything starts, in one line naming it. Each run gets its own TMPDIR here,
// so "nothing left behind" is checked exactly. A bad IGW_DEMO_* address is a config error naming it.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN, spawnIgw } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-demo-sweep16-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const ports = { IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0' }

async function runToExit(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code, out }
}

describe('igw demo leaves nothing behind', () => {
  it('Ctrl-C: exit 0 and the temp directory it printed is gone', { timeout: 90_000 }, async () => {
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const demo = await spawnIgw(['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { ...ports, TMPDIR: tmp })
    let exitCode: number | null = null
    try {
      await expect.poll(() => demo.output.join(''), { timeout: 30_000, interval: 50 }).toContain('Ctrl-C stops everything')
      const dir = /\(SQLite in (\S+)\)/.exec(demo.output.join(''))![1]!
      expect(dir.startsWith(join(tmp, 'igw-demo-'))).toBe(true)
      expect(readdirSync(tmp)).toEqual([dir.slice(tmp.length + 1)])
      expect(readdirSync(dir)).toContain('igw.db')
      const r = await fetch(`${demo.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
      expect(r.status).toBe(200)
    } finally {
      exitCode = await demo.stop('SIGINT')
    }
    expect(exitCode).toBe(0)
    expect(readdirSync(tmp)).toEqual([])
  })

  it('the gateway port taken: exit 69 naming it, and no temp directory left', { timeout: 90_000 }, async () => {
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const holder = createServer()
    holder.listen(0, '127.0.0.1')
    await once(holder, 'listening')
    const taken = `127.0.0.1:${(holder.address() as { port: number }).port}`
    try {
      const r = await runToExit(['demo', '--listen', taken, '--admin-listen', '127.0.0.1:0', '--workers', '1'], { ...ports, TMPDIR: tmp })
      expect(r.code, r.out).toBe(69)
      expect(r.out).toContain(`igw: cannot listen on ${taken} (listen)`)
      expect(readdirSync(tmp)).toEqual([])
    } finally {
      holder.close()
    }
  })

  it('a bad --listen is refused before anything starts: one config error, exit 78, nothing created', { timeout: 60_000 }, async () => {
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const r = await runToExit(['demo', '--listen', '127.0.0.1:99999', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { ...ports, TMPDIR: tmp })
    expect(r.code, r.out).toBe(78)
    // It was a NACKed control plane head "with no usable last-known-good snapshot" and three log lines.
    expect(r.out.trim()).toBe('flags: invalid config\n  listen: expected a port from 0 to 65535, got "127.0.0.1:99999" (set by --listen / IGW_LISTEN)')
    expect(readdirSync(tmp)).toEqual([])
  })
})

describe('igw demo: a bad IGW_DEMO_* address names the variable', () => {
  it.each([
    ['IGW_DEMO_CONTROL_PLANE', 'abc'], // was a RangeError stack trace, exit 1
    ['IGW_DEMO_BACKEND', '127.0.0.1:99999'], // was Node's "options.port should be …", naming no variable, exit 1
  ])('%s=%s: one config error naming it, exit 78, nothing created', { timeout: 60_000 }, async (variable, value) => {
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const r = await runToExit(['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { ...ports, [variable]: value, TMPDIR: tmp })
    expect(r.code, r.out).toBe(78)
    expect(r.out.trim()).toBe(`${variable}: invalid config\n  expected host:port or :port with a port from 0 to 65535, got "${value}"`)
    expect(readdirSync(tmp)).toEqual([])
  })
})
