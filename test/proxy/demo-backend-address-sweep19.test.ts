// IGW_DEMO_BACKEND=[::1]:4000 (an IPv6 loopback) made the sample backend's URL `http://::1:4000`,
// no URL at all: `igw demo` died with the control plane's ValidationFailed stack trace, exit 1.
// A wildcard (0.0.0.0, ::) was printed and used as the upstream address as typed. The backend's
// URL brackets an IPv6 host and reaches a wildcard on loopback.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { startDemoBackend } from '../../proxy/demo-backend.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const run = promisify(execFile)
const scratch = mkdtempSync(join(tmpdir(), 'igw-demo-backend-sweep19-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const hello = async (url: string) => {
  const r = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
  return (await r.json()) as unknown
}

describe('the demo backend\'s URL', () => {
  it.each([
    ['::1', 'http://[::1]:'],
    ['0.0.0.0', 'http://127.0.0.1:'],
    ['::', 'http://[::1]:'],
  ])('listening on %s it is %sPORT, a URL that reaches it', async (host, prefix) => {
    const backend = await startDemoBackend({ host, port: 0 })
    try {
      expect(backend.url).toBe(`${prefix}${backend.port}`)
      expect(await hello(backend.url)).toEqual({ data: { hello: 'Hello, world!' } })
    } finally {
      await backend.close()
    }
  })

  it('igw demo with IGW_DEMO_BACKEND=[::1]:0 starts, its printed curl answers, Ctrl-C exits 0', { timeout: 120_000 }, async () => {
    const child = spawn(process.execPath, [IGW_BIN, 'demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], {
      env: { ...process.env, IGW_DEMO_BACKEND: '[::1]:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0', TMPDIR: scratch },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    let gone = false
    void exited.then(() => (gone = true))
    try {
      await expect.poll(() => (gone ? `exited: ${out}` : out), { timeout: 60_000, interval: 100 }).toContain('Ctrl-C stops everything')
      expect(out).toMatch(/backend \(graphql-yoga\)\s+http:\/\/\[::1\]:\d+\/graphql/)
      const line = out.split('\n').find((l) => l.includes('hello(name: \\"igw\\")'))!.trim()
      const { stdout } = await run('bash', ['-c', line], { timeout: 30_000 })
      expect(JSON.parse(stdout)).toEqual({ data: { hello: 'Hello, igw!' } })
      child.kill('SIGINT')
      const [code] = await exited
      expect(code, out).toBe(0)
    } finally {
      if (!gone) child.kill('SIGKILL')
    }
  })
})
