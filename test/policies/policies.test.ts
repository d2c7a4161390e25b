import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { POLICY_BUNDLES, ROOT } from '../../policies/catalog.ts'
import { loadPolicyBundle } from '../../policies/engine.ts'
import { buildPolicies, opaBinary, testPolicies } from '../../policies/toolchain.ts'

const inputs = [
  { preset: 'tokenize_strict', contains_high_risk_without_tokenization: false },
  { preset: 'tokenize_strict', contains_high_risk_without_tokenization: true },
  { preset: 'tokenize_strict' },
  { preset: 'mask_basic' },
  { preset: 'mask_basic', contains_high_risk_without_tokenization: false },
  {},
]

describe('policy toolchain (real opa CLI, real opa-wasm)', () => {
  it('the Rego unit tests pass (opa test)', () => {
    const r = testPolicies(false)
    expect(r.out).toMatch(/PASS: \d+\/\d+/)
    expect(r.ok).toBe(true)
  })

  it('the committed bundles are what the Rego compiles to (CI fails when stale)', () => {
    for (const r of buildPolicies(true)) expect({ bundle: r.name, stale: r.changed }).toEqual({ bundle: r.name, stale: false })
  })

  it.each(inputs)('the wasm bundle decides like `opa eval` on the source: %j', async (input) => {
    const dlp = await loadPolicyBundle('dlp')
    const viaWasm = dlp.evaluate(input, 'intelgraph/dlp/decision')
    const spec = POLICY_BUNDLES.find((b) => b.name === 'dlp')!
    const r = spawnSync(opaBinary(), ['eval', '--format', 'json', '--stdin-input', '-d', spec.dir, 'data.intelgraph.dlp.decision'], { cwd: ROOT, input: JSON.stringify(input), encoding: 'utf8' })
    expect(r.status).toBe(0)
    const viaCli = (JSON.parse(r.stdout) as { result: { expressions: { value: unknown }[] }[] }).result[0]!.expressions[0]!.value
    expect(viaWasm).toEqual(viaCli)
  })

  it('denies by default and names the reason', async () => {
    const dlp = await loadPolicyBundle('dlp')
    expect(dlp.evaluate({ preset: 'mask_basic' })).toEqual({ allow: false, reason: 'preset "mask_basic" is not allowed for exports (only tokenize_strict)' })
  })

  it('a missing bundle is a clear error', async () => {
    await expect(loadPolicyBundle('/nonexistent/x.tar.gz')).rejects.toThrow(/ENOENT/)
  })
})

describe('a policy that fails to evaluate denies', () => {
  it('the admin authorizer turns an evaluation error into a deny with the reason (a 403), never an allow or a 500', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { Authorizer } = await import('../../control-plane/auth.ts')
    const dir = mkdtempSync(join(tmpdir(), 'igw-bad-policy-'))
    // Two complete definitions that disagree for action "conflict": opa compiles it, and its
    // evaluation fails at run time (a conflict error), the way a broken policy update would.
    writeFileSync(
      join(dir, 'authz.rego'),
      'package intelgraph.admin\n\ndecision := {"allow": true, "reason": "a"} if input.action == "conflict"\n\ndecision := {"allow": false, "reason": "b"} if input.action == "conflict"\n\ndecision := {"allow": true, "reason": "fine"} if input.action == "fine"\n',
    )
    const bundle = join(dir, 'bundle.tar.gz')
    const built = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/admin/decision', '-o', bundle, join(dir, 'authz.rego')], { encoding: 'utf8' })
    expect(built.status, built.stderr).toBe(0)
    const authz = await Authorizer.load(bundle)
    const subject = { sub: 'a', roles: ['admin'], attributes: [] }
    expect(authz.decide(subject, 'fine', { type: 'config' })).toEqual({ allow: true, reason: 'fine' })
    const d = authz.decide(subject, 'conflict', { type: 'config' })
    expect(d.allow).toBe(false)
    expect(d.reason).toMatch(/^policy evaluation failed: /)
    expect(() => authz.require(subject, 'admin.read', { type: 'config' })).toThrow(/denied/)
  })
})
