// `igw policy build [--check]` and `igw policy test`: the real opa CLI compiles Rego to wasm
// bundles (restricted to the builtins the opa-wasm SDK implements) and runs the Rego unit tests.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { POLICY_BUNDLES, ROOT, bundlePath } from './catalog.ts'
import { IGW_BUILTINS } from './engine.ts'

export const OPA_VERSION = '1.22.3'

/** The opa binary: $IGW_OPA, then PATH, then ~/go/bin (where `go install` puts it). */
export function opaBinary(): string {
  if (process.env.IGW_OPA) return process.env.IGW_OPA
  const fromPath = spawnSync('opa', ['version'], { encoding: 'utf8' })
  if (fromPath.status === 0) return 'opa'
  const gobin = join(homedir(), 'go/bin/opa')
  if (existsSync(gobin)) return gobin
  throw new Error(`the opa CLI is not installed: go install github.com/open-policy-agent/opa@v${OPA_VERSION} (or set IGW_OPA)`)
}

function run(args: string[]): { status: number; out: string } {
  const r = spawnSync(opaBinary(), args, { cwd: ROOT, encoding: 'utf8' })
  return { status: r.status ?? 1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` }
}

export function checkOpaVersion(): string {
  const v = run(['version']).out
  const m = /Version: (\S+)/.exec(v)
  if (!m || m[1] !== OPA_VERSION) {
    console.warn(`opa ${m?.[1] ?? '?'} found; bundles are committed as built by opa ${OPA_VERSION}`)
  }
  return m?.[1] ?? 'unknown'
}

/** Build every bundle; with check=true, compare with the committed ones instead of replacing. */
export function buildPolicies(check: boolean): { name: string; changed: boolean }[] {
  checkOpaVersion()
  // One scratch folder per build, removed however the build ends: every run (CI runs --check on
  // each push, the test suite too) used to leave three folders behind in the temp directory.
  const scratch = mkdtempSync(join(tmpdir(), 'igw-opa-'))
  try {
    // The SDK's capabilities list the builtins its wasm runtime implements (so a policy using
    // anything else fails at build time, not at evaluation); it predates Rego v1, so the language
    // features come from the opa binary itself.
    const sdk = JSON.parse(readFileSync(join(ROOT, 'node_modules/@open-policy-agent/opa-wasm/capabilities.json'), 'utf8')) as Record<string, unknown>
    const current = JSON.parse(run(['capabilities', '--current']).out) as { features?: string[]; builtins?: { name: string }[] }
    // Plus the builtins igw provides itself (time.now_ns): the runtime accepts them, so may a build.
    const own = (current.builtins ?? []).filter((b) => IGW_BUILTINS.includes(b.name))
    const capabilities = join(scratch, 'capabilities.json')
    writeFileSync(capabilities, JSON.stringify({ ...sdk, builtins: [...((sdk.builtins as unknown[] | undefined) ?? []), ...own], features: current.features ?? [] }))
    const results: { name: string; changed: boolean }[] = []
    for (const spec of POLICY_BUNDLES) {
      const out = join(scratch, `${spec.name}.tar.gz`)
      const args = ['build', '-t', 'wasm', '--capabilities', capabilities, '--ignore', '*_test.rego', '-o', out]
      for (const e of spec.entrypoints) args.push('-e', e)
      args.push(spec.dir)
      const r = run(args)
      if (r.status !== 0) throw new Error(`opa build ${spec.name} failed:\n${r.out}`)
      const target = bundlePath(spec.name)
      const changed = !existsSync(target) || !readFileSync(target).equals(readFileSync(out))
      if (!check && changed) {
        // Copied beside the target, then renamed over it: a process loading the bundle meanwhile
        // reads the old file or the new one, never half of one.
        const partial = `${target}.${process.pid}.partial`
        try {
          copyFileSync(out, partial)
          renameSync(partial, target)
        } catch (err) {
          rmSync(partial, { force: true }) // no half-copied file left beside the bundles
          throw err
        }
      }
      results.push({ name: spec.name, changed })
    }
    return results
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}

export function testPolicies(verbose: boolean): { ok: boolean; out: string } {
  const r = run(['test', ...(verbose ? ['-v'] : []), ...POLICY_BUNDLES.map((b) => b.dir)])
  return { ok: r.status === 0, out: r.out }
}
