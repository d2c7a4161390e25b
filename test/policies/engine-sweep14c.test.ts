// The policy engine and the shipped Rego under inputs they were not written for: evaluation
// errors (conflicts, builtins the wasm runtime lacks, unknown entrypoints), broken bundles,
// malformed subjects. Real opa CLI builds the bundles, real opa-wasm evaluates them, and the
// consumers are the real ones (the control plane's Authorizer and HTTP API, the proxy's DLP filter).
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Authorizer } from '../../control-plane/auth.ts'
import { loadPolicyBundle } from '../../policies/engine.ts'
import { opaBinary } from '../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-policy-sweep14c-'))

/** Build one Rego file into a wasm bundle with the real opa CLI (no capabilities restriction). */
function build(name: string, rego: string, entrypoint: string): string {
  const src = join(dir, name)
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'policy.rego'), rego)
  const out = join(dir, `${name}.tar.gz`)
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', entrypoint, '-o', out, src], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

// Two complete definitions that disagree for action "conflict": it compiles, and evaluating it
// aborts inside the wasm (the way a broken policy update or an operator's bundle would).
const CONFLICT_ADMIN = `package intelgraph.admin

decision := {"allow": true, "reason": "a"} if input.action == "conflict"

decision := {"allow": false, "reason": "b"} if input.action == "conflict"

decision := {"allow": true, "reason": "fine"} if input.action == "admin.read"
`

describe('a policy evaluation that fails does not break the evaluator', () => {
  it('after 1000 failing decisions the admin Authorizer still allows what the policy allows, and the reason names the cause', async () => {
    const authz = await Authorizer.load(build('conflict-admin', CONFLICT_ADMIN, 'intelgraph/admin/decision'))
    const subject = { sub: 'a', roles: ['admin'], attributes: [] }
    for (let i = 0; i < 1000; i++) {
      const d = authz.decide(subject, 'conflict', { type: 'config' })
      expect(d.allow).toBe(false)
      // Before: the wasm's string exception read as "policy evaluation failed: undefined".
      if (i === 0) expect(d.reason).toMatch(/^policy evaluation failed: .*var assignment conflict/)
    }
    // Before: every abort leaked wasm stack; from the 512th on, every decision (this one too)
    // failed with "memory access out of bounds": the control plane denied everyone forever.
    expect(authz.decide(subject, 'admin.read', { type: 'config' })).toEqual({ allow: true, reason: 'fine' })
  })

  it('a builtin the wasm runtime lacks (http.send) is a PolicyEvaluationError naming it, and thousands of them leave the policy working', async () => {
    const bundle = build(
      'http-send',
      `package intelgraph.dlp

decision := {"allow": r.status_code == 200, "reason": "remote"} if {
	input.remote
	r := http.send({"method": "GET", "url": "http://127.0.0.1:9/"})
}

decision := {"allow": true, "reason": "local"} if not input.remote
`,
      'intelgraph/dlp/decision',
    )
    const policy = await loadPolicyBundle(bundle)
    let err: unknown
    try {
      policy.evaluate({ remote: true })
    } catch (e) {
      err = e
    }
    // A real Error (PolicyEvaluationError), not the plain object opa-wasm throws.
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).name).toBe('PolicyEvaluationError')
    expect((err as Error).message).toMatch(/intelgraph\/dlp\/decision.*not implemented: built-in function .*http\.send/)
    for (let i = 0; i < 5000; i++) expect(() => policy.evaluate({ remote: true })).toThrow(/http\.send/)
    expect(policy.evaluate({ remote: false })).toEqual({ allow: true, reason: 'local' })
  })

  it('an entrypoint the bundle lacks: a clear error at evaluation, and at load when the caller names it', async () => {
    const policy = await loadPolicyBundle('dlp')
    expect(() => policy.evaluate({}, 'intelgraph/dlp/decisoin')).toThrow(/entrypoint "intelgraph\/dlp\/decisoin" is not in this bundle \(entrypoints: intelgraph\/dlp\/decision\)/)
    // Still usable afterwards.
    expect(policy.evaluate({ preset: 'tokenize_strict' }, 'intelgraph/dlp/decision')).toEqual({ allow: true, reason: 'allowed' })
    await expect(loadPolicyBundle('admin', undefined, { entrypoints: ['intelgraph/dlp/decision'] })).rejects.toThrow(/no entrypoint "intelgraph\/dlp\/decision" \(it has: intelgraph\/admin\/decision\)/)
    await expect(loadPolicyBundle('admin', undefined, { entrypoints: ['intelgraph/admin/decision'] })).resolves.toBeDefined()
  })

  it('a corrupt or empty bundle file: the error names the file (not just "incorrect header check")', async () => {
    const garbage = join(dir, 'garbage.tar.gz')
    writeFileSync(garbage, 'this is not gzip')
    await expect(loadPolicyBundle(garbage)).rejects.toThrow(`${garbage}: not a readable policy bundle`)
    const empty = join(dir, 'empty.tar.gz')
    writeFileSync(empty, '')
    await expect(loadPolicyBundle(empty)).rejects.toThrow(`${empty}: not a readable policy bundle`)
    await expect(loadPolicyBundle('no-such-bundle')).rejects.toThrow(/ENOENT.*names a bundle in the catalog: dlp, admin/)
  })
})

