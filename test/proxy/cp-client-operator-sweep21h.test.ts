// The proxy's control-plane client and `igw proxy --control-plane`, sweep 21h. A real control
// plane (SQLite), the real client and the real CLI.
//  - A token from a Secret made with `kubectl create secret --from-file` ends in a newline: undici
//    refused it in the Authorization header on every attempt, logged as "control plane
//    unreachable" while the control plane was fine. A token with a space inside was sent and
//    refused (401) forever.
//  - A control plane that answered the stream with 401/403/400 was reported as "unreachable", and
//    the exit message said it "did not answer".
//  - `--proxy-id "eu proxy"` (a character the control plane does not admit) was retried forever
//    as "unreachable"; `--proxy-id ""` silently took the stored id.
//  - A state dir that cannot take the pinned key made every connection attempt fail (the key was
//    fetched and the write refused again), so the proxy never took a config.
//  - IGW_USAGE_INTERVAL_MS=3600000000 (or 0.5, -1) became Node's 1 ms timer.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { connectedProxyArgs, connectedProxyEnv, runningVersion, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { IGW_BIN, spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const scratch = () => mkdtempSync(join(tmpdir(), 'igw-cp21h-'))

/** `igw …` to its exit (killed after `ms`: a proxy that should have refused to start, but runs). */
async function runIgw(args: string[], env: NodeJS.ProcessEnv, ms = 15_000): Promise<{ status: number | null; out: string }> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const kill = setTimeout(() => child.kill('SIGKILL'), ms)
  const [status] = (await once(child, 'exit')) as [number | null]
  clearTimeout(kill)
  return { status, out }
}

