// A careless operator and a hostile environment against the real CLI, the config loader and the
// admin port: every mistake is a precise error (or a logged, counted refusal), no secret shows in
// any output, and the process keeps serving.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { buildProxyConfig } from '../../proxy/cli.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { IGW_BIN, metricSum, startTestProxy, writeTempConfig } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'
import { problems } from '../helpers/config.ts'

/** `igw <args>` run to its end; asynchronous, so that concurrent tests' processes overlap. */
async function igw(args: string[]): Promise<{ status: number | null; out: string }> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const [status] = (await once(child, 'close')) as [number | null]
  return { status, out }
}

const STACK_LINE = /^\s+at .+\(?.*:\d+:\d+\)?$/m

describe('hostile config documents', () => {
  it('a YAML alias bomb (billion laughs) is a config error naming the cause, exit 78, no stack trace', async () => {
    const lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for (const [n, p] of [['b', 'a'], ['c', 'b'], ['d', 'c'], ['e', 'd'], ['f', 'e'], ['g', 'f']]) lines.push(`${n}: &${n} [${Array(9).fill(`*${p}`).join(',')}]`)
    lines.push('routes: [{ name: a, upstream: "http://127.0.0.1:1" }]')
    const path = writeTempConfig(lines.join('\n') + '\n')
    const r = await igw(['config', 'validate', path])
    expect(r.status).toBe(78)
    expect(r.out).toContain('(root): YAML aliases expand to too many nodes')
    expect(r.out).not.toMatch(STACK_LINE)
  })

  it('a duplicate key names its line once', () => {
    expect(problems(() => parseConfigText('workers: 1\nworkers: 2\n', 'dup.yaml'))).toEqual(['line 2, column 1: Map keys must be unique'])
  })

  it('a listen port above 65535 is a config error with its path, not a crash inside listen()', () => {
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', listen: '127.0.0.1:99999' }, {}))).toEqual(['listen: expected a port from 0 to 65535, got "127.0.0.1:99999" (set by --listen / IGW_LISTEN)'])
    expect(problems(() => validateConfig({ admin: { listen: ':70000' }, routes: [{ name: 'a', upstream: 'http://a:1' }] }))).toEqual(['admin.listen: expected a port from 0 to 65535, got ":70000"'])
  })

  it('--workers quotes what the operator typed', () => {
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', workers: 'abc' }, {}))).toEqual(['workers: expected "auto" or a whole number of worker threads from 1 to 256, got "abc" (set by --workers / IGW_WORKERS)'])
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', workers: '1.5' }, {}))).toEqual(['workers: expected "auto" or a whole number of worker threads from 1 to 256, got 1.5 (set by --workers / IGW_WORKERS)'])
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', workers: '0' }, {}))[0]).toBe('workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0 (set by --workers / IGW_WORKERS)')
    expect(buildProxyConfig({ upstream: 'http://127.0.0.1:1', workers: '3' }, {}).workers).toBe(3)
  })
})

