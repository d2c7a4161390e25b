// Usage reports a proxy could not deliver before it stopped, sweep 25d. They were kept only in
// memory: a proxy stopped (a rollout, a node drain) while the control plane was away lost their
// counts to statements and alerts. They are kept in the state dir now and delivered at the next
// start, under their own boot id and seq, so the control plane's per-boot high-water keeps one
// that was counted after all (its answer lost at shutdown) from counting twice. Real control
// plane (SQLite), real proxy, a real closed port for "the control plane is away".
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('usage reports left undelivered at shutdown', () => {
  let cp: TestControlPlane
  let backend: RawBackend
  let proxy: TestProxy
  let stateDir: string
  let deadUrl: string
  let token: string
  const clients: ControlPlaneClient[] = []
  beforeAll(async () => {
    cp = await startTestControlPlane()
    backend = await startRawBackend((_req, res) => res.end('ok'))
    proxy = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'rest', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }] as never }] })
    stateDir = mkdtempSync(join(tmpdir(), 'igw-usage-carry-'))
    token = await cp.token({ sub: 'proxy-carry', roles: ['proxy'] })
    // A port nothing listens on: the control plane is away.
    const s = createServer()
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    deadUrl = `http://127.0.0.1:${(s.address() as AddressInfo).port}`
    await new Promise((r) => s.close(r))
  })
  afterAll(async () => {
    for (const c of clients) await c.close()
    await proxy?.close()
    await backend?.close()
    await cp?.close()
    rmSync(stateDir, { recursive: true, force: true })
  })

  const client = (url: string) => {
    const c = new ControlPlaneClient({ url, token, stateDir, proxyId: 'carry', toConfig: () => proxy.config(), usageIntervalMs: 3_600_000, log: () => undefined })
    clients.push(c)
    c.attach(proxy)
    return c
  }
  const send = async (n: number) => {
    for (let i = 0; i < n; i++) await (await request(`${proxy.url}/x`, { headers: { 'x-tenant-id': 'acme' } })).body.text()
  }
  const requests = async () => {
    const r = await cp.api('/v1/tenants/acme/statement?from=2000-01-01&to=2099-12-31')
    return ((await r.json()) as { totals: { requests?: number } }).totals.requests ?? 0
  }

  it('are delivered at the next start, once, and a copy the control plane had counted is not counted again', async () => {
    const first = client(deadUrl)
    await send(3)
    await first.close() // its closing report: not delivered
    await send(2)
    await first.flushUsage() // the CLI's last report after the drain: not delivered either
    const path = first.unsentUsagePath
    expect(existsSync(path)).toBe(true)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const saved = readFileSync(path, 'utf8')

    const second = client(cp.url)
    await second.flushUsage()
    expect(await requests()).toBe(5)
    expect(existsSync(path)).toBe(false) // delivered: not sent again by a later start

    // A run that stopped after the control plane counted its reports but before the answers came
    // back leaves them on disk: sent again, they are recognised (same boot id and seq).
    writeFileSync(path, saved, { mode: 0o600 })
    await send(1)
    const third = client(cp.url)
    await third.flushUsage()
    expect(await requests()).toBe(6)
    expect(existsSync(path)).toBe(false)
  })
})
