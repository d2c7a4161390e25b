// The proxy's control-plane client, sweep 33f. Real control plane (SQLite), a real proxy, a real
// node:http relay in front of the control plane, a real tmpfs for the disk-full case.
//  - An ACK/NACK the control plane refused (503/429) was retried after exactly 1 s, 2 s, 4 s… with
//    no jitter and ignoring its Retry-After: a fleet that lost the same push came back in step,
//    sooner than asked. Now the stream's ReconnectPolicy is used (equal jitter, Retry-After capped).
//  - `last-good.json.<pid>.tmp` left by a run that crashed mid-write (another pid, so never
//    overwritten) stayed forever, holding the config's secrets. Removed at start (igw's own temp
//    names only); a failed write of the proxy id left its temp file behind.
//  - A last-known-good cut short was refused as "Unexpected end of JSON input": no path, no word
//    of what the proxy does about it.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { freePort } from '../helpers/ports.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { canMountTmpfs, fillUntilFull, releaseMounts, tinyMount } from '../helpers/tmpfs.ts'

let cp: TestControlPlane
let backend: RawBackend
let proxy: TestProxy
let token: string
const dirs: string[] = []
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'igw-cp33f-'))
  dirs.push(d)
  return d
}
type Logged = { level: string; msg: string; obj: Record<string, unknown> }

