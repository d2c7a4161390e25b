// `igw demo --listen 8081` (a bare port, as `igw proxy` takes it, or IGW_LISTEN=8081): the demo
// listened on :8081 but printed its examples for the address as typed, whose digits before the
// last became the host (`curl -s http://808:8081/graphql …`): every printed example failed. The
// printed examples must reach the gateway and its admin port exactly as printed.
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { freePort } from '../helpers/ports.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const run = promisify(execFile)
const scratch = mkdtempSync(join(tmpdir(), 'igw-demo-sweep24z-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe('igw demo with bare-port addresses', () => {
  it('prints examples that reach the gateway and the admin port as printed', { timeout: 60_000 }, async () => {
    const [port, adminPort] = [await freePort(), await freePort()]
    const child = spawn(process.execPath, [IGW_BIN, 'demo', '--listen', String(port), '--workers', '1'], {
      env: { ...process.env, IGW_ADMIN_LISTEN: String(adminPort), IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0', TMPDIR: scratch },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const exited = once(child, 'exit') as Promise<[number | null]>
    let gone = false
    void exited.then(() => (gone = true))
    try {
      await expect.poll(() => (gone ? `exited: ${out}` : out), { timeout: 45_000, interval: 100 }).toContain('Ctrl-C stops everything')
      expect(out).toContain(`gateway (sidecar)        http://127.0.0.1:${port}/graphql`)
      const line = (marker: string) => out.split('\n').find((l) => l.includes(marker))!.trim()
      const hello = await run('bash', ['-c', line('hello(name: \\"igw\\")')], { timeout: 15_000 })
      expect(JSON.parse(hello.stdout)).toEqual({ data: { hello: 'Hello, igw!' } })
      const metrics = await run('bash', ['-c', line('/metrics | grep')], { timeout: 15_000 })
      expect(metrics.stdout).toMatch(/^igw_requests_total\{route="graphql",status="200"/m)
      child.kill('SIGINT')
      const [code] = await exited
      expect(code, out).toBe(0)
    } finally {
      if (!gone) {
        child.kill('SIGKILL')
        await exited
      }
    }
  })
})
