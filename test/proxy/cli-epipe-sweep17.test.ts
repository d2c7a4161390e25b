// `igw config schema | head -c 10`: a reader that stops early closed the pipe and igw died with an
// unhandled EPIPE stack trace on stderr and exit 1. A one-shot command ends quietly (exit 0).
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const IGW = fileURLToPath(new URL('../../bin/igw.js', import.meta.url))

describe('one-shot commands and a closed stdout', () => {
  it('config schema into a reader that closes after the first bytes that is gone exits 0 without a stack', { timeout: 30_000 }, async () => {
    const child = spawn(process.execPath, [IGW, 'config', 'schema'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    // the reader is gone before igw writes (as when `head -c 10` got its bytes from an earlier write)
    child.stdout.destroy()
    const [code] = (await once(child, 'exit')) as [number | null]
    expect(stderr).not.toContain('EPIPE')
    expect(code).toBe(0)
  })
})
