// `igw demo --listen :4000` (or an admin port on the control plane's :7070): the demo started its
// own sample backend there, then its gateway failed on that port with a NACKed control plane head,
// three JSON log lines and "address already in use (another process listens there)", exit 69 —
// the other process being the demo itself. Now one error naming both settings, exit 78 (a bad
// address), before anything starts.
import { execFile } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { freePort } from '../helpers/ports.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-demo-own-sweep24z-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

function demo(args: string[], env: NodeJS.ProcessEnv, tmp: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [IGW_BIN, 'demo', '--workers', '1', ...args], { env: { ...process.env, TMPDIR: tmp, ...env }, timeout: 20_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? null), out: stdout + stderr })
    })
  })
}

describe('igw demo with the gateway on its own backend or control plane port', () => {
  it('the gateway on the sample backend\'s port: one error naming IGW_DEMO_BACKEND, exit 78, nothing started', { timeout: 30_000 }, async () => {
    const port = await freePort()
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const r = await demo(['--listen', `:${port}`, '--admin-listen', '127.0.0.1:0'], { IGW_DEMO_BACKEND: `127.0.0.1:${port}`, IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0' }, tmp)
    expect(r.out.trim()).toBe(`--listen: invalid config\n  :${port} takes port ${port}, where the sample backend listens (IGW_DEMO_BACKEND=127.0.0.1:${port}): give one of them another port`)
    expect(r.code).toBe(78)
    expect(readdirSync(tmp)).toEqual([])
  })

  it('the admin port on the control plane\'s default port: names the default and the variable', { timeout: 30_000 }, async () => {
    const tmp = mkdtempSync(join(scratch, 'tmp-'))
    const env = { IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '' }
    const r = await demo(['--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:7070'], env, tmp)
    expect(r.out.trim()).toBe('--admin-listen: invalid config\n  127.0.0.1:7070 takes port 7070, where the control plane listens (127.0.0.1:7070 by default; IGW_DEMO_CONTROL_PLANE moves it): give one of them another port')
    expect(r.code).toBe(78)
    expect(readdirSync(tmp)).toEqual([])
  })
})
