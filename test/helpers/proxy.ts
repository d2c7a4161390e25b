// Start the real proxy for a test: in-process (startProxy, worker threads and all) or as a
// child process running the real CLI (for signals and process-level behaviour).
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfig, GatewayConfigInput } from '../../config/schema.ts'
import { startProxy, type ProxyHandle } from '../../proxy/supervisor.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import type { FilterModules } from '../../filters/registry.ts'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const IGW_BIN = join(ROOT, 'bin/igw.js')

/** Collects log lines as parsed JSON. */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = []
  readonly raw: string[] = []
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue
      this.raw.push(line)
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>)
      } catch {}
    }
    cb()
  }
  find(msg: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.msg === msg)
  }
}

/** The document startTestProxy runs, validated: `doc` over its defaults (see there). */
export function testProxyConfig(doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>): GatewayConfig {
  return validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, shutdown: { idleGraceMs: 0 }, ...doc })
}

export interface TestProxy extends ProxyHandle {
  url: string
  adminUrl: string
  logs: LogCapture
}

/**
 * Loopback, port 0, 1 worker unless said otherwise; config given as a document (validated here).
 * Without a `shutdown` section, close() does not hold idle keep-alive connections for the drain's
 * grace (`idleGraceMs: 0`): a test's pooled client connections cost every close 1 s otherwise.
 * Tests of the drain give their own `shutdown`.
 */
export async function startTestProxy(doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>, opts: { watchPath?: string; loadConfig?: () => ReturnType<typeof validateConfig> } = {}): Promise<TestProxy> {
  const config = testProxyConfig(doc)
  const logs = new LogCapture()
  const handle = await startProxy({ config, logDestination: logs as never, watchPath: opts.watchPath, loadConfig: opts.loadConfig })
  return Object.assign(handle, { url: `http://127.0.0.1:${handle.port}`, adminUrl: `http://127.0.0.1:${handle.adminPort}`, logs })
}

/**
 * A proxy whose DLP filter masks (`mask_basic`) every export under `/export/` of `upstream`: the
 * export policy off, a fresh keyring. For tests of how exports are read (charsets, framing).
 */
export function startExportMaskingProxy(upstream: string): Promise<TestProxy> {
  const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-export-')), 'keyring.json')
  return startTestProxy({
    mode: 'ingress',
    dlp: { keyring: { file: keyring }, policy: { enabled: false } },
    routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/export/' }] } }] }],
  })
}

export function writeTempConfig(doc: unknown, name = 'igw.yaml'): string {
  const dir = mkdtempSync(join(tmpdir(), 'igw-test-'))
  const path = join(dir, name)
  writeFileSync(path, typeof doc === 'string' ? doc : stringify(doc))
  return path
}

export interface SpawnedIgw {
  child: ChildProcess
  port: number
  adminPort: number
  url: string
  adminUrl: string
  output: string[]
  exited: Promise<number | null>
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

/** Run `igw <args>` as a child process and wait for its "listening" line. */
export async function spawnIgw(args: string[], env: NodeJS.ProcessEnv = {}): Promise<SpawnedIgw> {
  const child = spawn(process.execPath, [IGW_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const output: string[] = []
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  const ready = new Promise<{ port: number; adminPort: number }>((resolve, reject) => {
    let buf = ''
    const onData = (d: Buffer) => {
      buf += d.toString()
      let i
      while ((i = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        output.push(line)
        try {
          const j = JSON.parse(line) as { msg?: string; listen?: string; admin?: string }
          if (j.msg === 'igw proxy listening') resolve({ port: Number(j.listen!.split(':').pop()), adminPort: Number(j.admin!.split(':').pop()) })
        } catch {}
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', (d: Buffer) => output.push(d.toString()))
    void exited.then((code) => reject(new Error(`igw exited with ${code} before listening:\n${output.join('\n')}`)))
  })
  const { port, adminPort } = await ready
  return {
    child,
    port,
    adminPort,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    output,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

/** Sum of a counter/gauge family in Prometheus text, optionally filtered by a label substring. */
export function metricSum(text: string, name: string, labelFilter?: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (rest[0] !== '{' && rest[0] !== ' ') continue
    if (labelFilter && !line.includes(labelFilter)) continue
    sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/**
 * One WorkerProxy in this thread (no supervisor) on 127.0.0.1:0 with `modules` — a test's own
 * filters in place of registered ones; `url` is its ws:// address for /graphql, `port` its port.
 * `logs` captures its info-level log (silent without it); `registry` holds its metrics.
 */
export async function startWorkerProxy(config: GatewayConfig, modules: FilterModules, opts: { logs?: Writable } = {}): Promise<{ proxy: WorkerProxy; url: string; port: number; registry: Registry }> {
  const registry = new Registry()
  const logger = opts.logs === undefined ? pino({ level: 'silent' }) : pino({ level: 'info' }, opts.logs)
  const proxy = new WorkerProxy({ workerId: 0, logger, metrics: new ProxyMetrics(registry), shared: {}, modules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const port = (proxy.server.address() as AddressInfo).port
  return { proxy, url: `ws://127.0.0.1:${port}/graphql`, port, registry }
}