// Concurrent, here and in the next block: every test runs its own process or proxy (the echo
// backend answers anyone; the taken port is only listened on), and most of their time is process
// starts, which overlap well.
describe.concurrent('no secret in any output', () => {
  const jwtSecret = 'short-but-secret-Zq9'
  it('config errors describe a bad secret without quoting it', ({ expect }) => {
    const p = problems(() => validateConfig({ routes: [{ name: 'a', upstream: 'http://a:1', filters: [{ name: 'tenant', jwt: { secret: jwtSecret } }] }] }))
    expect(p).toEqual(['routes[0].filters[0].jwt.secret: expected an HMAC secret of at least 32 characters, got a value of 20 characters (not shown)'])
    const q = problems(() => validateConfig({ subscriptions: { cursorKey: 'cursor-secret-Zq9', previousCursorKeys: ['old-cursor-secret-Zq9'] }, routes: [{ name: 'a', upstream: 'http://a:1' }] }))
    expect(q.join('\n')).not.toContain('cursor-secret-Zq9')
    expect(q.find((l) => l.startsWith('subscriptions.previousCursorKeys[0]: '))).toBeDefined()
  })
  it('config errors and the CLI mask URL credentials', async ({ expect }) => {
    const p = problems(() => validateConfig({ redis: { url: 'http://igw:hunter2Zq9@cache:6379' }, routes: [{ name: 'a', upstream: 'http://a:1' }] }))
    expect(p).toEqual(['redis.url: expected a redis:// or rediss:// URL with a host, got "http://[redacted]@cache:6379"'])
    const r = await igw(['proxy', '--upstream', 'http://igw:hunter2Zq9@127.0.0.1:1'])
    expect(r.status).toBe(78)
    expect(r.out).toContain('without path, query or credentials')
    expect(r.out).not.toContain('hunter2Zq9')
  })

  it('/config redacts cursor keys, webhook credentials, URL query tokens and passwords holding "@"', async ({ expect }) => {
    const secrets = ['cursorKeyZq9-'.padEnd(40, 'c'), 'oldCursorKeyZq9-'.padEnd(40, 'o'), 'Bearer webhookZq9', 'apikeyZq9', 'querytokenZq9', 'p@ssZq9']
    const proxy = await startTestProxy({
      redis: { url: 'redis://igw:p@ssZq9@127.0.0.1:1' },
      subscriptions: { cursorKey: secrets[0], previousCursorKeys: [secrets[1]!] },
      quotas: { events: { webhook: { url: 'https://hooks.example.com/igw?token=querytokenZq9&team=ops', headers: { Authorization: secrets[2]!, 'X-Api-Key': secrets[3]! } } } },
      routes: [{ name: 'a', upstream: 'http://127.0.0.1:1', type: 'http' }],
    })
    try {
      const text = await (await request(`${proxy.adminUrl}/config`)).body.text()
      for (const s of secrets) expect(text).not.toContain(s)
      const cfg = (JSON.parse(text) as { config: { quotas: { events: { webhook: { url: string } } }; redis: { url: string } } }).config
      expect(cfg.quotas.events.webhook.url).toBe('https://hooks.example.com/[redacted]') // a webhook's path may be its credential: origin only (sweep 19c)
      expect(cfg.redis.url).toBe('redis://[redacted]@127.0.0.1:1')
    } finally {
      await proxy.close()
    }
  })
})

