// `igw demo` while its control plane port (:7070) is taken: the README promises a fall back to a
// free port. The fallback started a second control plane on the store the first attempt had
// already seeded, with the seed again, and the demo's first line was a warning that "the seed
// document (--config) was not used" — a flag the user never passed, about a store they never made.
// The fallback must be quiet, and the control plane must still hold the demo's document.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-demo-sweep30i-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

it('a taken control plane port falls back to a free one without a seed warning', { timeout: 60_000 }, async () => {
  const holder = createServer((s) => s.destroy())
  await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: 0 }, resolve))
  const taken = `127.0.0.1:${(holder.address() as { port: number }).port}`
  const child = spawn(process.execPath, [IGW_BIN, 'demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], {
    env: { ...process.env, IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: taken, TMPDIR: scratch },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'exit')
  try {
    await expect.poll(() => out.includes('Ctrl-C stops everything') || child.exitCode !== null, { timeout: 45_000, interval: 50 }).toBe(true)
    expect(out, out).toContain('Ctrl-C stops everything')
    expect(out).not.toContain('was not used')
    expect(out).not.toMatch(/"level":(40|"warn")/)
    const cp = /control plane\s+(http:\/\/\S+)\/openapi\.json/.exec(out)![1]!
    expect(cp).not.toBe(`http://${taken}`)
    const token = /export IGW_TOKEN=(\S+)/.exec(out)![1]!
    const res = await fetch(`${cp}/v1/tenants`, { headers: { authorization: `Bearer ${token}` } })
    expect(res.status).toBe(200)
    const ids = ((await res.json()) as { items: { id: string }[] }).items.map((t) => t.id)
    expect(ids).toContain('acme')
  } finally {
    if (child.exitCode === null) child.kill('SIGINT')
    const kill = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await exited
    clearTimeout(kill)
    await new Promise((r) => holder.close(r))
  }
})
