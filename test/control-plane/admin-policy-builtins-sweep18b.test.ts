// The admin policy (control-plane/auth.ts) is loaded with the builtin check the DLP filter already
// uses: a bundle calling a builtin the wasm runtime lacks (http.send) used to load and then deny
// EVERY admin request reaching the call with "policy evaluation failed: … not implemented"; now it
// refuses the start, naming the builtin. The shipped admin bundle still loads.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { Authorizer } from '../../control-plane/auth.ts'
import { opaBinary } from '../../policies/toolchain.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-admin-builtins-sweep18b-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function build(name: string, rego: string): string {
  const src = join(dir, name)
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'policy.rego'), rego)
  const out = join(dir, `${name}.tar.gz`)
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/admin/decision', '-o', out, src], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

describe('the admin policy and builtins the wasm runtime lacks', () => {
  it('a bundle calling http.send refuses to load, naming the builtin (it used to load and deny every request)', async () => {
    const bundle = build(
      'admin-http-send',
      `package intelgraph.admin

decision := {"allow": r.status_code == 200, "reason": "asked a remote service"} if {
	r := http.send({"method": "GET", "url": "http://127.0.0.1:9/allow"})
}
`,
    )
    await expect(Authorizer.load(bundle)).rejects.toThrow(/calls builtin the wasm runtime does not implement: http\.send/)
  })

  it('the shipped admin bundle, and one using only implemented builtins, load and decide', async () => {
    const shipped = await Authorizer.load()
    expect(shipped.decide({ sub: 'a', roles: ['admin'], attributes: [] }, 'admin.read', { type: 'config' }).allow).toBe(true)
    const plain = await Authorizer.load(
      build(
        'admin-plain',
        `package intelgraph.admin

decision := {"allow": startswith(input.action, "admin."), "reason": sprintf("action %s", [input.action])}
`,
      ),
    )
    expect(plain.decide({ sub: 'a', roles: [], attributes: [] }, 'admin.read', { type: 'config' })).toEqual({ allow: true, reason: 'action admin.read' })
  })
})
