// A proxy that booted from its last-known-good snapshot while the control plane was away, once
// the control plane is back and confirms that version as its head (`event: current`), runs the
// control plane's config: /readyz and /config say `source: control-plane`. It said
// `last-known-good` until the next push, so an alert on source != control-plane kept firing for
// a proxy that was in sync. Real control plane (SQLite, restarted on its port and data), real
// `igw proxy` process.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { connectedProxyArgs, connectedProxyEnv, seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'


async function where(p: SpawnedIgw): Promise<{ readyz: unknown; config: unknown }> {
  const r = (await (await fetch(`${p.adminUrl}/readyz`)).json()) as { version: number; source: string }
  const c = (await (await fetch(`${p.adminUrl}/config`)).json()) as { version: number; source: string }
  return { readyz: { version: r.version, source: r.source }, config: { version: c.version, source: c.source } }
}

describe('a proxy booted from its last-known-good snapshot', () => {
  let backend: DemoBackend | undefined
  let cp: TestControlPlane | undefined
  const spawned: SpawnedIgw[] = []
  afterAll(async () => {
    for (const p of spawned) await p.stop()
    await cp?.close()
    await backend?.close()
  })

  it('says control-plane once the control plane is back and confirms that version as its head', async () => {
    backend = await startDemoBackend()
    cp = await startTestControlPlane({ seed: seedDocument(backend.url) })
    const { dir, port } = { dir: cp.dir, port: cp.port }
    const keyFile = join(dir, 'cp.pub.pem')
    writeFileSync(keyFile, cp.store.key.publicKeyPem)
    const stateDir = join(dir, 'lkg36')
    const args = connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir, id: 'lkg36' })
    const env = await connectedProxyEnv('proxy-lkg36')
    // A first run keeps version 1 as its last-known-good.
    const first = await spawnIgw(args, env)
    spawned.push(first)
    await expect.poll(async () => (await where(first)).readyz, { timeout: 20_000 }).toEqual({ version: 1, source: 'control-plane' })
    await first.stop()
    await cp.close()
    cp = undefined
    // Restarted while the control plane is away: it boots from the snapshot.
    const second = await spawnIgw(args, env)
    spawned.push(second)
    expect(await where(second)).toEqual({ readyz: { version: 1, source: 'last-known-good' }, config: { version: 1, source: 'last-known-good' } })
    // The control plane comes back (same port, same data and key): its head is version 1.
    cp = await startTestControlPlane({ dir, port, seed: null })
    await expect.poll(async () => (await where(second)).readyz, { timeout: 30_000, interval: 200 }).toEqual({ version: 1, source: 'control-plane' })
    expect((await where(second)).config).toEqual({ version: 1, source: 'control-plane' })
    expect(second.output.some((l) => l.includes('the control plane confirmed the running last-known-good version as its head'))).toBe(true)
  }, 90_000)
})