describe('the DLP export policy through the real proxy, when an operator bundle fails for some tenants', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"items":[{"id":1,"note":"nothing sensitive"}]}')
    })
    const bundle = build(
      'conflict-dlp',
      `package intelgraph.dlp

decision := {"allow": true, "reason": "a"} if input.tenant == "globex"

decision := {"allow": false, "reason": "b"} if input.tenant == "globex"

decision := {"allow": true, "reason": "allowed"} if input.tenant == "acme"
`,
      'intelgraph/dlp/decision',
    )
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {}, globex: {} },
      dlp: { keyring: { file: join(dir, 'keys', 'keyring.json') }, policy: { bundle } },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const get = (tenant: string) => request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': tenant } })

  it('1000 failing exports of one tenant deny (logged with the cause) and leave the other tenant exporting', async () => {
    const first = await get('acme')
    expect(first.statusCode).toBe(200)
    await first.body.text()
    // Twice the 512 failures that broke the old instance (a deterministic count, not a timing),
    // in 4 lanes: the worker evaluates one at a time either way, the round trips overlap.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let i = 0; i < 250; i++) {
          const r = await get('globex')
          expect(r.statusCode).toBe(403)
          const body = (await r.body.json()) as { errors: { extensions: { code: string } }[] }
          expect(body.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
        }
      }),
    )
    // Before: from the 512th failure on, the worker's policy instance was corrupt and every
    // export (acme's too) was denied until the proxy restarted.
    const after = await get('acme')
    expect(after.statusCode).toBe(200)
    expect(await after.body.text()).toContain('nothing sensitive')
    await expect.poll(() => proxy.logs.find('DLP policy evaluation failed').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(1000)
    const line = proxy.logs.find('DLP policy evaluation failed')[0] as { err?: { message?: string } }
    // Before: `message` was undefined (opa-wasm throws a string, not an Error).
    expect(line.err?.message).toMatch(/var assignment conflict/)
  }, 120_000)
})

describe('the shipped admin policy under malformed subjects', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  const decide = async (body: unknown) => {
    const r = await cp.api('/v1/policies/admin/decide', { method: 'POST', body: JSON.stringify(body) })
    expect(r.status).toBe(200)
    return (await r.json()) as { allow: boolean; reason: string }
  }

  it.each([null, 7, false, ['acme'], { id: 'acme' }, ''])('a tenant claim %j is a scope, never "no tenant" (dry run over HTTP)', async (tenant) => {
    // Before: any tenant value but a string left the subject unscoped: global authority.
    expect(await decide({ subject: { sub: 't', roles: ['admin'], tenant }, action: 'admin.write', resource: { type: 'config' } })).toEqual({
      allow: false,
      reason: "subject's tenant claim is not a non-empty string",
    })
    expect((await decide({ subject: { sub: 't', roles: ['admin'], tenant }, action: 'admin.write', resource: { type: 'quotas', tenant } })).allow).toBe(false)
  })

  it('roles or attributes given as an object grant nothing (the committed wasm bundle)', async () => {
    const admin = await loadPolicyBundle('admin')
    const e = 'intelgraph/admin/decision'
    expect(admin.evaluate({ subject: { sub: 'x', roles: { r: 'admin' } }, action: 'admin.write', resource: { type: 'config' } }, e)).toMatchObject({ allow: false })
    expect(admin.evaluate({ subject: { sub: 'x', attributes: { a: 'admin.write' } }, action: 'admin.write', resource: { type: 'config' } }, e)).toMatchObject({ allow: false })
    // What a well-formed subject gets is unchanged.
    expect(admin.evaluate({ subject: { sub: 'x', roles: ['admin'], tenant: 'acme' }, action: 'admin.write', resource: { type: 'quotas', tenant: 'acme' } }, e)).toEqual({ allow: true, reason: 'allowed' })
    expect(admin.evaluate({ subject: { sub: 'x', roles: ['admin'], tenant: 'acme' }, action: 'admin.write', resource: { type: 'quotas', tenant: 'globex' } }, e)).toEqual({
      allow: false,
      reason: 'subject is scoped to tenant "acme"; this resource is outside it',
    })
  })
})

describe('the shipped DLP export policy', () => {
  it('with no allowed preset (dlp.policy.allowedPresets: []) the reason says so instead of "(allowed: )"', async () => {
    const dlp = await loadPolicyBundle('dlp', { igw: { dlp: { allowed_presets: [] } } })
    expect(dlp.evaluate({ preset: 'tokenize_strict' }, 'intelgraph/dlp/decision')).toEqual({
      allow: false,
      reason: 'preset "tokenize_strict" is not allowed for exports (no preset is allowed)',
    })
  })
})
