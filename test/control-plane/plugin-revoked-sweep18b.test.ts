// A publisher key removed from the plugin trust file (revoked: compromised, retired) left every
// plugin it had signed listed exactly like a trusted one: GET /v1/plugins gave no way to tell.
// Each plugin now carries `trust` — `trusted` when the key that signed it is in the trust file the
// control plane runs with and the stored signature verifies with it, `revoked` otherwise (the key
// removed, or its kid now naming another key) — and `?trust=revoked` lists those. Real ed25519
// keys and signatures, a real control plane restarted on the same SQLite file with a new trust file.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadPluginTrust } from '../../control-plane/plugin-trust.ts'
import { capturingLogger, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage, writeTrustFile } from '../helpers/plugins.ts'
import { Conformance } from './openapi-conformance.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-plugin-revoked-sweep18b-'))
const open: TestControlPlane[] = []
afterAll(async () => {
  for (const cp of open) await cp.close().catch(() => undefined)
  rmSync(scratch, { recursive: true, force: true })
})

const acme = makePublisher('acme', 'acme-2026')
const beta = makePublisher('beta', 'beta-1')
const artifact = (s: string) => Buffer.from(`\0asm\x01\0\0\0 ${s}`)

interface Listed {
  name: string
  version: string
  publisher: string
  trust: string
}

describe('plugins signed by a key that is no longer trusted', () => {
  it('are listed as trust "revoked" (and filtered by ?trust=), while the others stay "trusted"', async () => {
    const dir = mkdtempSync(join(scratch, 'cp-'))
    let cp = await startTestControlPlane({ dir, pluginTrust: loadPluginTrust(writeTrustFile(join(scratch, 'both.json'), [acme, beta])) })
    open.push(cp)
    let oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
    const up = await cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(signedPackage(acme, { name: 'geo', version: '1.0.0', artifact: artifact('geo') })) })
    expect(await oa.check(up, 'POST', '/v1/plugins')).toMatchObject({ name: 'geo', trust: 'trusted' })
    for (const v of ['1.0.0', '1.1.0']) {
      const r = await cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(signedPackage(beta, { name: 'beta-tool', version: v, artifact: artifact(`beta ${v}`) })) })
      expect(r.status).toBe(201)
    }
    const before = (await oa.check(await cp.api('/v1/plugins'), 'GET', '/v1/plugins')) as { items: Listed[] }
    expect(before.items.map((p) => [p.name, p.version, p.trust])).toEqual([
      ['beta-tool', '1.0.0', 'trusted'],
      ['beta-tool', '1.1.0', 'trusted'],
      ['geo', '1.0.0', 'trusted'],
    ])
    await cp.close()
    open.pop()

    // beta's key is revoked: the trust file no longer has it. Said at start, too.
    const log = capturingLogger()
    cp = await startTestControlPlane({ dir, logger: log.logger, pluginTrust: loadPluginTrust(writeTrustFile(join(scratch, 'acme-only.json'), [acme])) })
    open.push(cp)
    expect(log.lines.find((l) => /no longer holds \(revoked\)/.test(String(l.msg)))).toMatchObject({ count: 2, plugins: ['beta/beta-tool@1.0.0', 'beta/beta-tool@1.1.0'], keyIds: ['beta:beta-1'] })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
    const after = (await oa.check(await cp.api('/v1/plugins'), 'GET', '/v1/plugins')) as { items: Listed[] }
    expect(after.items.map((p) => [p.name, p.version, p.trust])).toEqual([
      ['beta-tool', '1.0.0', 'revoked'],
      ['beta-tool', '1.1.0', 'revoked'],
      ['geo', '1.0.0', 'trusted'],
    ])
    const revoked = (await oa.check(await cp.api('/v1/plugins?trust=revoked&limit=1'), 'GET', '/v1/plugins')) as { items: Listed[]; next?: string }
    expect(revoked.items.map((p) => `${p.name}@${p.version}`)).toEqual(['beta-tool@1.0.0'])
    expect(revoked.next).toMatch(/trust=revoked/)
    const rest = (await oa.check(await cp.api(revoked.next!), 'GET', '/v1/plugins')) as { items: Listed[]; next?: string }
    expect(rest.items.map((p) => `${p.name}@${p.version}`)).toEqual(['beta-tool@1.1.0'])
    expect(rest.next).toBeUndefined()
    const trusted = (await oa.check(await cp.api('/v1/plugins?trust=trusted'), 'GET', '/v1/plugins')) as { items: Listed[] }
    expect(trusted.items.map((p) => p.name)).toEqual(['geo'])
    const bad = await cp.api('/v1/plugins?trust=maybe')
    expect(((await oa.check(bad, 'GET', '/v1/plugins')) as { status: number }).status).toBe(400)
    // And nothing new is accepted from the revoked key.
    const refused = await cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(signedPackage(beta, { name: 'beta-tool', version: '1.2.0', artifact: artifact('beta 1.2.0') })) })
    expect(refused.status).toBe(422)
    await cp.close()
    open.pop()

    // The same kid now naming ANOTHER key (the old one replaced under its id): what the old key
    // signed does not verify with it, so it is not vouched for either.
    const betaRekeyed = makePublisher('beta', 'beta-1')
    cp = await startTestControlPlane({ dir, pluginTrust: loadPluginTrust(writeTrustFile(join(scratch, 'rekeyed.json'), [acme, betaRekeyed])) })
    open.push(cp)
    const rekeyed = (await (await cp.api('/v1/plugins?publisher=beta')).json()) as { items: Listed[] }
    expect(rekeyed.items.map((p) => p.trust)).toEqual(['revoked', 'revoked'])
  })
})
