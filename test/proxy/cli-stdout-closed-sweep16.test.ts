// `igw proxy --control-plane …` whose stdout reader has gone (`igw … | head`, a log shipper that
// died): its log stream met EPIPE at exit inside pino's exit-time flush, which retries every
// 100 ms forever, so the process never exited (and, its main thread parked in Atomics.wait, no
// SIGTERM could end it). Here the control plane is unreachable with no snapshot: exit 78 is due.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-stdout-closed-sweep16-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe('a closed stdout does not hang the exit', () => {
  it('the reader leaves after the first line: igw still exits 78, every time', { timeout: 120_000 }, async () => {
    const codes: (number | string | null)[] = []
    for (let i = 0; i < 3; i++) {
      const child = spawn(process.execPath, [IGW_BIN, 'proxy', '--control-plane', 'http://127.0.0.1:1', '--control-plane-token', 'x.y.z', '--state-dir', mkdtempSync(join(scratch, 'state-')), '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { stdio: ['ignore', 'pipe', 'ignore'] })
      child.stdout.once('data', () => child.stdout.destroy()) // as `| head -1` does
      const code = await new Promise<number | string | null>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL')
          resolve('hung')
        }, 25_000)
        child.once('exit', (c) => {
          clearTimeout(timer)
          resolve(c)
        })
      })
      codes.push(code)
    }
    expect(codes).toEqual([78, 78, 78])
  })
})