beforeAll(async () => {
  cp = await startTestControlPlane()
  backend = await startRawBackend((_req, res) => res.end('ok'))
  proxy = await startTestProxy({ routes: [{ name: 'rest', upstream: backend.url, type: 'http' }] as never })
  token = await cp.token({ sub: 'proxy-33f', roles: ['proxy'] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
  await cp?.close()
  releaseMounts()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

function client(o: { url?: string; stateDir: string; proxyId?: string; logged?: Logged[]; bootTimeoutMs?: number }): ControlPlaneClient {
  return new ControlPlaneClient({
    url: o.url ?? cp.url,
    token,
    stateDir: o.stateDir,
    ...(o.proxyId !== undefined ? { proxyId: o.proxyId } : {}),
    publicKeyPem: cp.store.key.publicKeyPem,
    toConfig: () => proxy.config(),
    usageIntervalMs: 3_600_000,
    bootTimeoutMs: o.bootTimeoutMs ?? 5_000,
    log: (level, obj, msg) => void o.logged?.push({ level, msg, obj }),
  })
}

const row = async (id: string) => ((await (await cp.api('/v1/proxies')).json()) as { items: { id: string; appliedVersion: number | null }[] }).items.find((i) => i.id === id)
const commit = async (name: string) => ((await (await cp.api(`/v1/tenants/${name}`, { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).json()) as { version: number }).version

describe('ACK/NACK retries: jitter and Retry-After', () => {
  const N = 8
  const clients: ControlPlaneClient[] = []
  let front: Server
  /** While set, ACK/NACK posts are answered 503 (with this Retry-After, if any). */
  let shed: { retryAfter?: string } | undefined
  /** ACK/NACK posts per proxy id, with the version and when. */
  const posts = new Map<string, { version: number; at: number }[]>()

  beforeAll(async () => {
    // A real HTTP relay in front of the real control plane: it sheds ACK/NACK posts, passes the rest.
    front = createServer((req, res) => {
      const ack = /^\/v1\/proxies\/([^/]+)\/ack$/.exec(req.url ?? '')
      if (ack !== null && req.method === 'POST' && shed !== undefined) {
        const chunks: Buffer[] = []
        req.on('data', (c: Buffer) => chunks.push(c))
        req.on('end', () => {
          const id = decodeURIComponent(ack[1]!)
          const list = posts.get(id) ?? []
          list.push({ version: (JSON.parse(Buffer.concat(chunks).toString()) as { version: number }).version, at: performance.now() })
          posts.set(id, list)
          res.writeHead(503, { 'content-type': 'application/json', ...(shed?.retryAfter !== undefined ? { 'retry-after': shed.retryAfter } : {}) }).end('{"error":"the database is unavailable"}')
        })
        return
      }
      const up = httpRequest(`${cp.url}${req.url}`, { method: req.method, headers: req.headers }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers)
        ur.pipe(res)
      })
      up.on('error', () => res.destroy())
      res.on('close', () => up.destroy())
      req.pipe(up)
    })
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(front.address() as AddressInfo).port}`
    for (let i = 0; i < N; i++) {
      const c = client({ url, stateDir: tempDir(), proxyId: `ack33f-${i}` })
      clients.push(c)
      const boot = await c.bootstrap()
      expect(boot?.source).toBe('control-plane')
      c.attach(proxy)
      await c.ackBoot()
    }
  }, 60_000)
  afterAll(async () => {
    shed = undefined
    await Promise.all(clients.map((c) => c.close()))
    front?.closeAllConnections()
    await new Promise((r) => front?.close(r))
  })

  /** Per proxy: the gap between its first and second refused post of `version`. */
  async function retryGaps(version: number): Promise<number[]> {
    const ofVersion = (i: number) => (posts.get(`ack33f-${i}`) ?? []).filter((p) => p.version === version)
    await expect.poll(() => clients.every((_c, i) => ofVersion(i).length >= 2), { timeout: 15_000, interval: 50 }).toBe(true)
    return clients.map((_c, i) => ofVersion(i)[1]!.at - ofVersion(i)[0]!.at)
  }
  async function acksLand(version: number): Promise<void> {
    shed = undefined
    for (let i = 0; i < N; i++) await expect.poll(async () => (await row(`ack33f-${i}`))?.appliedVersion, { timeout: 40_000, interval: 200 }).toBe(version)
  }

  it('a push refused fleet-wide is retried with jitter, not by every proxy at the same moment', async () => {
    shed = {}
    const v = await commit('jitter33f')
    const gaps = await retryGaps(v)
    // Old code: every proxy retried exactly 1 s later (the spread was the timers' few ms). Now
    // 500–1000 ms each (equal jitter): eight draws within 100 ms of each other is ~1 in 10,000.
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(450)
    expect(Math.max(...gaps) - Math.min(...gaps)).toBeGreaterThan(100)
    await acksLand(v)
  }, 60_000)

  it("a 503 with Retry-After is not retried before it (old code: after 1 s), and then lands", async () => {
    shed = { retryAfter: '3' }
    const v = await commit('retryafter33f')
    const gaps = await retryGaps(v)
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(2_950)
    // Spread over a tenth more of it (and some room for a busy machine).
    expect(Math.max(...gaps)).toBeLessThan(4_500)
    await acksLand(v)
  }, 60_000)
})

describe('temp files of the state dir', () => {
  it('those a crashed run left (its secrets in them) are removed at start; nothing else is', async () => {
    const dir = tempDir()
    const dead = spawnSync('true').pid! // exited: no process has this pid any more
    const secret = '{"payload":"{\\"document\\":{\\"secrets\\":{\\"hmac\\":\\"s3cr3t-33f\\"'
    const stale = [`last-good.json.${dead}.tmp`, `proxy-id.${dead}.tmp`, `usage-pending.json.${dead}.tmp`, `control-plane.pub.pem.${dead}.tmp`, `last-good.json.${process.pid}.tmp`, 'last-good.json.1.tmp']
    for (const name of stale) {
      writeFileSync(join(dir, name), secret)
      chmodSync(join(dir, name), 0o600)
    }
    // pid 1 is alive, but a write does not take five minutes: stale.
    const old = (Date.now() - 5 * 60_000) / 1000
    utimesSync(join(dir, 'last-good.json.1.tmp'), old, old)
    // A live process's fresh temp file may be a write in progress (a state dir shared by mistake).
    const inProgress = `last-good.json.${process.ppid}.tmp`
    writeFileSync(join(dir, inProgress), secret)
    const outside = join(tempDir(), 'target.json')
    writeFileSync(outside, 'not igw')
    const kept = ['last-good.json.bak', 'last-good.json.tmp', `last-good.json.${dead}.tmp.keep`, `notes.${dead}.tmp`, 'last-good.json.abc.tmp', `other-last-good.json.${dead}.tmp`, inProgress]
    for (const name of kept) if (!existsSync(join(dir, name))) writeFileSync(join(dir, name), 'operator file')
    mkdirSync(join(dir, `last-good.json.${dead + 1}.tmp`))
    writeFileSync(join(dir, `last-good.json.${dead + 1}.tmp`, 'inside'), 'x')
    symlinkSync(outside, join(dir, `proxy-id.${dead + 2}.tmp`))

    const logged: Logged[] = []
    const c = client({ stateDir: dir, logged })
    try {
      const boot = await c.bootstrap()
      expect(boot?.source).toBe('control-plane')
      c.attach(proxy)
      await c.ackBoot()
      const names = readdirSync(dir)
      for (const name of stale) expect(names, name).not.toContain(name)
      for (const name of kept) expect(names, name).toContain(name)
      expect(lstatSync(join(dir, `last-good.json.${dead + 1}.tmp`)).isDirectory()).toBe(true)
      expect(readFileSync(join(dir, `last-good.json.${dead + 1}.tmp`, 'inside'), 'utf8')).toBe('x')
      expect(lstatSync(join(dir, `proxy-id.${dead + 2}.tmp`)).isSymbolicLink()).toBe(true)
      expect(readFileSync(outside, 'utf8')).toBe('not igw')
      expect(names).toContain('last-good.json')
      expect(names).toContain('proxy-id')
      const line = logged.find((l) => l.msg.startsWith('removed temp files an earlier run left'))
      expect(line?.level).toBe('warn')
      expect([...(line?.obj.removed as string[])].sort()).toEqual([...stale].sort())
    } finally {
      await c.close()
    }
  }, 30_000)

  it.skipIf(!canMountTmpfs)('a proxy id that cannot be written (a full disk) leaves no temp file', () => {
    const mount = tinyMount('256k')!
    fillUntilFull(join(mount, 'filler'))
    const state = join(mount, 'state')
    rmSync(join(mount, 'filler'))
    mkdirSync(state)
    fillUntilFull(join(mount, 'filler'))
    let thrown: unknown
    try {
      client({ stateDir: state }) // no --proxy-id, an opaque token: the id is made and kept here
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(ConfigError)
    expect(String((thrown as ConfigError).problems)).toMatch(/ENOSPC/)
    // Old code: proxy-id.<pid>.tmp stayed (and the next start's pid is another).
    expect(readdirSync(state)).toEqual([])
  })
})

describe('a damaged last-known-good', () => {
  let whole = ''
  beforeAll(async () => {
    const dir = tempDir()
    const c = client({ stateDir: dir, proxyId: 'lkg33f' })
    try {
      await c.bootstrap()
      c.attach(proxy)
      await c.ackBoot()
    } finally {
      await c.close()
    }
    whole = readFileSync(join(dir, 'last-good.json'), 'utf8')
    expect(whole.length).toBeGreaterThan(200)
  }, 30_000)

  /** Boot with the control plane away from a state dir whose last-good.json is `write`'s; the refusal logged. */
  async function refusal(write: (path: string) => void): Promise<{ path: string; error: string }> {
    const dir = tempDir()
    const path = join(dir, 'last-good.json')
    write(path)
    const logged: Logged[] = []
    const c = client({ url: `http://127.0.0.1:${await freePort()}`, stateDir: dir, proxyId: 'lkg33f-away', logged, bootTimeoutMs: 1_000 })
    try {
      expect(await c.bootstrap()).toBeUndefined()
    } finally {
      await c.close()
    }
    const line = logged.find((l) => l.msg === 'refusing the last-known-good snapshot')
    expect(line?.level).toBe('error')
    return { path, error: String(line?.obj.error) }
  }

  it('cut short: the error names the file, says it is truncated and what the proxy does', async () => {
    for (const cut of [Math.floor(whole.length / 2), whole.length - 1, 20]) {
      const { path, error } = await refusal((p) => writeFileSync(p, whole.slice(0, cut)))
      // Old code: "Unexpected end of JSON input" (or "Unterminated string in JSON at position …").
      expect(error).toContain(path)
      expect(error).toMatch(/truncated/)
      expect(error).toMatch(/not used; the proxy writes it again once it runs a control plane version/)
    }
  }, 30_000)

  it('damaged otherwise, or empty: named too', async () => {
    const bad = await refusal((p) => writeFileSync(p, `${whole.slice(0, 10)}#${whole.slice(11)}`))
    expect(bad.error).toContain(bad.path)
    expect(bad.error).toMatch(/damaged \(not JSON: /)
    const empty = await refusal((p) => writeFileSync(p, ''))
    expect(empty.error).toContain(empty.path)
    expect(empty.error).toMatch(/is empty/)
    const directory = await refusal((p) => mkdirSync(p))
    expect(directory.error).toContain(`${directory.path} is a directory`)
  }, 30_000)

  it('with the control plane back, the head is taken and the file written whole again', async () => {
    const dir = tempDir()
    const path = join(dir, 'last-good.json')
    writeFileSync(path, whole.slice(0, 100))
    const c = client({ stateDir: dir, proxyId: 'lkg33f-back' })
    try {
      expect((await c.bootstrap())?.source).toBe('control-plane')
      c.attach(proxy)
      await c.ackBoot()
      expect(() => JSON.parse(readFileSync(path, 'utf8'))).not.toThrow()
    } finally {
      await c.close()
    }
  }, 30_000)
})
