// `igw policy build|test` run the opa CLI. Without it (not on PATH, not in ~/go/bin, or IGW_OPA
// naming nothing runnable) the command says so in one line naming what to install, exit 69
// (EX_UNAVAILABLE): `policy test` exited 1 printing nothing, `policy build` with a stack trace.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { OPA_VERSION } from '../../policies/toolchain.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const home = mkdtempSync(join(tmpdir(), 'igw-opa-missing-'))
afterAll(() => rmSync(home, { recursive: true, force: true }))

// This machine's PATH without any directory holding an opa binary; HOME without ~/go/bin/opa.
const pathWithoutOpa = (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '' && !existsSync(join(d, 'opa'))).join(delimiter)
const noOpa: NodeJS.ProcessEnv = { ...process.env, PATH: pathWithoutOpa, HOME: home }
delete noOpa.IGW_OPA

function igw(args: string[], env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { env, encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const INSTALL = `install it with \`go install github.com/open-policy-agent/opa@v${OPA_VERSION}\` (or set IGW_OPA to its path)`

describe('igw policy without the opa CLI', () => {
  it.each([['test'], ['build', '--check']])('policy %s: one line naming how to install it, exit 69', (...args) => {
    const r = igw(['policy', ...args], noOpa)
    expect(r.status, r.stdout + r.stderr).toBe(69)
    expect(r.stdout).toBe('')
    expect(r.stderr.trim()).toBe(`igw policy ${args[0]}: the opa CLI is not installed (not on PATH, not in ~/go/bin); ${INSTALL}`)
  })

  it('IGW_OPA naming a program that does not run as opa: named, exit 69', () => {
    const r = igw(['policy', 'test'], { ...noOpa, IGW_OPA: '/bin/false' })
    expect(r.status, r.stdout + r.stderr).toBe(69)
    expect(r.stderr.trim()).toBe(`igw policy test: cannot run the opa CLI /bin/false (IGW_OPA): \`/bin/false version\` exited 1; ${INSTALL}`)
    const gone = igw(['policy', 'build', '--check'], { ...noOpa, IGW_OPA: join(home, 'no-such-opa') })
    expect(gone.status, gone.stdout + gone.stderr).toBe(69)
    expect(gone.stderr.trim()).toMatch(new RegExp(`^igw policy build: cannot run the opa CLI ${join(home, 'no-such-opa')} \\(IGW_OPA\\): .*ENOENT.*; install it with`))
  })
})
