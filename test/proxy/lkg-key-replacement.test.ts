// The last-known-good across a planned replacement of the control plane's signing key (sweep 30aa,
// 30ab). The control plane restarted with a new --signing-key (the old one in --previous-keys) and the
// proxy re-pinned (--control-plane-key new): a proxy restarted while the control plane was away
// refused its last-known-good — kept under the old key, "signature does not verify" — and, with no
// other config, exited 78: the outage the file exists for. Now the old key can be given with
// --control-plane-previous-keys, for booting from the last-known-good only (a snapshot from the
// network still verifies with the pinned key alone); and a running proxy in that state, told by the
// control plane it was current (same version), kept the old key's file for good: it now names its
// pinned key when it connects and is sent the re-signed head, which it keeps as last-known-good.
// Real control planes (SQLite), real `igw proxy`.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { mintToken } from '../../control-plane/auth.ts'
import { afterAll, expect, it } from 'vitest'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { generateSigningKey, type SigningKey } from '../../control-plane/signing.ts'
import { connectedProxyArgs, connectedProxyEnv, runningVersion, seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-lkg-keys-'))
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

async function start(key: SigningKey, port: number, previous: SigningKey[] = [], db = join(dir, 'resign.db')): Promise<ControlPlane> {
  const cp = await startControlPlane({ db: `sqlite:${db}`, host: '127.0.0.1', port, auth: { secret: TEST_AUTH_SECRET }, signingKey: key, seed: seedDocument(), logger: pino({ level: 'silent' }), ...(previous.length > 0 ? { previousKeys: previous.map((k) => k.publicKey) } : {}) })
  cps.push(cp)
  return cp
}

async function stop(p: ControlPlane | SpawnedIgw): Promise<void> {
  if ('stop' in p) {
    await p.stop()
    proxies.splice(proxies.indexOf(p), 1)
  } else {
    await p.close()
    cps.splice(cps.indexOf(p), 1)
  }
}

/** The first event of a stream opened with these query parameters. */
async function firstEvent(cp: ControlPlane, query: string): Promise<string> {
  const token = await mintToken(TEST_AUTH_SECRET, { sub: 'probe', roles: ['proxy'] })
  const stream = new AbortController()
  const res = await fetch(`${cp.url}/v1/stream?proxy=probe&${query}`, { headers: { authorization: `Bearer ${token}` }, signal: stream.signal })
  const reader = res.body!.getReader()
  let text = ''
  try {
    while (!text.includes('\n\n')) {
      const { value, done } = await reader.read()
      if (done) break
      text += Buffer.from(value).toString()
    }
  } finally {
    stream.abort()
  }
  return text
}

it('a running proxy on a last-known-good the old key signed keeps the head signed again with the new key, and boots from it without the old key', async () => {
  const oldKey = generateSigningKey()
  const newKey = generateSigningKey()
  const [oldFile, newFile] = [keyFile('old', oldKey), keyFile('new', newKey)]
  const stateDir = join(dir, 'state-resign')
  const lastGood = join(stateDir, 'last-good.json')
  const signer = () => (JSON.parse(readFileSync(lastGood, 'utf8')) as { keyId: string }).keyId
  const env = await connectedProxyEnv('proxy-resign')
  const first = await start(oldKey, 0)
  const port = Number(new URL(first.url).port)
  const version = first.store.head()!.version
  const args = connectedProxyArgs({ cpUrl: first.url, keyFile: oldFile, stateDir, id: 'resign-1' })
  const onOld = await spawnIgw(args, env)
  proxies.push(onOld)
  expect(await runningVersion(onOld)).toBe(version)
  await expect.poll(() => existsSync(lastGood), { timeout: 10_000 }).toBe(true)
  expect(signer()).toBe(oldKey.keyId)

  // The key is replaced; the proxy is re-pinned and restarted while the control plane is away.
  await stop(onOld)
  await stop(first)
  const repinnedArgs = connectedProxyArgs({ cpUrl: first.url, keyFile: newFile, stateDir, id: 'resign-1' })
  const repinned = await spawnIgw([...repinnedArgs, '--control-plane-previous-keys', oldFile], env)
  proxies.push(repinned)
  expect(await runningVersion(repinned)).toBe(version)

  // The control plane comes back on the new key, the head signed again; the proxy, on that version
  // already, reconnects and keeps the re-signed head (the same version: nothing applied, no NACK).
  const cp = await start(newKey, port, [oldKey])
  expect(cp.store.head()).toMatchObject({ version, envelope: { keyId: newKey.keyId } })
  await expect.poll(signer, { timeout: 10_000 }).toBe(newKey.keyId)
  expect(await runningVersion(repinned)).toBe(version)
  expect(repinned.output.some((l) => l.includes('NACK'))).toBe(false)
  // A proxy pinned to the old key names it (or nothing): told it is current, as before — not sent a head it would refuse.
  expect(await firstEvent(cp, `version=${version}&digest=${cp.store.head()!.digest}&key=${oldKey.keyId}`)).toMatch(/^event: current/)

  // Away again, the proxy restarts without the old key: it boots from its last-known-good.
  await stop(repinned)
  await stop(cp)
  const again = await spawnIgw(repinnedArgs, env)
  proxies.push(again)
  expect(await runningVersion(again)).toBe(version)
}, 30_000)

it('a proxy re-pinned to the new key boots from the last-known-good the old key signed while the control plane is away', async () => {
  const oldKey = generateSigningKey()
  const newKey = generateSigningKey()
  const [oldFile, newFile] = [keyFile('boot-old', oldKey), keyFile('boot-new', newKey)]
  const stateDir = join(dir, 'state-boot')
  const env = await connectedProxyEnv('proxy-rot')
  const cp = await start(oldKey, 0, [], join(dir, 'boot.db'))
  const version = cp.store.head()!.version
  const proxy = await spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile: oldFile, stateDir, id: 'rot-1' }), env)
  proxies.push(proxy)
  expect(await runningVersion(proxy)).toBe(version)
  await expect.poll(() => existsSync(join(stateDir, 'last-good.json')), { timeout: 10_000 }).toBe(true)

  // From the network the previous key is not taken: a head it signed is refused (no config: 78).
  const args = (state: string) => [...connectedProxyArgs({ cpUrl: cp.url, keyFile: newFile, stateDir: state, id: 'rot-2' }), '--control-plane-previous-keys', oldFile]
  await expect(spawnIgw(args(join(dir, 'fresh')), env)).rejects.toThrow(/exited with 78[\s\S]*signature does not verify/)

  // The key is replaced; the proxy is re-pinned and restarted while the control plane is away.
  await stop(proxy)
  await stop(cp)
  // Without the old key: refused as before, saying what to pass.
  await expect(spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile: newFile, stateDir, id: 'rot-1' }), env)).rejects.toThrow(/exited with 78[\s\S]*pass the old one with --control-plane-previous-keys[\s\S]*refusing the last-known-good snapshot/)
  const repinned = await spawnIgw(args(stateDir), env)
  proxies.push(repinned)
  expect(await runningVersion(repinned)).toBe(version)
  const booted = repinned.output.map((l) => JSON.parse(l) as { msg?: string; signedByPreviousKey?: string }).find((l) => l.msg?.includes('booting from the last-known-good snapshot'))
  expect(booted).toMatchObject({ msg: 'control plane unreachable: booting from the last-known-good snapshot', signedByPreviousKey: oldKey.keyId })
}, 30_000)