describe('igw proxy --control-plane, as an operator configures it', () => {
  let cp: TestControlPlane
  let keyFile: string
  const spawned: SpawnedIgw[] = []
  const clients: ControlPlaneClient[] = []
  beforeAll(async () => {
    cp = await startTestControlPlane()
    keyFile = join(cp.dir, 'cp.pub.pem')
    writeFileSync(keyFile, cp.store.key.publicKeyPem)
  })
  afterAll(async () => {
    for (const c of clients) await c.close()
    for (const p of spawned) await p.stop()
    await cp?.close()
  })

  const client = (o: { token: string; proxyId?: string; stateDir?: string; pinned?: boolean }, logs: string[] = []) => {
    const c = new ControlPlaneClient({
      url: cp.url,
      token: o.token,
      stateDir: o.stateDir ?? scratch(),
      ...(o.proxyId !== undefined ? { proxyId: o.proxyId } : {}),
      ...(o.pinned === false ? {} : { publicKeyPem: cp.store.key.publicKeyPem }),
      toConfig: (doc) => doc as never,
      usageIntervalMs: 3_600_000,
      // Long: an answer can only come from the control plane, not from the timer.
      bootTimeoutMs: 20_000,
      log: (_l, obj, m) => logs.push(`${m} ${JSON.stringify(obj)}`),
    })
    clients.push(c)
    return c
  }

  it('a token given with a trailing newline (a Secret from a file) is used, trimmed', async () => {
    const env = await connectedProxyEnv('proxy-nl')
    const p = await spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: scratch(), id: 'nl-21h' }), { ...env, IGW_CONTROL_PLANE_TOKEN: `${env.IGW_CONTROL_PLANE_TOKEN}\n` })
    spawned.push(p)
    expect(await runningVersion(p)).toBe(cp.store.head()!.version)
    expect(p.output.join('\n')).not.toMatch(/invalid authorization header|unreachable/)
  }, 30_000)

  it('a token that cannot be one (a space inside, or empty) stops the start naming --control-plane-token', async () => {
    const env = await connectedProxyEnv('proxy-sp')
    const args = connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: scratch(), id: 'sp-21h' })
    const spaced = await runIgw(args, { ...env, IGW_CONTROL_PLANE_TOKEN: `${env.IGW_CONTROL_PLANE_TOKEN} ${env.IGW_CONTROL_PLANE_TOKEN}` })
    expect(spaced.status).toBe(78)
    expect(spaced.out).toMatch(/--control-plane-token: invalid config\s+the token holds a space at position \d+/)
    expect(spaced.out).not.toContain(env.IGW_CONTROL_PLANE_TOKEN) // a secret: never printed
    const empty = await runIgw([...args, '--control-plane-token', ' '], { IGW_CONTROL_PLANE_TOKEN: '' })
    expect(empty.status).toBe(78)
    expect(empty.out).toMatch(/--control-plane-token: invalid config\s+the token is empty/)
  }, 40_000)

  it('a stream refused with 401 or 403 at boot is said to be refused (and why), not "unreachable"', async () => {
    const bad = []
    const logs401: string[] = []
    const c401 = client({ token: 'not-a-jwt', proxyId: 'tok-401' }, logs401)
    expect(await c401.bootstrap()).toBeUndefined()
    expect(c401.bootProblem).toMatch(/refused the config stream: stream answered 401.*check --control-plane-token: the control plane does not accept the token/)
    expect(logs401.join('\n')).toMatch(/^the control plane refused the config stream /m)
    bad.push(...logs401)

    const logs403: string[] = []
    const c403 = client({ token: await cp.token({ sub: 'viewer', roles: ['viewer'] }), proxyId: 'tok-403' }, logs403)
    expect(await c403.bootstrap()).toBeUndefined()
    expect(c403.bootProblem).toMatch(/refused the config stream: stream answered 403.*the token needs the proxy role/)
    bad.push(...logs403)
    expect(bad.join('\n')).not.toMatch(/unreachable/)
  }, 30_000)

  it('igw proxy refused at boot exits 78 saying the control plane answered, not that it "did not answer"', async () => {
    const r = await runIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: scratch(), id: 'tok-cli' }), { IGW_CONTROL_PLANE_TOKEN: 'not-a-jwt' })
    expect(r.status).toBe(78)
    expect(r.out).toMatch(/the control plane at \S+ answered, but it refused the config stream: stream answered 401/)
    expect(r.out).not.toMatch(/did not answer|unreachable/)
  }, 30_000)

  it('a proxy id the control plane does not admit stops the start naming --proxy-id', async () => {
    const token = await cp.token({ sub: 'proxy-id', roles: ['proxy'] })
    for (const id of ['eu proxy', 'a/b', 'x'.repeat(201)]) {
      const err = (() => {
        try {
          client({ token, proxyId: id })
        } catch (e) {
          return e
        }
      })()
      expect(err, id).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).message).toMatch(/^--proxy-id: invalid config\n {2}expected 1 to 200 letters, digits or "_.:@-"/)
    }
    // The longest admitted one still connects.
    expect((await client({ token, proxyId: `p.${'x'.repeat(198)}` }).bootstrap())?.version).toBe(cp.store.head()!.version)
  }, 30_000)

  it('igw proxy --proxy-id "" is an error, not the stored id taken silently', async () => {
    const env = await connectedProxyEnv('proxy-empty-id')
    const args = connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: scratch(), id: '' })
    const r = await runIgw(args, env, 10_000)
    expect(r.status).toBe(78)
    expect(r.out).toMatch(/--proxy-id: invalid config\s+expected 1 to 200 letters, digits or "_.:@-" \(what the control plane admits\), got ""/)
  }, 30_000)

  it('a state dir that cannot take the pinned key still connects, pinned for this run, and says so', async () => {
    const stateDir = scratch()
    // The pinned key's temp file cannot be made (as on a read-only or full volume; this test runs
    // as root, whom a mode does not stop).
    mkdirSync(join(stateDir, `control-plane.pub.pem.${process.pid}.tmp`))
    const logs: string[] = []
    const c = client({ token: await cp.token({ sub: 'proxy-ro', roles: ['proxy'] }), proxyId: 'ro-21h', stateDir, pinned: false }, logs)
    const boot = await c.bootstrap()
    expect(boot?.version).toBe(cp.store.head()!.version)
    expect(boot?.source).toBe('control-plane')
    expect(logs.join('\n')).toMatch(/pinned the control plane signing key on first contact for this run only: it could not be saved/)
    expect(logs.join('\n')).not.toMatch(/unreachable/)
    expect(existsSync(join(stateDir, 'control-plane.pub.pem'))).toBe(false)
  }, 30_000)

  it('IGW_USAGE_INTERVAL_MS that is no whole number of ms from 100 to 24 h stops the start naming it', async () => {
    const env = await connectedProxyEnv('proxy-usage')
    const args = connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: scratch(), id: 'usage-21h' })
    for (const bad of ['3600000000', '0.5', '5s']) {
      const r = await runIgw(args, { ...env, IGW_USAGE_INTERVAL_MS: bad }, 10_000)
      expect(r.status, bad).toBe(78)
      expect(r.out).toMatch(new RegExp(`IGW_USAGE_INTERVAL_MS: invalid config\\s+expected whole milliseconds from 100 to 86400000 \\(24 h\\), got "${bad.replace('.', '\\.')}"`))
    }
  }, 40_000)
})
