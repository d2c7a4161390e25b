// `--control-plane` without a scheme (`127.0.0.1:7070`, `cp:7070`) parses as a URL of another
// scheme and could only ever be "unreachable": with a fallback (--upstream, or a last-known-good
// snapshot) the proxy started and retried the typo forever, never taking a pushed change. It is a
// config error at start naming the flag, as `--upstream htp:/x` is.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-cp-url-sweep16-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** Runs igw until it exits, or until it says it listens (then stops it): which came first. */
async function startOrExit(args: string[]): Promise<{ listening: boolean; code: number | null; out: string }> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { env: { ...process.env, IGW_CONTROL_PLANE_TOKEN: 'x.y.z', IGW_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let listening = false
  const onData = (d: Buffer) => {
    out += d.toString()
    if (!listening && out.includes('igw proxy listening')) {
      listening = true
      child.kill('SIGTERM')
    }
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { listening, code, out }
}

describe('--control-plane must be an http(s) URL', () => {
  it.each(['127.0.0.1:7070', 'cp:7070', 'not a url', 'ftp://cp.example:7070'])('%s with an --upstream fallback: exit 78 naming the flag, nothing started', async (value) => {
    const stateDir = mkdtempSync(join(scratch, 'state-'))
    const r = await startOrExit(['proxy', '--control-plane', value, '--upstream', 'http://127.0.0.1:9', '--state-dir', stateDir, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'])
    expect(r.listening, r.out).toBe(false)
    expect(r.code, r.out).toBe(78)
    expect(r.out.trim()).toBe(`--control-plane: invalid config\n  expected an http:// or https:// URL, e.g. http://127.0.0.1:7070, got "${value}"`)
  })

  it('a value that may hold credentials is described, not printed', async () => {
    const r = await startOrExit(['proxy', '--control-plane', 'admin:s3cretpw@cp', '--upstream', 'http://127.0.0.1:9', '--state-dir', mkdtempSync(join(scratch, 'state-')), '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'])
    expect(r.code, r.out).toBe(78)
    expect(r.out).not.toContain('s3cretpw')
    expect(r.out.trim()).toBe('--control-plane: invalid config\n  expected an http:// or https:// URL, e.g. http://127.0.0.1:7070, got a value of 17 characters (not shown: it may hold credentials)')
  })
})
