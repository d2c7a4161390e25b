// An operator rebuilds their export policy bundle (or rule pack) in place and reloads the config:
// the new one must be used. Each worker cached them by path for the life of the process, so a
// rebuilt bundle took a restart. Real opa CLI builds the bundles, real opa-wasm evaluates them.
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { dlpConfig } from '../../../config/dlp.ts'
import { opaBinary } from '../../../policies/toolchain.ts'
import { BUILTIN_RULE_PACK } from '../../../filters/dlp/rule-pack.ts'
import { dlpShared } from '../../../filters/dlp/runtime.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-reload-sweep16-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function policy(allowTenant: string): string {
  return `package intelgraph.dlp

default allow := false

allow if input.tenant == "${allowTenant}"

decision := {"allow": allow, "reason": concat("", ["only ", "${allowTenant}"])}
`
}

/** Build the Rego into `out` with the real opa CLI (written beside, then moved over it). */
function build(out: string, rego: string): void {
  const src = join(dir, `src-${Math.random().toString(36).slice(2)}`)
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'policy.rego'), rego)
  const tmp = `${out}.new.tar.gz`
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/dlp/decision', '-o', tmp, src], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  copyFileSync(tmp, out)
}

describe('a DLP policy bundle or rule pack rebuilt in place is loaded by the next config build', () => {
  it('the policy', async () => {
    const bundle = join(dir, 'export.tar.gz')
    build(bundle, policy('acme'))
    const cfg = dlpConfig.parse({ keyring: { file: join(dir, 'keys', 'ring.json'), create: true }, policy: { enabled: true, bundle } })
    const first = await dlpShared(cfg)
    expect(first.policy!.evaluate({ tenant: 'acme' })).toMatchObject({ allow: true })
    expect(first.policy!.evaluate({ tenant: 'globex' })).toMatchObject({ allow: false })
    // The same config again, nothing changed on disk: the same loaded policy (no reload cost).
    expect((await dlpShared(cfg)).policy).toBe(first.policy)
    build(bundle, policy('globex'))
    const second = await dlpShared(cfg)
    expect(second.policy!.evaluate({ tenant: 'globex' })).toMatchObject({ allow: true })
    expect(second.policy!.evaluate({ tenant: 'acme' })).toMatchObject({ allow: false, reason: 'only globex' })
  })

  it('the rule pack', async () => {
    const packFile = join(dir, 'pack.json')
    copyFileSync(BUILTIN_RULE_PACK, packFile)
    const cfg = dlpConfig.parse({ keyring: { file: join(dir, 'keys', 'ring2.json'), create: true }, rulePack: packFile })
    const first = await dlpShared(cfg)
    const doc = JSON.parse(JSON.stringify((await import(BUILTIN_RULE_PACK, { with: { type: 'json' } })).default)) as { version: string }
    doc.version = '9.9.9'
    writeFileSync(packFile, JSON.stringify(doc))
    const second = await dlpShared(cfg)
    expect(first.pack.version).not.toBe('9.9.9')
    expect(second.pack.version).toBe('9.9.9')
  })
})
