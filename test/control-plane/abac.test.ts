// ABAC decisions from the compiled admin policy (Rego → wasm with the real opa CLI, evaluated
// with opa-wasm): the same answers as `opa eval` on the source, and the Authorizer's errors.
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { AuthError, Authenticator, Authorizer, mintToken } from '../../control-plane/auth.ts'
import { POLICY_BUNDLES, ROOT } from '../../policies/catalog.ts'
import { opaBinary } from '../../policies/toolchain.ts'

const cases: { name: string; input: Record<string, unknown>; allow: boolean }[] = [
  { name: 'viewer reads', input: { subject: { sub: 'v', roles: ['viewer'] }, action: 'admin.read', resource: { type: 'tenants' } }, allow: true },
  { name: 'viewer writes', input: { subject: { sub: 'v', roles: ['viewer'] }, action: 'admin.write', resource: { type: 'tenants' } }, allow: false },
  { name: 'operator writes routes', input: { subject: { sub: 'o', roles: ['operator'] }, action: 'admin.write', resource: { type: 'routes', id: 'r' } }, allow: true },
  { name: 'scoped operator, own tenant', input: { subject: { sub: 'o', roles: ['operator'], tenant: 'acme' }, action: 'admin.write', resource: { type: 'quotas', tenant: 'acme' } }, allow: true },
  { name: 'scoped operator, other tenant', input: { subject: { sub: 'o', roles: ['operator'], tenant: 'acme' }, action: 'admin.write', resource: { type: 'quotas', tenant: 'globex' } }, allow: false },
  { name: 'scoped admin, global resource', input: { subject: { sub: 'a', roles: ['admin'], tenant: 'acme' }, action: 'admin.write', resource: { type: 'routes' } }, allow: false },
  { name: 'reviewer reviews', input: { subject: { sub: 'r', roles: ['dlp-reviewer'] }, action: 'dlp.review', resource: { type: 'dlp' } }, allow: true },
  { name: 'reviewer detokenizes', input: { subject: { sub: 'r', roles: ['dlp-reviewer'] }, action: 'dlp.detokenize', resource: { type: 'dlp' }, context: { justification: 'ticket 12345' } }, allow: false },
  { name: 'officer without justification', input: { subject: { sub: 'd', roles: ['dlp-officer'] }, action: 'dlp.detokenize', resource: { type: 'dlp' } }, allow: false },
  { name: 'officer with justification', input: { subject: { sub: 'd', roles: ['dlp-officer'] }, action: 'dlp.detokenize', resource: { type: 'dlp' }, context: { justification: 'ticket 12345' } }, allow: true },
  { name: 'attribute in the token', input: { subject: { sub: 'x', attributes: ['admin.read'] }, action: 'admin.read', resource: { type: 'audit' } }, allow: true },
  { name: 'proxy reads config', input: { subject: { sub: 'p', roles: ['proxy'] }, action: 'admin.read', resource: { type: 'config' } }, allow: false },
  { name: 'proxy syncs', input: { subject: { sub: 'p', roles: ['proxy'] }, action: 'proxy.sync', resource: { type: 'stream' } }, allow: true },
  { name: 'unknown role', input: { subject: { sub: 'x', roles: ['root'] }, action: 'admin.write', resource: { type: 'config' } }, allow: false },
  { name: 'no subject', input: { action: 'admin.read', resource: { type: 'config' } }, allow: false },
  { name: 'admin uploads a plugin', input: { subject: { sub: 'a', roles: ['admin'] }, action: 'plugins.write', resource: { type: 'plugins' } }, allow: true },
  { name: 'plugin publisher uploads', input: { subject: { sub: 'ci', roles: ['plugin-publisher'] }, action: 'plugins.write', resource: { type: 'plugins' } }, allow: true },
  { name: 'plugin publisher edits routes', input: { subject: { sub: 'ci', roles: ['plugin-publisher'] }, action: 'admin.write', resource: { type: 'routes' } }, allow: false },
  { name: 'operator uploads a plugin', input: { subject: { sub: 'o', roles: ['operator'] }, action: 'plugins.write', resource: { type: 'plugins' } }, allow: false },
  { name: 'tenant-scoped admin uploads a plugin', input: { subject: { sub: 'a', roles: ['admin'], tenant: 'acme' }, action: 'plugins.write', resource: { type: 'plugins' } }, allow: false },
]

describe('admin ABAC policy (compiled bundle)', () => {
  it.each(cases)('$name → allow=$allow, same decision as `opa eval` on the Rego', async ({ input, allow }) => {
    const authz = await Authorizer.load()
    const d = authz.decide(input.subject as never, input.action as string, input.resource as never, (input.context ?? {}) as Record<string, unknown>)
    expect(d.allow).toBe(allow)
    if (allow) expect(d.reason).toBe('allowed')
    else expect(d.reason).not.toBe('allowed')
    const spec = POLICY_BUNDLES.find((b) => b.name === 'admin')!
    const r = spawnSync(opaBinary(), ['eval', '--format', 'json', '--stdin-input', '-d', spec.dir, 'data.intelgraph.admin.decision'], { cwd: ROOT, input: JSON.stringify({ context: {}, ...input }), encoding: 'utf8' })
    expect(r.status).toBe(0)
    const viaCli = (JSON.parse(r.stdout) as { result: { expressions: { value: unknown }[] }[] }).result[0]!.expressions[0]!.value
    expect(d).toEqual(viaCli)
  })

  it('require() throws 403 with the policy reason; authentication errors are 401 with the reason', async () => {
    const authz = await Authorizer.load()
    expect(() => authz.require({ sub: 'v', roles: ['viewer'], attributes: [] }, 'admin.write', { type: 'routes', id: 'r1' })).toThrow(new AuthError(403, 'admin.write on routes/r1 denied: subject lacks the "admin.write" attribute'))
    const secret = 'abac-test-secret-0123456789abcdefghij'
    const authn = new Authenticator({ secret, issuer: 'igw-test' })
    const good = await mintToken(secret, { sub: 'ann', roles: ['viewer'], tenant: 'acme' }, { issuer: 'igw-test' })
    expect(await authn.authenticate(`Bearer ${good}`)).toEqual({ sub: 'ann', roles: ['viewer'], attributes: [], tenant: 'acme' })
    const wrongIssuer = await mintToken(secret, { sub: 'ann' }, { issuer: 'elsewhere' })
    await expect(authn.authenticate(`Bearer ${wrongIssuer}`)).rejects.toMatchObject({ status: 401, message: expect.stringMatching(/^token claim "iss" rejected: unexpected "iss" claim value/) })
    const expired = await mintToken(secret, { sub: 'ann' }, { issuer: 'igw-test', expiresIn: '-1h' })
    await expect(authn.authenticate(`Bearer ${expired}`)).rejects.toMatchObject({ status: 401, message: 'token expired' })
    await expect(authn.authenticate('Basic abc')).rejects.toMatchObject({ status: 401 })
    expect(() => new Authenticator({ secret: 'short' })).toThrow(/32 characters/)
    expect(() => new Authenticator({})).toThrow(/--auth-jwks, --auth-public-key or --auth-secret/)
  })
})
