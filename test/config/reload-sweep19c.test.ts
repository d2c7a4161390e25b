// Config hot reload, sweep 19c: a file changed while the proxy starts, restart-only settings
// that a reload silently half-applied, and a key file rewritten in place with its mtime kept.
import { spawn } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { SignJWT } from 'jose'
import { loadConfigFile } from '../../config/load.ts'
import { fileStamp } from '../../config/file-stamp.ts'
import { echoHandler, startDemoBackend, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { IGW_BIN, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const doc = (upstream: string, route: string, extra = '') =>
  `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nworkers: 1\nlog: { level: warn }\nmode: ingress\n${extra}routes:\n  - { name: ${route}, match: { pathPrefix: /${route} }, upstream: "${upstream}", type: http }\n`

async function status(proxy: TestProxy, path: string): Promise<number> {
  const res = await request(`${proxy.url}${path}`, { reset: true })
  await res.body.dump()
  return res.statusCode
}

/** `igw <args>` run to its end, without blocking the event loop (the other tests' proxies run in it). */
async function igw(args: string[]): Promise<{ status: number | null; out: string }> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const [status] = (await once(child, 'close')) as [number | null]
  return { status, out }
}

// Concurrent: each test has its own proxy, files and log capture (the echo backend is stateless),
// and most of their time is spent waiting out the watch's 2 s poll and refused-reload retry.
describe.concurrent('config hot reload (sweep 19c)', () => {
  let backend: RawBackend
  const dirs: string[] = []
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'igw-sweep19c-'))
    dirs.push(d)
    return d
  }

  it('a file changed while the proxy was starting (after it was read, before the watch began) is picked up', async ({ expect }) => {
    const dir = tempDir()
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, doc(backend.url, 'v1'))
    const first = loadConfigFile(path, {}).config // what the CLI read
    const starting = startTestProxy(first as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
    // The ConfigMap is updated while the worker threads load (a rollout racing a config change).
    writeFileSync(path, doc(backend.url, 'v2'))
    const proxy = await starting
    try {
      await expect.poll(() => proxy.config().routes[0]!.name, { timeout: 20_000, interval: 100 }).toBe('v2')
      await expect.poll(() => status(proxy, '/v2/x'), { timeout: 10_000, interval: 100 }).toBe(200)
    } finally {
      await proxy.close()
    }
  })
  it('a reload that changes the worker heap sizes warns that they need a restart and keeps the running ones (in /config and for restarted threads); streamedMbPerGc follows', async ({ expect }) => {
    const dir = tempDir()
    const path = join(dir, 'igw.yaml')
    const heap = (old: number, young: number, gc: number) => `workerHeap: { maxOldGenerationMb: ${old}, youngGenerationMb: ${young}, streamedMbPerGc: ${gc} }\n`
    writeFileSync(path, doc(backend.url, 'v1', heap(256, 6, 8)))
    const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { loadConfig: () => loadConfigFile(path, {}).config })
    try {
      writeFileSync(path, doc(backend.url, 'v2', heap(64, 2, 16)))
      const r = await proxy.reload()
      expect(r.ok).toBe(true)
      expect(proxy.config().routes[0]!.name).toBe('v2')
      const warned = proxy.logs.lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).includes('needs a restart')).map((l) => l.key)
      expect(warned).toEqual(expect.arrayContaining(['workerHeap.maxOldGenerationMb', 'workerHeap.youngGenerationMb']))
      // what the threads run with, not what the file asks for until a restart
      expect(proxy.config().workerHeap).toMatchObject({ maxOldGenerationMb: 256, youngGenerationMb: 6, streamedMbPerGc: 16 })
      const shown = (await (await request(`${proxy.adminUrl}/config`)).body.json()) as { config: { workerHeap: Record<string, number> } }
      expect(shown.config.workerHeap).toMatchObject({ maxOldGenerationMb: 256, youngGenerationMb: 6, streamedMbPerGc: 16 })
    } finally {
      await proxy.close()
    }
  })
  it('a JWT public key file rewritten in place at the same size with its mtime kept (cp -p, rsync --inplace -t) is reloaded', async ({ expect }) => {
    const demo = await startDemoBackend()
    const dir = tempDir()
    const keyPath = join(dir, 'jwt.pem')
    const k1 = generateKeyPairSync('ed25519')
    const k2 = generateKeyPairSync('ed25519')
    const pem = (k: typeof k1) => k.publicKey.export({ type: 'spki', format: 'pem' }) as string
    // Files from a reproducible build or a package carry a normalized mtime (SOURCE_DATE_EPOCH).
    const EPOCH = 1_700_000_000
    writeFileSync(keyPath, pem(k1))
    utimesSync(keyPath, EPOCH, EPOCH)
    const kept = statSync(keyPath)
    const stampBefore = fileStamp(keyPath)
    const proxy = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'r', upstream: demo.url, filters: [{ name: 'tenant', jwt: { algorithms: ['EdDSA'], publicKeyFile: keyPath } }] as never }] })
    const call = async (token: string) => {
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
      await res.body.dump()
      return res.statusCode
    }
    try {
      const sign = (k: typeof k1) => new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA' }).setExpirationTime('5m').sign(k.privateKey)
      expect(await call(await sign(k1))).toBe(200)
      // The rotated key, copied over the old one in place, keeping the source's (normalized) mtime.
      writeFileSync(keyPath, pem(k2))
      utimesSync(keyPath, EPOCH, EPOCH)
      expect(statSync(keyPath).size).toBe(kept.size)
      expect(statSync(keyPath).ino).toBe(kept.ino)
      expect(fileStamp(keyPath)).not.toBe(stampBefore)
      const t2 = await sign(k2)
      await expect.poll(() => call(t2), { timeout: 15_000, interval: 250 }).toBe(200)
    } finally {
      await proxy.close()
      await demo.close()
    }
  })
  it('a file reload the workers refused because a file it names is not there yet (a Secret volume updated after the ConfigMap) is retried, and applies once the file appears', async ({ expect }) => {
    const demo = await startDemoBackend()
    const dir = tempDir()
    const path = join(dir, 'igw.yaml')
    const keyPath = join(dir, 'keys', 'jwt.pem')
    const k1 = generateKeyPairSync('ed25519')
    const body = (filters: string) => `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nworkers: 1\nlog: { level: warn }\ntenants: { acme: {} }\nroutes:\n  - { name: r, upstream: "${demo.url}"${filters} }\n`
    writeFileSync(path, body(''))
    const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
    try {
      writeFileSync(path, body(`, filters: [{ name: tenant, jwt: { algorithms: [EdDSA], publicKeyFile: "${keyPath}" } }]`))
      await expect.poll(() => proxy.logs.find('config rejected by workers').length, { timeout: 20_000, interval: 100 }).toBeGreaterThan(0)
      expect(proxy.version()).toBe(1)
      // The Secret's volume is updated now; the ConfigMap is not touched again.
      mkdirSync(join(dir, 'keys'))
      writeFileSync(keyPath, k1.publicKey.export({ type: 'spki', format: 'pem' }) as string)
      await expect.poll(() => proxy.version(), { timeout: 30_000, interval: 200 }).toBe(2)
      expect(proxy.config().routes[0]!.filters.map((f) => f.name)).toEqual(['tenant'])
      const token = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA' }).setExpirationTime('5m').sign(k1.privateKey)
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
      await res.body.dump()
      expect(res.statusCode).toBe(200)
    } finally {
      await proxy.close()
      await demo.close()
    }
  })

  it('a document that does not validate is not retried: one rejection per version of the file', async ({ expect }) => {
    const dir = tempDir()
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, doc(backend.url, 'v1'))
    const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
    try {
      writeFileSync(path, doc('htp:/nope', 'v2'))
      await expect.poll(() => proxy.logs.find('config reload rejected; keeping the running config').length, { timeout: 20_000, interval: 100 }).toBe(1)
      expect(proxy.logs.find('config reload will be retried: a worker could not build it (a file it names may not be there yet)')).toEqual([])
      // A retry would come 2 s (the first refused-reload retry delay) after the rejection: wait twice that.
      await new Promise((r) => setTimeout(r, 4_000))
      expect(proxy.logs.find('config reload rejected; keeping the running config').length).toBe(1)
      expect(proxy.version()).toBe(1)
    } finally {
      await proxy.close()
    }
  })
  it('a Redis password holding a raw "/", "#" or "?" (base64, pasted unencoded) is not printed by the refusal: reload log line, reload answer, exit 78 at start', async ({ expect }) => {
    const password = 'Zq9AbC/dEf+gh=='
    const dir = tempDir()
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, doc(backend.url, 'v1'))
    const env = { REDIS_PASSWORD: password }
    // The CLI's refusal at start runs meanwhile (a process start is most of this test's time).
    const cli = igw(['proxy', '--upstream', 'http://127.0.0.1:1', '--redis', `rediss://default:${password}@cache:6380/0`, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'])
    const proxy = await startTestProxy(loadConfigFile(path, env).config as never, { loadConfig: () => loadConfigFile(path, env).config })
    try {
      for (const secret of [password, 'Zq9Ab#Cd', 'Zq9Ab?Cd']) {
        env.REDIS_PASSWORD = secret
        writeFileSync(path, doc(backend.url, 'v2', 'redis: { url: "redis://:${REDIS_PASSWORD}@redis:6379" }\n'))
        const r = await proxy.reload()
        expect(r.ok).toBe(false)
        expect(r.error).toContain('redis.url')
        expect(r.error).toContain('[redacted]@redis:6379')
        expect(r.error).not.toContain(secret.slice(0, 5))
      }
      const logged = proxy.logs.raw.filter((l) => l.includes('config reload rejected'))
      expect(logged.length).toBe(3)
      for (const l of logged) expect(l).not.toContain('Zq9Ab')
    } finally {
      await proxy.close()
    }
    const r = await cli
    expect(r.status).toBe(78)
    expect(r.out).toContain('redis.url')
    expect(r.out).not.toContain('Zq9Ab')
  })

  it('URLs that hold no credentials are shown as they are in /config (an "@" in a webhook query, a port)', async ({ expect }) => {
    const { redactUrlCredentials } = await import('../../config/redact.ts')
    for (const u of ['https://hooks.example.com/notify?to=ops@example.com', 'https://hooks.example.com:8443/notify?to=ops@example.com', 'http://[::1]:8080/a@b']) {
      expect(redactUrlCredentials(u)).toBe(u)
    }
  })
})
