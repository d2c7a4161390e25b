// Start-up cost (sweep 35e). Every worker thread and the supervisor imported all seven filter
// modules whatever the config used (dlp pulls in libphonenumber-js, opa-wasm, @noble/ciphers;
// tenant jose), and only a process given NODE_COMPILE_CACHE used Node's compile cache. Now a
// filter's module loads when a chain names it (the supervisor loads the ones that keep shared
// state, whose buffers every thread gets at its spawn), and `igw` and its worker threads use the
// compile cache by default. Real CLI processes, a real backend and real clients; which modules a
// thread loaded is read through a module hook given to the child with NODE_OPTIONS.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Pool } from 'undici'
import { stringify } from 'yaml'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { filterModules, LazyFilterModule, sharedStateModules } from '../../filters/registry.ts'
import type { FilterModule } from '../../proxy/filter.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { spawnIgw, startTestProxy, writeTempConfig, type SpawnedIgw } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-startup-35e-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** A module hook that appends "<main|worker> <url>" for every module a thread loads. */
function moduleLog(): { env: NodeJS.ProcessEnv; lines: () => { main: string[]; worker: string[] } } {
  const dir = mkdtempSync(join(scratch, 'hook-'))
  const out = join(dir, 'loaded.txt')
  const hook = join(dir, 'hook.mjs')
  writeFileSync(
    hook,
    `import { registerHooks } from 'node:module'
import { isMainThread } from 'node:worker_threads'
import { appendFileSync } from 'node:fs'
registerHooks({ load(url, context, next) { appendFileSync(${JSON.stringify(out)}, (isMainThread ? 'main ' : 'worker ') + url + '\\n'); return next(url, context) } })
`,
  )
  writeFileSync(out, '')
  return {
    env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${pathToFileURL(hook).href}`.trim() },
    lines: () => {
      const all = readFileSync(out, 'utf8').split('\n').filter(Boolean)
      return { main: all.filter((l) => l.startsWith('main ')), worker: all.filter((l) => l.startsWith('worker ')) }
    },
  }
}

const loads = (lines: string[], part: string): boolean => lines.some((l) => l.includes(part))

async function post(url: string, tenant: string, query: string, pool?: Pool): Promise<number> {
  const own = pool ?? new Pool(url, { connections: 1 })
  try {
    const r = await own.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query }) })
    await r.body.text()
    return r.statusCode
  } finally {
    if (pool === undefined) await own.close()
  }
}

describe('filter modules load when a chain names them', () => {
  let backend: DemoBackend
  let p: SpawnedIgw | undefined
  beforeAll(async () => {
    backend = await startDemoBackend({ host: '127.0.0.1', port: 0 })
  })
  afterAll(async () => {
    await p?.stop('SIGKILL')
    await backend?.close()
  })

  it('boots without the unused filters; a reload that adds dlp, quota and cache then works end to end', async () => {
    const base = { mode: 'ingress', listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 2, shutdown: { idleGraceMs: 0 } }
    const graphql = { name: 'graphql', match: { pathPrefix: '/graphql' }, upstream: backend.url, type: 'graphql' }
    const exports = { name: 'export', match: { pathPrefix: '/export/' }, upstream: backend.url, type: 'http' }
    const path = writeTempConfig({ ...base, routes: [graphql, exports] })
    const log = moduleLog()
    await p?.stop('SIGKILL') // a retried attempt
    p = await spawnIgw(['proxy', '--config', path], log.env)

    const boot = log.lines()
    expect(loads(boot.worker, '/proxy/worker-proxy.ts')).toBe(true) // the hook sees the threads
    for (const unused of ['/filters/dlp/', '/filters/tenant/', '/filters/quota/', '/filters/cache/', '/filters/persisted/', '/libphonenumber-js/', '/jose/', '/opa-wasm/']) {
      expect(loads(boot.worker, unused), `worker thread loaded ${unused}`).toBe(false)
    }
    for (const unused of ['/filters/dlp/', '/filters/tenant/', '/filters/persisted/', '/libphonenumber-js/', '/jose/']) {
      expect(loads(boot.main, unused), `supervisor loaded ${unused}`).toBe(false)
    }
    // The filters with memory shared by the threads are loaded by the supervisor, which sizes it.
    expect(loads(boot.main, '/filters/quota/index.ts')).toBe(true)
    expect(loads(boot.main, '/filters/cache/index.ts')).toBe(true)

    const keyring = join(mkdtempSync(join(scratch, 'dlp-')), 'keyring.json')
    writeFileSync(
      path,
      stringify({
        ...base,
        tenants: { acme: {}, globex: {} },
        quotas: { tenants: { acme: { graphql: { limitPerDay: 3 } } } },
        dlp: { keyring: { file: keyring }, policy: { enabled: false } },
        routes: [
          { ...graphql, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }, { name: 'cache', ttlSeconds: 60 }] },
          { ...exports, filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/export/' }] } }] },
        ],
      }),
    )
    await expect.poll(() => p!.output.some((l) => l.includes('"msg":"config applied"') && l.includes('"version":2')), { timeout: 30_000, interval: 100 }).toBe(true)

    // dlp: the export's e-mail addresses are masked.
    const exported = await fetch(`${p.url}/export/entities.ndjson?count=2`)
    const text = await exported.text()
    expect(exported.status).toBe(200)
    expect(text.split('\n').filter(Boolean)).toHaveLength(2)
    expect(text).not.toContain('user1@example.com')

    // quota: exactly three of acme's day, across both threads (one connection each).
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push(await post(p.url, 'acme', `{ hello(name: "q${i}") }`))
    expect(statuses).toEqual([200, 200, 200, 429, 429])

    // cache: the second identical query (same connection, same thread) never reaches the backend.
    const pool = new Pool(p.url, { connections: 1 })
    try {
      const before = backend.stats.byField.get('hello') ?? 0
      expect(await post(p.url, 'globex', '{ hello(name: "cached") }', pool)).toBe(200)
      expect(await post(p.url, 'globex', '{ hello(name: "cached") }', pool)).toBe(200)
      expect((backend.stats.byField.get('hello') ?? 0) - before).toBe(1)
    } finally {
      await pool.close()
    }

    const after = log.lines()
    expect(loads(after.worker, '/filters/dlp/index.ts')).toBe(true)
    expect(loads(after.worker, '/filters/quota/index.ts')).toBe(true)
    expect(await p.stop('SIGTERM')).toBe(0)
  })
})

describe('the registry', () => {
  it('marks sharedState exactly the filters that keep memory shared by the worker threads', async () => {
    const owners = new Set((await sharedStateModules()).map(([name]) => name))
    for (const [name, lazy] of Object.entries(filterModules)) {
      const mod = await lazy.load()
      expect(owners.has(name as never), name).toBe(mod.sharedBytes !== undefined || mod.workerExited !== undefined)
    }
    expect([...owners].sort()).toEqual(['cache', 'quota', 'subscriptions'])
  })

  it('refuses a lazily loaded filter that declares shared state, naming the registry', async () => {
    const declared: FilterModule<never> = { create: () => ({ name: 'x' }), sharedBytes: 64 }
    const lazy = new LazyFilterModule('x', async () => declared, false)
    await expect(async () => lazy.create(undefined as never, {} as never)).rejects.toThrow(/filter "x" keeps state shared by the worker threads .*filters\/registry\.ts/)
    const marked = new LazyFilterModule('y', async () => declared, true)
    expect((await marked.create(undefined as never, {} as never)).name).toBe('x')
  })
})

/** The files under dir (recursively), or 0 when there is no such directory. */
function fileCount(dir: string): number {
  if (!existsSync(dir)) return 0
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length
}

describe("Node's compile cache", () => {
  const saved = { NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE, TMPDIR: process.env.TMPDIR }
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })

  it('igw proxy fills the default cache directory when NODE_COMPILE_CACHE is unset, and not when disabled', async () => {
    const on = mkdtempSync(join(scratch, 'tmp-on-'))
    const started = await spawnIgw(['proxy', '--upstream', 'http://127.0.0.1:9', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { NODE_COMPILE_CACHE: undefined, TMPDIR: on })
    expect(await started.stop('SIGTERM')).toBe(0)
    // The supervisor's modules and the worker thread's: dozens of entries.
    expect(fileCount(join(on, 'node-compile-cache'))).toBeGreaterThan(50)

    const off = mkdtempSync(join(scratch, 'tmp-off-'))
    const disabled = await spawnIgw(['proxy', '--upstream', 'http://127.0.0.1:9', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { NODE_COMPILE_CACHE: undefined, NODE_DISABLE_COMPILE_CACHE: '1', TMPDIR: off })
    expect(await disabled.stop('SIGTERM')).toBe(0)
    expect(fileCount(join(off, 'node-compile-cache'))).toBe(0)
  })

  it("a proxy started in a process (no igw, no NODE_COMPILE_CACHE) gets the cache in its worker threads", async () => {
    const dir = mkdtempSync(join(scratch, 'tmp-inproc-'))
    delete process.env.NODE_COMPILE_CACHE
    process.env.TMPDIR = dir // the thread's os.tmpdir(), read from the env it inherits
    const proxy = await startTestProxy({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:9' }] })
    await proxy.close()
    expect(fileCount(join(dir, 'node-compile-cache'))).toBeGreaterThan(50)
  })
})
