// The proxy's control-plane client at boot, sweep 17. Real control planes (SQLite), the real
// client and the real `igw` CLI.
//  - A control plane with an empty store (started without --config) answers the stream at once
//    with `event: current` version 0. The proxy waited out its whole boot timeout (5 s) and then
//    said the control plane "did not answer" ("control plane unreachable"), sending operators
//    after the network instead of the empty store.
//  - A --control-plane-key file that is not a PEM key crashed `igw proxy` with OpenSSL's
//    "DECODER routines::unsupported" and a stack (exit 1, the flag not named); a non-ed25519 key
//    was taken, and every snapshot was then NACKed as "does not verify". A pinned key file left
//    empty by a crash during first contact (it was not written atomically) stopped every later
//    start the same way.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { generateKeyPairSync } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { connectedProxyArgs, connectedProxyEnv, runningVersion, seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { IGW_BIN, spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const scratch = () => mkdtempSync(join(tmpdir(), 'igw-cpboot17-'))

/**
 * `igw proxy …` to its exit: code and output (bounded: it exits by itself or is killed). Not
 * spawnSync: the control plane runs in this process and must answer meanwhile.
 */
async function runIgw(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; out: string }> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const kill = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [status] = (await once(child, 'exit')) as [number | null]
  clearTimeout(kill)
  return { status, out }
}

describe('a control plane with no config version yet', () => {
  let cp: TestControlPlane
  let backend: DemoBackend
  const spawned: SpawnedIgw[] = []
  const clients: ControlPlaneClient[] = []
  beforeAll(async () => {
    backend = await startDemoBackend()
    cp = await startTestControlPlane({ seed: null })
    expect(cp.store.head()).toBeUndefined()
  })
  afterAll(async () => {
    for (const c of clients) await c.close()
    for (const p of spawned) await p.stop()
    await cp?.close()
    await backend?.close()
  })

  it('bootstrap() says the store is empty instead of "unreachable", without waiting out the boot timeout', async () => {
    const logs: string[] = []
    const c = new ControlPlaneClient({
      url: cp.url,
      token: await cp.token({ sub: 'proxy-empty', roles: ['proxy'] }),
      stateDir: scratch(),
      proxyId: 'empty-1',
      publicKeyPem: cp.store.key.publicKeyPem,
      toConfig: (doc) => doc as never,
      usageIntervalMs: 3_600_000,
      // Long enough that an answer only comes from the control plane's own reply, not the timer.
      bootTimeoutMs: 20_000,
      log: (_l, o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
    })
    clients.push(c)
    const boot = await c.bootstrap()
    expect(boot).toBeUndefined()
    expect(c.bootProblem).toMatch(/has no config version yet/)
    expect(logs.join('\n')).not.toMatch(/unreachable/)
    expect(logs.join('\n')).toMatch(/control plane has no config version yet and no last-known-good snapshot on disk/)
  }, 40_000)

  it('igw proxy with nothing else exits 78 saying the control plane answered with an empty store', async () => {
    const dir = scratch()
    const keyFile = join(dir, 'cp.pub.pem')
    writeFileSync(keyFile, cp.store.key.publicKeyPem)
    const r = await runIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: join(dir, 'state'), id: 'empty-cli' }), await connectedProxyEnv('proxy-empty-cli'))
    expect(r.status, r.out).toBe(78)
    expect(r.out).toMatch(/answered, but it has no config version yet/)
    expect(r.out).not.toMatch(/did not answer/)
  }, 90_000)

  it('igw proxy with --upstream serves it, then takes the first version the control plane commits', async () => {
    const dir = scratch()
    const keyFile = join(dir, 'cp.pub.pem')
    writeFileSync(keyFile, cp.store.key.publicKeyPem)
    const p = await spawnIgw([...connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: join(dir, 'state'), id: 'empty-fallback' }), '--upstream', backend.url], await connectedProxyEnv('proxy-empty-fallback'))
    spawned.push(p)
    expect(p.output.join('\n')).not.toMatch(/control plane unreachable/)
    const put = await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify(seedDocument(backend.url)) })
    expect(put.status, await put.clone().text()).toBeLessThan(300)
    const v = cp.store.head()!.version
    await expect.poll(() => runningVersion(p), { timeout: 30_000, interval: 200 }).toBe(v)
  }, 90_000)
})

describe('the control plane key a proxy starts with', () => {
  let cp: TestControlPlane
  let backend: DemoBackend
  const spawned: SpawnedIgw[] = []
  beforeAll(async () => {
    backend = await startDemoBackend()
    cp = await startTestControlPlane({ seed: seedDocument(backend.url) })
  })
  afterAll(async () => {
    for (const p of spawned) await p.stop()
    await cp?.close()
    await backend?.close()
  })

  it('a --control-plane-key file that is not a PEM key, or not ed25519, stops the start with exit 78 naming the flag', async () => {
    const dir = scratch()
    const env = await connectedProxyEnv('proxy-badkey')
    const garbage = join(dir, 'garbage.pem')
    writeFileSync(garbage, 'this is not a key\n')
    const empty = join(dir, 'empty.pem')
    writeFileSync(empty, '')
    const rsa = join(dir, 'rsa.pem')
    writeFileSync(rsa, generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString())
    for (const [file, problem] of [
      [garbage, /--control-plane-key: invalid config\s+not a PEM public key/],
      [rsa, /--control-plane-key: invalid config\s+a key of type rsa, not ed25519/],
      // empty: it was taken as no flag, and the first key that answered was pinned
      [empty, /--control-plane-key: invalid config\s+.*empty\.pem: the file is empty, not a PEM public key/],
    ] as const) {
      const r = await runIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile: file, stateDir: join(dir, 'state'), id: 'badkey' }), env)
      expect(r.status, r.out).toBe(78)
      expect(r.out).toMatch(problem)
      expect(r.out).not.toMatch(/DECODER routines|at new ControlPlaneClient/)
    }
  }, 90_000)

  it('a pinned key file left empty by an interrupted first contact is pinned again; a corrupt one stops the start naming the file', async () => {
    const env = await connectedProxyEnv('proxy-pin')
    const base = ['--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1', '--control-plane', cp.url]

    const emptyState = join(scratch(), 'state')
    mkdirSync(emptyState, { recursive: true })
    writeFileSync(join(emptyState, 'control-plane.pub.pem'), '')
    const p = await spawnIgw(['proxy', ...base, '--state-dir', emptyState, '--proxy-id', 'pin-empty'], env)
    spawned.push(p)
    expect(await runningVersion(p)).toBe(cp.store.head()!.version)
    expect(p.output.join('\n')).toMatch(/pinned control plane key file is empty/)
    expect(readFileSync(join(emptyState, 'control-plane.pub.pem'), 'utf8')).toBe(cp.store.key.publicKeyPem)

    const badState = join(scratch(), 'state')
    mkdirSync(badState, { recursive: true })
    writeFileSync(join(badState, 'control-plane.pub.pem'), cp.store.key.publicKeyPem.slice(0, 40))
    const r = await runIgw(['proxy', ...base, '--state-dir', badState, '--proxy-id', 'pin-bad'], env)
    expect(r.status, r.out).toBe(78)
    expect(r.out).toContain(join(badState, 'control-plane.pub.pem'))
    expect(r.out).toMatch(/delete the file to pin the control plane's key again/)
  }, 90_000)
})
