// A bundle's own data document (data.json, built in by `opa build` from the data files beside the
// Rego) and the data the gateway adds (config dlp.policy.allowedPresets → data.igw.dlp.allowed_presets)
// are merged the way OPA merges data: both reach the policy. Real opa CLI builds the bundles,
// real opa-wasm evaluates them, and the DLP consumer is the real proxy.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadPolicyBundle } from '../../policies/engine.ts'
import { opaBinary } from '../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-bundle-data-sweep16-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Build a folder of Rego and data files into a wasm bundle with the real opa CLI. */
function build(name: string, files: Record<string, string>, entrypoint: string): string {
  const src = join(dir, name)
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(src, path, '..'), { recursive: true })
    writeFileSync(join(src, path), text)
  }
  const out = join(dir, `${name}.tar.gz`)
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', entrypoint, '-o', out, src], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

// An operator's export policy: the shipped preset rule, plus a list of tenants allowed to export
// at all, kept as data beside the Rego (igw/dlp/data.json → data.igw.dlp.export_tenants).
const OPERATOR_DLP = {
  'policy.rego': `package intelgraph.dlp

default allow := false

allow if {
	input.preset in data.igw.dlp.allowed_presets
	input.tenant in data.igw.dlp.export_tenants
}

reason := "allowed" if allow

reason := concat("", ["tenant ", input.tenant, " may not export"]) if not allow

decision := {"allow": allow, "reason": reason, "tenants": object.get(data.igw.dlp, "export_tenants", null), "presets": object.get(data.igw.dlp, "allowed_presets", null)}
`,
  'igw/dlp/data.json': '{"export_tenants": ["acme"], "allowed_presets": ["bundle_default"]}',
  'other/data.json': '{"untouched": true}',
}

describe('bundle data and the gateway data are merged, not one replacing the other', () => {
  it('the policy sees both data.igw.dlp.* from the bundle and the allowed presets the gateway passes', async () => {
    const bundle = build('operator-dlp', OPERATOR_DLP, 'intelgraph/dlp/decision')
    // Alone: the bundle's data document is what the policy reads.
    const alone = await loadPolicyBundle(bundle)
    expect(alone.evaluate({ preset: 'bundle_default', tenant: 'acme' })).toMatchObject({ allow: true, tenants: ['acme'], presets: ['bundle_default'] })
    // With the gateway's data (what the DLP filter passes): its leaves win, the bundle's siblings stay.
    // Before: a shallow spread replaced the whole `igw` tree, so export_tenants vanished and every
    // tenant was denied.
    const merged = await loadPolicyBundle(bundle, { igw: { dlp: { allowed_presets: ['tokenize_strict'] } } })
    expect(merged.evaluate({ preset: 'tokenize_strict', tenant: 'acme' })).toMatchObject({ allow: true, reason: 'allowed', tenants: ['acme'], presets: ['tokenize_strict'] })
    expect(merged.evaluate({ preset: 'bundle_default', tenant: 'acme' })).toMatchObject({ allow: false })
    expect(merged.evaluate({ preset: 'tokenize_strict', tenant: 'globex' })).toMatchObject({ allow: false, reason: 'tenant globex may not export' })
  })

  it('a data.json that does not parse is refused at load, naming the bundle file', async () => {
    const bundle = build('plain-dlp', { 'policy.rego': 'package intelgraph.dlp\n\ndecision := {"allow": true, "reason": "ok"}\n' }, 'intelgraph/dlp/decision')
    // Rewrite its data.json into something that is not JSON (a hand-edited bundle).
    const unpacked = join(dir, 'unpacked')
    mkdirSync(unpacked, { recursive: true })
    expect(spawnSync('tar', ['xzf', bundle, '-C', unpacked]).status).toBe(0)
    writeFileSync(join(unpacked, 'data.json'), '{"igw": ')
    const broken = join(dir, 'broken-data.tar.gz')
    expect(spawnSync('tar', ['czf', broken, '-C', unpacked, 'policy.wasm', 'data.json', '.manifest']).status).toBe(0)
    await expect(loadPolicyBundle(broken)).rejects.toThrow(`${broken}: data.json is not JSON`)
  })
})

describe('an operator DLP bundle with its own data, through the real proxy', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"items":[{"id":1,"note":"nothing sensitive"}]}')
    })
    const bundle = build('operator-dlp-proxy', OPERATOR_DLP, 'intelgraph/dlp/decision')
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {}, globex: {} },
      // allowedPresets is the default (["tokenize_strict"]): the gateway always passes data.igw.dlp.allowed_presets.
      dlp: { keyring: { file: join(dir, 'keys', 'keyring.json') }, policy: { bundle } },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('the tenant the bundle data lists exports; the other is refused with the policy reason', async () => {
    const acme = await request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': 'acme' } })
    const acmeBody = await acme.body.text()
    // Before: 403 "tenant acme may not export" (the bundle's export_tenants was dropped).
    expect([acme.statusCode, acmeBody]).toEqual([200, expect.stringContaining('nothing sensitive')])
    const globex = await request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': 'globex' } })
    expect(globex.statusCode).toBe(403)
    const body = (await globex.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(body.errors[0]).toMatchObject({ message: expect.stringContaining('tenant globex may not export'), extensions: { code: 'DLP_BLOCKED' } })
  })
})
