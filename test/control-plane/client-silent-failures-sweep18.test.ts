// A connected proxy talks to the control plane on two paths besides the stream: ACK/NACK posts and
// reconnects. Both failed silently: an ACK the control plane refused (403: the token file rotated
// to a token without the proxy role) was thrown away unread, and after the one "lost the control
// plane" line every later failed reconnect said nothing, however long it lasted. Both are logged
// now (at most once a minute each, with the status or error and a count), never with the token.
// So is a usage report the control plane did not answer (kept and retried, as before, but unsaid).
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { connectedProxyArgs, ProxyFleet, runningVersion, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

type Line = { msg?: string; status?: number; version?: number; answer?: string; error?: string; failedAttempts?: number }

function lines(p: SpawnedIgw): Line[] {
  return p.output.flatMap((l) => {
    try {
      return [JSON.parse(l) as Line]
    } catch {
      return []
    }
  })
}

describe('control plane client: failures after the first contact are logged', () => {
  const fleet = new ProxyFleet('silent18')
  let proxy: SpawnedIgw
  let tokenFile: string
  let proxyToken: string
  let viewerToken: string
  beforeAll(async () => {
    await fleet.start()
    tokenFile = join(fleet.work, 'token')
    proxyToken = await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-s18', roles: ['proxy'] })
    viewerToken = await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-s18', roles: ['viewer'] })
    writeFileSync(tokenFile, `${proxyToken}\n`)
    const stateDir = join(fleet.work, 's18')
    mkdirSync(stateDir)
    proxy = await spawnIgw([...connectedProxyArgs({ cpUrl: fleet.cpUrl, keyFile: fleet.keyFile, stateDir, id: 's18' }), '--control-plane-token-file', tokenFile], { IGW_CONTROL_PLANE_TOKEN: '', IGW_USAGE_INTERVAL_MS: '300' })
  }, 60_000)
  afterAll(async () => {
    await proxy?.stop()
    await fleet.close()
  })

  it('an ACK the control plane refuses is logged with its status (not the token)', async () => {
    await expect.poll(async () => (await fleet.row('s18'))?.appliedVersion, { timeout: 30_000, interval: 200 }).toBe(1)
    // The token file is rotated to a token without the proxy role: the open stream still
    // delivers the next version, and its ACK is refused (403).
    writeFileSync(tokenFile, `${viewerToken}\n`)
    const v = await fleet.commitTenant('acked18')
    await expect.poll(() => runningVersion(proxy), { timeout: 20_000 }).toBe(v)
    await expect.poll(() => lines(proxy).find((l) => l.msg?.startsWith('could not send ACK/NACK') === true), { timeout: 10_000 }).toMatchObject({ version: v, answer: 'ACK', status: 403 })
    // GET /v1/proxies does not show it as applied: that is what the line explains.
    expect((await fleet.row('s18'))?.appliedVersion).toBe(1)
    expect(proxy.output.join('\n')).not.toContain(viewerToken)
  }, 60_000)

  it('reconnects that keep failing after the first lost line are logged, with the attempts; the reconnect says how many failed', async () => {
    const before = lines(proxy).length
    await fleet.stopCp()
    // Traffic while it is down: its usage report cannot be delivered (kept, retried, and said).
    // connection: close: no idle keep-alive for the proxy's stop (afterAll) to wait its drain grace (1 s) on.
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' }, body: '{"query":"{ hello }"}' })
    expect(r.statusCode).toBe(200)
    await r.body.text()
    await expect.poll(() => lines(proxy).slice(before).find((l) => l.msg?.startsWith('usage report not delivered') === true), { timeout: 20_000 }).toMatchObject({ error: expect.any(String) })
    await expect.poll(() => lines(proxy).slice(before).some((l) => l.msg?.startsWith('lost the control plane') === true), { timeout: 20_000 }).toBe(true)
    await expect
      .poll(() => lines(proxy).slice(before).find((l) => l.msg?.startsWith('control plane still unreachable') === true), { timeout: 20_000 })
      .toMatchObject({ failedAttempts: expect.any(Number), error: expect.any(String) })
    const still = lines(proxy).slice(before).find((l) => l.msg?.startsWith('control plane still unreachable'))!
    expect(still.failedAttempts).toBeGreaterThanOrEqual(2)
    // Once a minute, not once per attempt.
    await new Promise((r) => setTimeout(r, 2_000))
    expect(lines(proxy).slice(before).filter((l) => l.msg?.startsWith('control plane still unreachable')).length).toBe(1)

    writeFileSync(tokenFile, `${proxyToken}\n`)
    const at = lines(proxy).length
    await fleet.startCp()
    await expect.poll(() => lines(proxy).slice(at).find((l) => l.msg === 'connected to the control plane'), { timeout: 30_000 }).toMatchObject({ failedAttempts: expect.any(Number) })
    expect(proxy.output.join('\n')).not.toContain(proxyToken)
  }, 90_000)
})
