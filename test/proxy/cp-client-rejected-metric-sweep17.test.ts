// A pushed snapshot a running proxy refuses (signed by another key than the one pinned) is NACKed
// and logged, and counted in igw_config_reload_failures_total as a refused file is: the
// IgwConfigReloadRejected alert never saw it in connected mode (only workers' refusals counted).
// Real control plane, real `igw proxy` (started on its --upstream fallback), real /metrics.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectedProxyArgs, connectedProxyEnv, seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const failures = async (p: SpawnedIgw): Promise<number> => {
  const text = await (await fetch(`${p.adminUrl}/metrics`)).text()
  const m = /^igw_config_reload_failures_total(?:\{[^}]*\})? (\d+)/m.exec(text)
  return m === null ? 0 : Number(m[1])
}

describe('a refused push on a running proxy', () => {
  let cp: TestControlPlane
  let backend: DemoBackend
  let p: SpawnedIgw | undefined
  beforeAll(async () => {
    backend = await startDemoBackend()
    cp = await startTestControlPlane({ seed: seedDocument(backend.url) })
  })
  afterAll(async () => {
    await p?.stop()
    await cp?.close()
    await backend?.close()
  })

  it('counts in igw_config_reload_failures_total, once per version', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-cprej17-'))
    // the proxy trusts another key than the one this control plane signs with
    const keyFile = join(dir, 'other.pub.pem')
    writeFileSync(keyFile, generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString())
    p = await spawnIgw([...connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: join(dir, 'state'), id: 'rejecting' }), '--upstream', backend.url], await connectedProxyEnv('proxy-rejecting'))
    // It serves its fallback; the head it refused at boot was before it ran.
    expect((await fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ __typename }' }) })).status).toBeLessThan(500)
    const before = await failures(p)
    const put = await cp.api('/v1/tenants/rejected-push', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
    expect(put.status, await put.clone().text()).toBeLessThan(300)
    await expect.poll(() => failures(p!), { timeout: 30_000, interval: 200 }).toBe(before + 1)
    expect(p.output.join('\n')).toMatch(/snapshot refused and NACKed: keeping the running config/)
  }, 90_000)
})
