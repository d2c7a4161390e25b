// The proxy's control-plane client, sweep 15. Real control plane (SQLite), real client, real
// proxy for the running case.
//  - Snapshots arrive on the config stream as many TCP reads. Each read was decoded as UTF-8 on
//    its own, so a multi-byte character (a tenant's "Café" display name) split across two reads
//    became two U+FFFD: the payload no longer matched its signature and a good snapshot was NACKed.
//  - A state dir that cannot take last-good.json (disk full) made every applied push throw out
//    of the stream loop: no ACK, "lost the control plane", a reconnect per push.
//  - An empty proxy-id file (a crash right after it was created) was read as the id "": the
//    control plane refuses that, and the proxy never connected again.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { ControlPlaneClient, type ControlPlaneClientOptions } from '../../proxy/control-plane-client.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { runningVersion, seedDocument, startTestControlPlane, type ProxyRow, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('control-plane client sweep 15', () => {
  let cp: TestControlPlane
  let backend: DemoBackend
  const clients: ControlPlaneClient[] = []
  const proxies: TestProxy[] = []
  // ~600 KB of 2- and 3-byte characters: the stream's reads (at most 64 KiB each) end inside
  // one of them at some boundary, whatever the exact read sizes are.
  const name = 'Café Ünïcode €'.repeat(40_000)
  beforeAll(async () => {
    backend = await startDemoBackend()
    const seed = seedDocument(backend.url) as { tenants: Record<string, Record<string, unknown>> }
    seed.tenants.acme!.displayName = name
    cp = await startTestControlPlane({ seed: seed as never })
  })
  afterAll(async () => {
    for (const c of clients) await c.close()
    for (const p of proxies) await p.close()
    await cp?.close()
    await backend?.close()
  })

  const client = async (id: string | undefined, stateDir: string, logs: string[], toConfig: ControlPlaneClientOptions['toConfig'] = (doc) => doc as never) => {
    const c = new ControlPlaneClient({
      url: cp.url,
      token: await cp.token({ sub: `proxy-${id ?? 'anon'}`, roles: ['proxy'] }),
      stateDir,
      ...(id === undefined ? {} : { proxyId: id }),
      toConfig,
      usageIntervalMs: 3_600_000,
      bootTimeoutMs: 10_000,
      log: (_l, o, m) => logs.push(`${m} ${JSON.stringify(o).slice(0, 300)}`),
    })
    clients.push(c)
    return c
  }
  const row = async (id: string) => ((await (await cp.api('/v1/proxies')).json()) as { items: ProxyRow[] }).items.find((i) => i.id === id)

  it('a head with non-ASCII text split across stream reads verifies and boots the proxy', async () => {
    const logs: string[] = []
    const c = await client('utf8', mkdtempSync(join(tmpdir(), 'igw-cp15-')), logs)
    const boot = await c.bootstrap()
    expect(logs.join('\n')).not.toMatch(/signature does not verify/)
    expect(boot?.source).toBe('control-plane')
    expect((boot?.config as unknown as { tenants: Record<string, { displayName: string }> }).tenants.acme!.displayName).toBe(name)
  })

  it('a push the proxy applied is ACKed even when last-good.json cannot be written; the stream stays up', async () => {
    const logs: string[] = []
    const stateDir = mkdtempSync(join(tmpdir(), 'igw-cp15-'))
    const c = await client('diskfull', stateDir, logs, (doc) => validateConfig(doc))
    const boot = await c.bootstrap()
    expect(boot?.source).toBe('control-plane')
    const proxy = await startTestProxy(seedDocument(backend.url) as never)
    proxies.push(proxy)
    c.attach(proxy)
    await c.ackBoot()
    // The next write of last-good.json fails, as on a full disk: its temporary file's name is taken.
    mkdirSync(`${c.lastGoodPath}.${process.pid}.tmp`)
    const committed = (await (await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).json()) as { version: number }
    await expect.poll(async () => runningVersion(proxy), { timeout: 15_000, interval: 200 }).toBe(committed.version)
    await expect.poll(() => logs.join('\n'), { timeout: 15_000, interval: 200 }).toMatch(/could not write the last-known-good snapshot/)
    await expect.poll(async () => (await row('diskfull'))?.appliedVersion, { timeout: 15_000, interval: 200 }).toBe(committed.version)
    expect(logs.join('\n')).not.toMatch(/lost the control plane/)
  })

  it('an empty proxy-id file in the state dir gets a new id instead of the id ""', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'igw-cp15-'))
    writeFileSync(join(stateDir, 'proxy-id'), '')
    const c = await client(undefined, stateDir, [])
    expect(c.proxyId).not.toBe('')
    const boot = await c.bootstrap()
    expect(boot?.source).toBe('control-plane')
    // … and the new id is kept for the next start.
    const again = await client(undefined, stateDir, [])
    expect(again.proxyId).toBe(c.proxyId)
  })
})
