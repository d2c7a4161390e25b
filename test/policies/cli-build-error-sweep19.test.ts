// `igw policy build` when opa refuses to build (a Rego error, an opa that cannot run a step)
// ended in an uncaught exception with a Node stack trace, although the error already held opa's
// own words. It prints one `igw policy build: …` message and exits 1. Driven through the real
// CLI with IGW_OPA naming a stand-in opa that reports the pinned version and fails the step.
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { OPA_VERSION } from '../../policies/toolchain.ts'

describe('igw policy build when opa fails a step', () => {
  it('prints opa\'s message after "igw policy build:", exit 1, no stack trace', () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-fake-opa-'))
    const fake = join(dir, 'opa')
    writeFileSync(fake, `#!/bin/sh\nif [ "$1" = version ]; then echo "Version: ${OPA_VERSION}"; exit 0; fi\necho "error: capabilities: something broke" >&2\nexit 2\n`)
    chmodSync(fake, 0o755)
    const r = spawnSync(process.execPath, [join(import.meta.dirname, '../../bin/igw.js'), 'policy', 'build', '--check'], { encoding: 'utf8', env: { ...process.env, IGW_OPA: fake }, timeout: 60_000 })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/^igw policy build: `.*opa capabilities --current` failed/m)
    expect(r.stderr).toContain('error: capabilities: something broke')
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })
})
