// Usage a proxy collects while the control plane refuses its token (a rotation: the mounted
// Secret replaced before the role was granted, or a key rolled over) is kept and delivered once
// the token works again — it was dropped on any 4xx, so every report of the window was lost to
// statements and budget alerts. A real control plane, a spawned `igw proxy`, a real backend.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { connectedProxyArgs, ProxyFleet, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

describe('usage reports across a refused token', () => {
  const fleet = new ProxyFleet('usage-rotation')
  let proxy: SpawnedIgw | undefined
  beforeAll(async () => {
    await fleet.start()
  })
  afterAll(async () => {
    await proxy?.stop()
    await fleet.close()
  })

  async function requests(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const r = await request(`http://127.0.0.1:${proxy!.port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
      expect(r.statusCode).toBe(200)
      await r.body.text()
    }
  }

  async function reported(): Promise<number> {
    const day = new Date().toISOString().slice(0, 10)
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)
    const r = await fleet.cp!.api(`/v1/tenants/acme/statement?from=${yesterday}&to=${day}`)
    expect(r.status).toBe(200)
    return ((await r.json()) as { totals: { requests: number } }).totals.requests
  }

  it('reports refused with 403 (and 401) are kept and arrive once the token is accepted again', async () => {
    const tokenFile = join(fleet.work, 'token')
    const good = await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-rot', roles: ['proxy'] })
    writeFileSync(tokenFile, `${good}\n`)
    const stateDir = join(fleet.work, 'state')
    mkdirSync(stateDir)
    const args = [...connectedProxyArgs({ cpUrl: fleet.cpUrl, keyFile: fleet.keyFile, stateDir, id: 'rot' }), '--control-plane-token-file', tokenFile]
    proxy = await spawnIgw(args, { IGW_CONTROL_PLANE_TOKEN: '', IGW_USAGE_INTERVAL_MS: '300' })
    await requests(3)
    await expect.poll(reported, { timeout: 20_000, interval: 300 }).toBe(3)
    // A token without the proxy role (403), then one signed with another key (401).
    writeFileSync(tokenFile, `${await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-rot', roles: ['viewer'] })}\n`)
    await requests(4)
    await new Promise((r) => setTimeout(r, 1_000)) // several refused rounds
    writeFileSync(tokenFile, `${await mintToken('another-secret-0123456789abcdef0123456789', { sub: 'proxy-rot', roles: ['proxy'] })}\n`)
    await requests(2)
    await new Promise((r) => setTimeout(r, 1_000)) // several refused rounds
    expect(await reported()).toBe(3)
    writeFileSync(tokenFile, `${good}\n`)
    await expect.poll(reported, { timeout: 20_000, interval: 300 }).toBe(9)
    expect(proxy!.output.join('\n')).toMatch(/usage report refused by the control plane; kept and retried/)
  })
})
