// Hot reload against the ways real deployments replace a config file: the kubelet's atomic
// writer swapping a `..data` symlink (with the file under a subdirectory of the ConfigMap, so the
// directory igw watches is itself reached through the swapped symlink), a directory removed and
// created again, and a directory that cannot be watched at all.
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { loadConfigFile } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const doc = (upstream: string, route: string) =>
  `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nworkers: 1\nlog: { level: warn }\nmode: ingress\nroutes:\n  - { name: ${route}, match: { pathPrefix: /${route} }, upstream: "${upstream}", type: http }\n`

/** What the kubelet does on a ConfigMap update (AtomicWriter): new dir, `..data_tmp` symlink, rename over `..data`, old dir removed. */
function kubeletVolume(root: string, relPath: string) {
  let gen = 0
  const publish = (text: string) => {
    gen++
    const ts = `..2026_11_26_10_00_00.${gen}`
    mkdirSync(join(root, ts, relPath, '..'), { recursive: true })
    writeFileSync(join(root, ts, relPath), text)
    symlinkSync(ts, join(root, '..data_tmp'))
    renameSync(join(root, '..data_tmp'), join(root, '..data'))
    if (gen > 1) rmSync(join(root, `..2026_11_26_10_00_00.${gen - 1}`), { recursive: true })
  }
  return { publish }
}

async function status(proxy: TestProxy, path: string): Promise<number> {
  const res = await request(`${proxy.url}${path}`, { reset: true })
  await res.body.dump()
  return res.statusCode
}

// Concurrent, here and in the next block: each test has its own proxy, directory and log capture
// (the echo backend is stateless); their time goes into waiting out the watch's 2 s stat poll.
describe.concurrent('the config file watch survives the ways files get replaced', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('a ConfigMap item under a subdirectory (conf -> ..data/conf) is reloaded on every update, not only the first', async ({ expect }) => {
    const root = mkdtempSync(join(tmpdir(), 'igw-cm-'))
    const vol = kubeletVolume(root, 'conf/igw.yaml')
    vol.publish(doc(backend.url, 'v1'))
    symlinkSync('..data/conf', join(root, 'conf')) // the user-visible top-level entry
    const path = join(root, 'conf', 'igw.yaml')
    const first = loadConfigFile(path, {}).config
    const proxy = await startTestProxy(first as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
    try {
      for (let v = 2; v <= 4; v++) {
        vol.publish(doc(backend.url, `v${v}`))
        await expect.poll(() => proxy.version(), { timeout: 20_000, interval: 100 }).toBe(v)
        expect(proxy.config().routes[0]!.name).toBe(`v${v}`)
        await expect.poll(() => status(proxy, `/v${v}/x`), { timeout: 10_000, interval: 100 }).toBe(200)
      }
    } finally {
      await proxy.close()
      rmSync(root, { recursive: true, force: true })
    }
  })

  it('a config directory removed and created again is still watched', async ({ expect }) => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-redo-'))
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, doc(backend.url, 'v1'))
    const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
    try {
      writeFileSync(path, doc(backend.url, 'v2'))
      await expect.poll(() => proxy.version(), { timeout: 20_000, interval: 100 }).toBe(2)
      rmSync(dir, { recursive: true })
      await sleep(500) // the removal is seen on its own (a redeploy tool, not one atomic swap)
      mkdirSync(dir)
      writeFileSync(path, doc(backend.url, 'v3'))
      await expect.poll(() => proxy.version(), { timeout: 20_000, interval: 100 }).toBe(3)
      expect(proxy.config().routes[0]!.name).toBe('v3')
      writeFileSync(path, doc(backend.url, 'v4'))
      await expect.poll(() => proxy.version(), { timeout: 20_000, interval: 100 }).toBe(4)
    } finally {
      await proxy.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a directory that cannot be watched does not stop the start (as when inotify watches run out); the file is still picked up', async ({ expect }) => {
    const base = mkdtempSync(join(tmpdir(), 'igw-nowatch-'))
    const dir = join(base, 'later')
    const path = join(dir, 'igw.yaml')
    const proxy = await startTestProxy(loadConfigFile(writeOnce(join(base, 'boot.yaml'), doc(backend.url, 'v1')), {}).config as never, {
      watchPath: path,
      loadConfig: () => loadConfigFile(path, {}).config,
    })
    try {
      expect(proxy.logs.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('config directory watch failed'))).toBe(true)
      mkdirSync(dir)
      writeFileSync(path, doc(backend.url, 'v2'))
      await expect.poll(() => proxy.version(), { timeout: 20_000, interval: 100 }).toBe(2)
    } finally {
      await proxy.close()
      rmSync(base, { recursive: true, force: true })
    }
  })
})

function writeOnce(path: string, text: string): string {
  writeFileSync(path, text)
  return path
}

describe.concurrent('a burst of reloads (SIGHUP storm)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('reloads asked for while one runs share the next one: every caller gets the file as it is, not a version each', async ({ expect }) => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-storm-'))
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, doc(backend.url, 'v1'))
    let reads = 0
    const load = () => {
      reads++
      return loadConfigFile(path, {}).config
    }
    const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { loadConfig: load })
    try {
      writeFileSync(path, doc(backend.url, 'v2'))
      const results = await Promise.all(Array.from({ length: 40 }, () => proxy.reload()))
      for (const r of results) expect(r).toMatchObject({ ok: true })
      expect(proxy.config().routes[0]!.name).toBe('v2')
      // one running + one shared follow-up, however many were asked for
      expect(reads).toBeLessThanOrEqual(2)
      expect(proxy.version()).toBeLessThanOrEqual(3)
      expect(new Set(results.map((r) => r.version)).size).toBeLessThanOrEqual(2)
      // and a reload after the burst still reads the file anew
      writeFileSync(path, doc(backend.url, 'v3'))
      const last = await proxy.reload()
      expect(last.ok).toBe(true)
      expect(proxy.config().routes[0]!.name).toBe('v3')
      await expect.poll(() => status(proxy, '/v3/x'), { timeout: 10_000, interval: 100 }).toBe(200)
    } finally {
      await proxy.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
