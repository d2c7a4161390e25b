// The last-known-good across a planned replacement of the control plane's signing key, sweep 30aa.
// The control plane restarted with a new --signing-key (the old one in --previous-keys) and the
// proxy re-pinned (--control-plane-key new): a proxy restarted while the control plane was away
// refused its last-known-good — kept under the old key, "signature does not verify" — and, with no
// other config, exited 78: the outage the file exists for. (A running proxy never gets the head
// signed again: the control plane tells it it is current.) Now the old key can be given with
// --control-plane-previous-keys, for booting from the last-known-good only; a snapshot from the
// network still verifies with the pinned key alone. Real control planes (SQLite), real `igw proxy`.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, expect, it } from 'vitest'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { generateSigningKey, type SigningKey } from '../../control-plane/signing.ts'
import { connectedProxyArgs, connectedProxyEnv, runningVersion, seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-lkgrot30aa-'))
const cps: ControlPlane[] = []
const proxies: SpawnedIgw[] = []
afterAll(async () => {
  for (const p of proxies) await p.stop()
  for (const cp of cps) await cp.close()
  rmSync(dir, { recursive: true, force: true })
})

function keyFile(name: string, key: SigningKey): string {
  const f = join(dir, `${name}.pub.pem`)
  writeFileSync(f, key.publicKeyPem)
  return f
}

it('a proxy re-pinned to the new key boots from the last-known-good the old key signed while the control plane is away', async () => {
  const oldKey = generateSigningKey()
  const newKey = generateSigningKey()
  const [oldFile, newFile] = [keyFile('old', oldKey), keyFile('new', newKey)]
  const stateDir = join(dir, 'state')
  const env = await connectedProxyEnv('proxy-rot')
  const cp = await startControlPlane({ db: `sqlite:${join(dir, 'cp.db')}`, host: '127.0.0.1', port: 0, auth: { secret: TEST_AUTH_SECRET }, signingKey: oldKey, seed: seedDocument(), logger: pino({ level: 'silent' }) })
  cps.push(cp)
  const version = cp.store.head()!.version
  const proxy = await spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile: oldFile, stateDir, id: 'rot-1' }), env)
  proxies.push(proxy)
  expect(await runningVersion(proxy)).toBe(version)
  await expect.poll(() => existsSync(join(stateDir, 'last-good.json')), { timeout: 10_000 }).toBe(true)

  // From the network the previous key is not taken: a head it signed is refused (no config: 78).
  const args = (state: string) => [...connectedProxyArgs({ cpUrl: cp.url, keyFile: newFile, stateDir: state, id: 'rot-2' }), '--control-plane-previous-keys', oldFile]
  await expect(spawnIgw(args(join(dir, 'fresh')), env)).rejects.toThrow(/exited with 78[\s\S]*signature does not verify/)

  // The key is replaced; the proxy is re-pinned and restarted while the control plane is away.
  await proxy.stop()
  await cp.close()
  cps.pop()
  // Without the old key: refused as before, saying what to pass.
  await expect(spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile: newFile, stateDir, id: 'rot-1' }), env)).rejects.toThrow(/exited with 78[\s\S]*pass the old one with --control-plane-previous-keys[\s\S]*refusing the last-known-good snapshot/)
  const repinned = await spawnIgw(args(stateDir), env)
  proxies.push(repinned)
  expect(await runningVersion(repinned)).toBe(version)
  const booted = repinned.output.map((l) => JSON.parse(l) as { msg?: string; signedByPreviousKey?: string }).find((l) => l.msg?.includes('booting from the last-known-good snapshot'))
  expect(booted).toMatchObject({ msg: 'control plane unreachable: booting from the last-known-good snapshot', signedByPreviousKey: oldKey.keyId })
}, 30_000)
