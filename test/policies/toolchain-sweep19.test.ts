// `igw policy build|test` with two opa binaries installed: an older one first on PATH (a Linux
// distribution's package, or a 0.x left from before Rego v1) and the pinned version in ~/go/bin
// (`go install …@v1.22.3`, as the install hint says). The one on PATH was used whatever its
// version: the v1 policies failed to build (a 0.x parses Rego v0) or, with another 1.x, every
// committed bundle read as STALE. Run as users run it: the CLI, as a child process; the pinned
// opa is the real one in ~/go/bin, the old one a stand-in that answers `version` as 0.68.0 and
// fails anything else the way a v0 parser fails on these policies.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ROOT } from '../../policies/catalog.ts'
import { buildPolicies, OPA_VERSION, opaBinary, PolicyBuildError } from '../../policies/toolchain.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-toolchain-sweep19-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const oldOpa = join(dir, 'opa')
writeFileSync(oldOpa, '#!/bin/sh\nif [ "$1" = version ]; then echo "Version: 0.68.0"; echo "Rego Version: v0"; exit 0; fi\necho "1 error occurred: policies/dlp/export.rego:12: rego_parse_error: var cannot be used for rule name" >&2\nexit 1\n')
chmodSync(oldOpa, 0o755)

// PATH: the old opa first, then this machine's PATH without the directories holding an opa.
const path = [dir, ...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== '' && !existsSync(join(d, 'opa')))].join(delimiter)
const env: NodeJS.ProcessEnv = { ...process.env, PATH: path }
delete env.IGW_OPA

describe('an older opa on PATH and the pinned one in ~/go/bin', () => {
  const pinned = join(homedir(), 'go/bin/opa')
  it.skipIf(!existsSync(pinned))('the pinned one is used: build --check and test pass, with no version warning', () => {
    const build = spawnSync(process.execPath, [IGW_BIN, 'policy', 'build', '--check'], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 })
    expect([build.status, build.stdout], build.stderr).toEqual([0, 'dlp: up to date\nadmin: up to date\n'])
    expect(build.stderr).not.toContain('0.68.0')
    const test = spawnSync(process.execPath, [IGW_BIN, 'policy', 'test'], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 })
    expect(test.status, test.stdout + test.stderr).toBe(0)
    expect(test.stdout).toMatch(/PASS: \d+\/\d+/)
  }, 240_000)

  it('opaBinary() picks the pinned one; with only the old one installed, that one (it runs)', () => {
    const saved = { PATH: process.env.PATH, HOME: process.env.HOME, IGW_OPA: process.env.IGW_OPA }
    try {
      process.env.PATH = path
      delete process.env.IGW_OPA
      if (existsSync(pinned)) expect(opaBinary()).toBe(pinned)
      process.env.HOME = dir // no go/bin/opa here
      expect(opaBinary()).toBe('opa')
      expect(OPA_VERSION).not.toBe('0.68.0')
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  })

  it('with only the old one, the build fails naming what opa said, not with a JSON SyntaxError', () => {
    const saved = { PATH: process.env.PATH, HOME: process.env.HOME, IGW_OPA: process.env.IGW_OPA }
    try {
      process.env.PATH = path
      process.env.HOME = dir
      delete process.env.IGW_OPA
      // Before: "SyntaxError: Unexpected non-whitespace character after JSON at position 2".
      expect(() => buildPolicies(true)).toThrow(PolicyBuildError)
      expect(() => buildPolicies(true)).toThrow(/`opa capabilities --current` failed \(exit 1\):\n1 error occurred: policies\/dlp\/export.rego:12: rego_parse_error/)
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  })
})

describe('a Rego error', () => {
  it('fails the build naming the file and line, writes nothing and leaves no scratch or partial file', () => {
    const src = join(dir, 'broken')
    mkdirSync(src, { recursive: true })
    writeFileSync(join(src, 'broken.rego'), 'package broken\n\ndecision := {"allow": true\n\nother := 1\n')
    const out = join(dir, 'out')
    mkdirSync(out)
    const scratch = join(dir, 'tmp')
    mkdirSync(scratch)
    const savedTmp = process.env.TMPDIR
    process.env.TMPDIR = scratch
    let err: unknown
    try {
      buildPolicies(false, { bundles: [{ name: 'broken', dir: src, entrypoints: ['broken/decision'] }], target: (name) => join(out, `${name}.tar.gz`) })
    } catch (e) {
      err = e
    } finally {
      if (savedTmp === undefined) delete process.env.TMPDIR
      else process.env.TMPDIR = savedTmp
    }
    expect(err).toBeInstanceOf(PolicyBuildError)
    expect((err as Error).message).toContain(`opa build broken (${src}) failed:`)
    expect((err as Error).message).toContain(`${join(src, 'broken.rego')}:5: rego_parse_error`)
    expect(readdirSync(out)).toEqual([])
    expect(readdirSync(scratch)).toEqual([])
  }, 120_000)
})
