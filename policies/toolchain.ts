// `igw policy build [--check]` and `igw policy test`: the real opa CLI compiles Rego to wasm
// bundles (restricted to the builtins the opa-wasm SDK implements) and runs the Rego unit tests.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { POLICY_BUNDLES, ROOT, bundlePath, type PolicyBundleSpec } from './catalog.ts'
import { IGW_BUILTINS } from './engine.ts'

export const OPA_VERSION = '1.22.3'

/**
 * The opa binary: $IGW_OPA; else, of `opa` on PATH and ~/go/bin/opa (where `go install` puts it),
 * the first that is OPA_VERSION, else the first that runs. PATH used to win whatever its version:
 * a distribution's older opa there (0.x parses Rego v0, so the v1 policies fail to build with
 * parse errors that look like the policy's fault; another 1.x compiles different wasm, so
 * `--check` reported every bundle STALE) was used although the pinned one was installed.
 */
export function opaBinary(): string {
  if (process.env.IGW_OPA) return process.env.IGW_OPA
  let runs: string | undefined
  const fromPath = spawnSync('opa', ['version'], { encoding: 'utf8' })
  if (fromPath.status === 0) {
    if (versionOf(fromPath.stdout) === OPA_VERSION) return 'opa'
    runs = 'opa'
  }
  const gobin = join(homedir(), 'go/bin/opa')
  if (existsSync(gobin)) {
    const r = spawnSync(gobin, ['version'], { encoding: 'utf8' })
    if (r.status === 0 && versionOf(r.stdout) === OPA_VERSION) return gobin
    runs ??= gobin
  }
  if (runs !== undefined) return runs
  throw new Error(`the opa CLI is not installed: go install github.com/open-policy-agent/opa@v${OPA_VERSION} (or set IGW_OPA)`)
}

function versionOf(out: string | null | undefined): string | undefined {
  return /Version: (\S+)/.exec(out ?? '')?.[1]
}

function run(args: string[], bin = opaBinary()): { status: number; out: string } {
  const r = spawnSync(bin, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  return { status: r.status ?? 1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` }
}

export function checkOpaVersion(bin = opaBinary()): string {
  const v = versionOf(run(['version'], bin).out)
  if (v !== OPA_VERSION) {
    console.warn(`opa ${v ?? '?'} found (${bin}); bundles are committed as built by opa ${OPA_VERSION}`)
  }
  return v ?? 'unknown'
}

/** `opa build` refused a policy: the message carries opa's own (file:line: error). */
export class PolicyBuildError extends Error {
  override name = 'PolicyBuildError'
}

export interface BuildOptions {
  /** The bundles to build (default: the catalog's). */
  bundles?: readonly PolicyBundleSpec[]
  /** Where each bundle is written / compared (default: policies/bundles/<name>.tar.gz). */
  target?: (name: string) => string
}

/** Build every bundle; with check=true, compare with the committed ones instead of replacing. */
export function buildPolicies(check: boolean, opts: BuildOptions = {}): { name: string; changed: boolean }[] {
  const bin = opaBinary()
  checkOpaVersion(bin)
  // One scratch folder per build, removed however the build ends: every run (CI runs --check on
  // each push, the test suite too) used to leave three folders behind in the temp directory.
  const scratch = mkdtempSync(join(tmpdir(), 'igw-opa-'))
  try {
    // The SDK's capabilities list the builtins its wasm runtime implements (so a policy using
    // anything else fails at build time, not at evaluation); it predates Rego v1, so the language
    // features come from the opa binary itself.
    const sdk = JSON.parse(readFileSync(join(ROOT, 'node_modules/@open-policy-agent/opa-wasm/capabilities.json'), 'utf8')) as Record<string, unknown>
    const caps = run(['capabilities', '--current'], bin)
    let current: { features?: string[]; builtins?: { name: string }[] }
    try {
      if (caps.status !== 0) throw new Error(`exit ${caps.status}`)
      current = JSON.parse(caps.out) as typeof current
    } catch (err) {
      // Was a bare "SyntaxError: Unexpected token" from parsing opa's error text as JSON.
      throw new PolicyBuildError(`\`${bin} capabilities --current\` failed (${(err as Error).message}):\n${caps.out.trimEnd()}`)
    }
    // Plus the builtins igw provides itself (time.now_ns): the runtime accepts them, so may a build.
    const own = (current.builtins ?? []).filter((b) => IGW_BUILTINS.includes(b.name))
    const capabilities = join(scratch, 'capabilities.json')
    writeFileSync(capabilities, JSON.stringify({ ...sdk, builtins: [...((sdk.builtins as unknown[] | undefined) ?? []), ...own], features: current.features ?? [] }))
    const results: { name: string; changed: boolean }[] = []
    for (const spec of opts.bundles ?? POLICY_BUNDLES) {
      const out = join(scratch, `${spec.name}.tar.gz`)
      const args = ['build', '-t', 'wasm', '--capabilities', capabilities, '--ignore', '*_test.rego', '-o', out]
      for (const e of spec.entrypoints) args.push('-e', e)
      args.push(spec.dir)
      const r = run(args, bin)
      if (r.status !== 0) throw new PolicyBuildError(`opa build ${spec.name} (${spec.dir}) failed:\n${r.out.trimEnd()}`)
      const target = (opts.target ?? bundlePath)(spec.name)
      const changed = !existsSync(target) || !readFileSync(target).equals(readFileSync(out))
      if (!check && changed) {
        // Copied beside the target, then renamed over it: a process loading the bundle meanwhile
        // reads the old file or the new one, never half of one. The name is this build's own:
        // with the pid alone, two builds in one process (worker threads) or in two containers
        // sharing the checkout (pid 1 each) wrote the same partial file at once, and one renamed
        // it over the bundle while the other was still writing it (the other then failed ENOENT).
        const partial = `${target}.${process.pid}.${randomBytes(6).toString('hex')}.partial`
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
  const r = run(['test', ...(verbose ? ['-v'] : []), ...POLICY_BUNDLES.map((b) => b.dir)], opaBinary())
  return { ok: r.status === 0, out: r.out }
}
