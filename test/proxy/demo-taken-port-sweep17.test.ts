// `igw demo` on a gateway or admin port that another igw holds. The gateway's worker threads
// listen with `reusePort`, and so does every igw: a demo started while another igw (a forgotten
// demo, an `igw proxy` on its default :8080) held the port bound beside it, printed its examples,
// and the kernel split the connections between the two processes. The holder here listens with
// `reusePort` as an igw does; the demo must refuse in one line, exit 69 (EX_UNAVAILABLE), start
// nothing and leave no temp directory.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-demo-sweep17-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const STACK_LINE = /^\s+at .+:\d+:\d+\)?$/m

/** Runs `igw demo …` until it exits; one that is still running after `ms` is stopped (SIGINT, then SIGKILL). */
async function runDemo(args: string[], env: NodeJS.ProcessEnv, ms = 30_000): Promise<{ code: number | null; out: string; stillRunning: boolean }> {
  const child = spawn(process.execPath, [IGW_BIN, 'demo', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'exit') as Promise<[number | null]>
  let stillRunning = false
  const timer = setTimeout(() => {
    stillRunning = true
    child.kill('SIGINT')
    setTimeout(() => child.kill('SIGKILL'), 15_000).unref()
  }, ms)
  // A demo that started prints its banner: no reason to wait for the deadline then.
  const started = setInterval(() => {
    if (out.includes('Ctrl-C stops everything') && !stillRunning) {
      stillRunning = true
      child.kill('SIGINT')
    }
  }, 50)
  const [code] = await exited
  clearTimeout(timer)
  clearInterval(started)
  return { code, out, stillRunning }
}

async function holdWithReusePort(): Promise<{ server: Server; address: string }> {
  const server = createServer((s) => s.destroy())
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0, reusePort: true }, resolve)
  })
  return { server, address: `127.0.0.1:${(server.address() as { port: number }).port}` }
}

describe('igw demo on a port another igw (reusePort) holds', () => {
  const env = (tmp: string) => ({ IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0', TMPDIR: tmp })

  it.each([
    ['the gateway port', 'listen', (taken: string) => ['--listen', taken, '--admin-listen', '127.0.0.1:0']],
    ['the admin port', 'admin.listen', (taken: string) => ['--listen', '127.0.0.1:0', '--admin-listen', taken]],
  ])('%s: one line naming it, exit 69, nothing started, no temp directory', { timeout: 90_000 }, async (_what, key, args) => {
    const holder = await holdWithReusePort()
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    try {
      const r = await runDemo([...args(holder.address), '--workers', '1'], env(tmp))
      expect(r.stillRunning, r.out).toBe(false)
      expect(r.code, r.out).toBe(69)
      expect(r.out.trim()).toBe(`igw: cannot listen on ${holder.address} (${key}): address already in use (another process listens there) [EADDRINUSE]`)
      expect(r.out).not.toMatch(STACK_LINE)
      expect(r.out).not.toContain('IntelGraph Gateway demo')
      expect(readdirSync(tmp)).toEqual([])
    } finally {
      await new Promise((r) => holder.server.close(r))
    }
  })
})
