// Snapshots whose signature does not verify with the key the proxy pinned (the control plane's
// signing key was replaced: its key file lost, or a different control plane at that address).
// They are never applied, and never silently: a running proxy NACKs them (lastNack in
// GET /v1/proxies); a booting proxy NACKs the head and boots from its last-known-good, or, with
// none, exits 78 saying the signature did not verify and which key it pinned — not that the
// control plane "did not answer".
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateSigningKey, keyIdOf } from '../../control-plane/signing.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { connectedProxyArgs, connectedProxyEnv, runningVersion, seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

let backend: DemoBackend
let cp: TestControlPlane | undefined
const cpDir = mkdtempSync(join(tmpdir(), 'igw-sig-cp-'))
let cpPort = 0
const work = mkdtempSync(join(tmpdir(), 'igw-sig-'))
const oldKeyFile = join(work, 'old.pub.pem')
const newKeyFile = join(work, 'new.pub.pem')
let oldKeyId = ''
const proxies: SpawnedIgw[] = []

interface ProxyRow {
  id: string
  appliedVersion: number | null
  lastNack: { version: number; error: string } | null
}

async function startCp(): Promise<TestControlPlane> {
  cp = await startTestControlPlane({ dir: cpDir, port: cpPort, seed: seedDocument(backend.url) })
  cpPort = cp.port
  return cp
}

const proxyArgs = (id: string, stateDir: string, keyFile: string) => connectedProxyArgs({ cpUrl: `http://127.0.0.1:${cpPort}`, keyFile, stateDir, id })

async function startIgwProxy(id: string, stateDir: string, keyFile = oldKeyFile): Promise<SpawnedIgw> {
  const p = await spawnIgw(proxyArgs(id, stateDir, keyFile), await connectedProxyEnv(`proxy-${id}`))
  proxies.push(p)
  return p
}

const row = async (id: string) => ((await (await cp!.api('/v1/proxies')).json()) as { items: ProxyRow[] }).items.find((i) => i.id === id)
const commitTenant = async (name: string) => ((await (await cp!.api(`/v1/tenants/${name}`, { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).json()) as { version: number }).version

beforeAll(async () => {
  backend = await startDemoBackend({ host: '127.0.0.1', port: 0 })
  await startCp()
  writeFileSync(oldKeyFile, cp!.store.key.publicKeyPem)
  oldKeyId = cp!.store.key.keyId
})

afterAll(async () => {
  for (const p of proxies) await p.stop()
  await cp?.close()
  await backend?.close()
  rmSync(work, { recursive: true, force: true })
  rmSync(cpDir, { recursive: true, force: true })
})

describe('snapshots whose signature does not verify with the pinned key', () => {
  const state1 = join(work, 'state-1')
  let p1: SpawnedIgw
  let badVersion = 0

  it('a running proxy NACKs a snapshot signed with another key, with the reason, and keeps its config', async () => {
    p1 = await startIgwProxy('sig-1', state1)
    await waitUntil(async () => (await row('sig-1'))?.appliedVersion === 1, 10_000, 'the boot ACK')
    // The control plane's key file is replaced (same database): what it signs from now on does
    // not verify with the key the proxies pinned.
    await cp!.close()
    const fresh = generateSigningKey()
    writeFileSync(join(cpDir, 'signing-key.pem'), fresh.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    writeFileSync(newKeyFile, fresh.publicKeyPem)
    await startCp()
    expect(cp!.store.key.keyId).toBe(keyIdOf(fresh.publicKey))
    await waitUntil(async () => (await (await cp!.api('/v1/proxies')).json() as { items: { id: string; connected: boolean }[] }).items.some((i) => i.id === 'sig-1' && i.connected), 10_000, 'the reconnect')
    badVersion = await commitTenant('initech')
    await waitUntil(async () => (await row('sig-1'))?.lastNack?.version === badVersion, 10_000, 'the NACK of the badly signed version')
    const view = (await row('sig-1'))!
    expect(view.lastNack!.error).toMatch(/signature does not verify/)
    expect(view.lastNack!.error).toContain(oldKeyId)
    expect(view.appliedVersion).toBe(1)
    expect(await runningVersion(p1)).toBe(1)
  })

  it('a booting proxy with no last-known-good NACKs the head and exits 78 saying the signature did not verify and which key it pinned', async () => {
    const t0 = performance.now()
    const err = await spawnIgw(proxyArgs('sig-2', join(work, 'state-2'), oldKeyFile), { IGW_CONTROL_PLANE_TOKEN: (await connectedProxyEnv('proxy-sig-2')).IGW_CONTROL_PLANE_TOKEN }).then(
      (p) => {
        proxies.push(p)
        return 'started'
      },
      (e: Error) => e.message,
    )
    const ms = performance.now() - t0
    expect(err).toMatch(/exited with 78/)
    expect(err).toMatch(/signature does not verify/)
    expect(err).toContain(oldKeyId)
    expect(err).not.toMatch(/did not answer/)
    // It knew at once: no waiting out the 5 s boot timeout.
    expect(ms).toBeLessThan(4_500)
    await waitUntil(async () => (await row('sig-2'))?.lastNack?.version === badVersion, 5_000, 'the boot NACK')
    expect((await row('sig-2'))!.lastNack!.error).toMatch(/signature does not verify/)
  })

  it('a booting proxy with a last-known-good boots from it, NACKs the head and says why', async () => {
    const state3 = join(work, 'state-3')
    mkdirSync(state3)
    copyFileSync(join(state1, 'last-good.json'), join(state3, 'last-good.json'))
    const p3 = await startIgwProxy('sig-3', state3)
    expect(await runningVersion(p3)).toBe(1)
    const out = p3.output.join('\n')
    expect(out).toMatch(/signature does not verify/)
    expect(out).toMatch(/booting from the last-known-good snapshot/)
    expect(out).not.toMatch(/control plane unreachable/)
    await waitUntil(async () => (await row('sig-3'))?.lastNack?.version === badVersion, 5_000, 'the boot NACK')
    await p3.stop()
    // The operator pins the new key on purpose: the head verifies and is taken.
    const p4 = await startIgwProxy('sig-3', state3, newKeyFile)
    expect(await runningVersion(p4)).toBe(badVersion)
    await waitUntil(async () => (await row('sig-3'))?.appliedVersion === badVersion, 5_000, 'the ACK with the new key')
  })
})
