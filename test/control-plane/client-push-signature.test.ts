// Snapshots whose signature does not verify with the key the proxy pinned (the control plane's
// signing key was replaced: its key file lost, or a different control plane at that address).
// They are never applied, and never silently: a running proxy NACKs them (lastNack in
// GET /v1/proxies); a booting proxy NACKs the head and boots from its last-known-good, or, with
// none, exits 78 saying the signature did not verify and which key it pinned — not that the
// control plane "did not answer".
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateSigningKey, keyIdOf } from '../../control-plane/signing.ts'
import { ProxyFleet, runningVersion } from '../helpers/control-plane.ts'
import type { SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

// The proxies pin the key the control plane first starts with (fleet.keyFile).
const fleet = new ProxyFleet('sig')
const newKeyFile = join(fleet.work, 'new.pub.pem')
let oldKeyId = ''
const row = (id: string) => fleet.row(id)

beforeAll(async () => {
  oldKeyId = (await fleet.start()).store.key.keyId
})

afterAll(() => fleet.close())

describe('snapshots whose signature does not verify with the pinned key', () => {
  const state1 = join(fleet.work, 'state-1')
  let p1: SpawnedIgw
  let badVersion = 0

  it('a running proxy NACKs a snapshot signed with another key, with the reason, and keeps its config', async () => {
    p1 = await fleet.proxy('sig-1', state1)
    await waitUntil(async () => (await row('sig-1'))?.appliedVersion === 1, 10_000, 'the boot ACK')
    // The control plane's key file is replaced (same database): what it signs from now on does
    // not verify with the key the proxies pinned.
    await fleet.stopCp()
    const fresh = generateSigningKey()
    writeFileSync(join(fleet.cpDir, 'signing-key.pem'), fresh.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    writeFileSync(newKeyFile, fresh.publicKeyPem)
    const cp = await fleet.startCp()
    expect(cp.store.key.keyId).toBe(keyIdOf(fresh.publicKey))
    await waitUntil(async () => (await row('sig-1'))?.connected === true, 10_000, 'the reconnect')
    badVersion = await fleet.commitTenant('initech')
    await waitUntil(async () => (await row('sig-1'))?.lastNack?.version === badVersion, 10_000, 'the NACK of the badly signed version')
    const view = (await row('sig-1'))!
    expect(view.lastNack!.error).toMatch(/signature does not verify/)
    expect(view.lastNack!.error).toContain(oldKeyId)
    expect(view.appliedVersion).toBe(1)
    expect(await runningVersion(p1)).toBe(1)
  })

  it('a booting proxy with no last-known-good NACKs the head and exits 78 saying the signature did not verify and which key it pinned', async () => {
    const t0 = performance.now()
    const err = await fleet.proxy('sig-2', join(fleet.work, 'state-2')).then(
      () => 'started',
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
    const state3 = join(fleet.work, 'state-3')
    mkdirSync(state3)
    copyFileSync(join(state1, 'last-good.json'), join(state3, 'last-good.json'))
    const p3 = await fleet.proxy('sig-3', state3)
    expect(await runningVersion(p3)).toBe(1)
    const out = p3.output.join('\n')
    expect(out).toMatch(/signature does not verify/)
    expect(out).toMatch(/booting from the last-known-good snapshot/)
    expect(out).not.toMatch(/control plane unreachable/)
    await waitUntil(async () => (await row('sig-3'))?.lastNack?.version === badVersion, 5_000, 'the boot NACK')
    await p3.stop()
    // The operator pins the new key on purpose: the head verifies and is taken.
    const p4 = await fleet.proxy('sig-3', state3, { keyFile: newKeyFile })
    expect(await runningVersion(p4)).toBe(badVersion)
    await waitUntil(async () => (await row('sig-3'))?.appliedVersion === badVersion, 5_000, 'the ACK with the new key')
  })
})