describe.concurrent('the process against its environment (real igw processes)', () => {
  let echo: RawBackend
  let taken: Server
  let takenPort: number
  beforeAll(async () => {
    echo = await startRawBackend(echoHandler)
    taken = createServer()
    await new Promise<void>((resolve) => taken.listen({ host: '127.0.0.1', port: 0 }, resolve))
    takenPort = (taken.address() as { port: number }).port
  })
  afterAll(async () => {
    await echo?.close()
    await new Promise((r) => taken?.close(r))
  })

  it.for([
    ['the proxy port', ['--listen', 'TAKEN', '--admin-listen', '127.0.0.1:0'], 'listen'],
    ['the admin port', ['--listen', '127.0.0.1:0', '--admin-listen', 'TAKEN'], 'admin.listen'],
  ] as const)('%s already in use: one line naming the address, exit 69, no stack trace', async ([, args, key], { expect }) => {
    const addr = `127.0.0.1:${takenPort}`
    const r = await igw(['proxy', '--upstream', echo.url, '--workers', '1', ...args.map((a) => (a === 'TAKEN' ? addr : a))])
    expect(r.status).toBe(69)
    expect(r.out).toContain(`igw: cannot listen on ${addr} (${key}): address already in use`)
    expect(r.out).not.toMatch(STACK_LINE)
  })

  it('a SIGTERM that arrives while the sources still load exits 0 with a log line, not by the signal (143)', async ({ expect }) => {
    const path = writeTempConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    const child = spawn(process.execPath, [IGW_BIN, 'proxy', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    // Node itself catches SIGTERM (to restore the terminal, then re-raise), so its SigCgt bit says
    // nothing; bin/igw.js installs its SIGTERM handler in the same synchronous step as its SIGHUP
    // one (SigCgt bit 0), long before the CLI's own handlers exist.
    const binHandlersIn = () => {
      try {
        const line = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
        return line !== null && (BigInt(`0x${line[1]}`) & 1n) === 1n
      } catch {
        return false
      }
    }
    await waitUntil(() => binHandlersIn() || child.exitCode !== null, 15_000, 'bin/igw.js handlers installed')
    child.kill('SIGTERM')
    const [code, signal] = await exited
    expect({ code, signal }).toEqual({ code: 0, signal: null })
    expect(out).toContain('shutting down during startup')
    expect(out).not.toContain('igw proxy listening')
  })

  it('a SIGTERM to `igw config validate` still ends it by the signal (a killed check is no pass)', async ({ expect }) => {
    const path = writeTempConfig({ listen: '127.0.0.1:0', routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    const child = spawn(process.execPath, [IGW_BIN, 'config', 'validate', path], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    child.kill('SIGTERM')
    const [code, signal] = await exited
    expect(code === 0 && signal === null).toBe(false)
  })

  it('a SIGHUP that arrives while the proxy is still starting does not kill it; the reload happens once it runs', async ({ expect }) => {
    const path = writeTempConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    const child = spawn(process.execPath, [IGW_BIN, 'proxy', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit')
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    try {
      // SigCgt in /proc lists the signals the process catches: SIGHUP (1) must be among them
      // before the proxy is up, or a reload signal in that window ends the process.
      const caughtHup = () => {
        try {
          const line = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
          return line !== null && (BigInt(`0x${line[1]}`) & 1n) === 1n
        } catch {
          return false
        }
      }
      await waitUntil(() => caughtHup() || out.includes('igw proxy listening') || child.exitCode !== null, 15_000, 'SIGHUP caught or listening')
      expect(out).not.toContain('igw proxy listening') // caught before the proxy was up
      child.kill('SIGHUP')
      await waitUntil(() => out.includes('"config applied"') || child.exitCode !== null || child.signalCode !== null, 15_000, 'the replayed reload')
      expect(child.signalCode).toBeNull()
      expect(child.exitCode).toBeNull()
      const admin = Number(/"admin":"[^"]*:(\d+)"/.exec(out)![1])
      const m = await (await request(`http://127.0.0.1:${admin}/metrics`)).body.text()
      expect(metricSum(m, 'igw_config_version')).toBe(2)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
    }
  })
})

describe('reloads against a busy supervisor (in-process proxy, real worker threads)', () => {
  let slowHealth: RawBackend
  beforeAll(async () => {
    slowHealth = await startRawBackend((req, res) => {
      if (req.url === '/health') setTimeout(() => res.end('ok'), 600)
      else echoHandler(req, res)
    })
  })
  afterAll(async () => {
    await slowHealth?.close()
  })

  it('a reload does not turn /readyz to 503 while the new checker probes a known upstream', async () => {
    const doc = (extra: Record<string, unknown>) =>
      validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, upstreams: { app: { url: slowHealth.url, healthCheck: { path: '/health', intervalMs: 60_000, timeoutMs: 5_000 } } }, routes: [{ name: 'a', upstream: 'app', type: 'http' }], ...extra })
    const proxy = await startTestProxy({ upstreams: { app: { url: slowHealth.url, healthCheck: { path: '/health', intervalMs: 60_000, timeoutMs: 5_000 } } }, routes: [{ name: 'a', upstream: 'app', type: 'http' }] })
    try {
      await waitUntil(async () => (await request(`${proxy.adminUrl}/readyz`)).statusCode === 200, 10_000, 'ready')
      expect((await proxy.applyConfig(doc({ log: { level: 'warn' } }))).ok).toBe(true)
      const res = await request(`${proxy.adminUrl}/readyz`)
      expect(res.statusCode).toBe(200)
      expect(await res.body.json()).toMatchObject({ ready: true, version: 2 })
    } finally {
      await proxy.close()
    }
  })

  it('a worker that dies in the middle of applying a config does not wedge reloads forever', async () => {
    const route = (name: string) => ({ name, match: { pathPrefix: `/${name}` }, upstream: slowHealth.url, type: 'http' as const })
    const proxy = await startTestProxy({ mode: 'ingress', workers: 2, routes: [route('a')] })
    try {
      const next = validateConfig({ mode: 'ingress', listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 2, routes: [route('a'), route('b')] })
      const applying = proxy.applyConfig(next)
      await proxy.threads()[0]!.terminate() // crashes before it could answer
      const outcome = await Promise.race([applying, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5_000))])
      expect(outcome).toMatchObject({ ok: true, version: 2 })
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_workers') === 2, 10_000, 'the worker is back')
      // the restarted thread runs version 2 as well: /b answers on every fresh connection
      for (let i = 0; i < 20; i++) {
        const res = await request(`${proxy.url}/b/${i}`, { reset: true })
        await res.body.dump()
        expect(res.statusCode).toBe(200)
      }
      expect((await proxy.reload()).ok).toBe(false) // no file: answered at once, not queued behind a hung apply
    } finally {
      await proxy.close()
    }
  })
})
