// The supervisor (main thread of `igw proxy`): owns the config and its reloads, the shared
// memory, the worker threads (restarted when they crash), upstream health, and the admin port
// whose /metrics is one view merged from every thread.
import { createHash } from 'node:crypto'
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { createServer as createHttpServer, type Server } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { availableParallelism } from 'node:os'
import { basename, dirname } from 'node:path'
import { Worker } from 'node:worker_threads'
import { pino, type DestinationStream, type Logger } from 'pino'
import { AggregatorRegistry, collectDefaultMetrics, Registry } from 'prom-client'
import { splitListenAddress } from '../config/primitives.ts'
import type { GatewayConfig } from '../config/schema.ts'
import { filterModules } from '../filters/registry.ts'
import { UpstreamHealth } from './health.ts'
import { createLogger } from './log.ts'
import type { FromWorker, MetricsJson, ToWorker, WorkerData } from './messages.ts'
import { counter, gauge } from './metrics.ts'
import { mergeUsage, type UsageSnapshot } from './tenant-usage.ts'

export interface ProxyOptions {
  config: GatewayConfig
  /** Re-reads the config (file + CLI overrides) on reload; throws ConfigError when invalid. */
  loadConfig?: () => GatewayConfig
  /** Watched for changes; a change triggers loadConfig. */
  watchPath?: string
  logDestination?: DestinationStream
  /** Version number of the initial config (a control plane's version); default 1. */
  version?: number
}

export interface ReloadResult {
  ok: boolean
  version: number
  error?: string
}

export interface ProxyHandle {
  readonly port: number
  readonly adminPort: number
  readonly workerCount: number
  version(): number
  config(): GatewayConfig
  reload(): Promise<ReloadResult>
  /** Apply a config document (already validated) as a new version. */
  applyConfig(config: GatewayConfig, version?: number): Promise<ReloadResult>
  metricsText(): Promise<string>
  /** Per-tenant usage counted by every worker since the last call (the counters restart at zero). */
  collectUsage(): Promise<UsageSnapshot>
  /** The worker threads (undefined while one restarts); for diagnostics and chaos tests. */
  threads(): (Worker | undefined)[]
  close(): Promise<void>
  readonly logger: Logger
}

const WORKER_URL = new URL('./worker.ts', import.meta.url)
const RESTART_BACKOFF_MS = [100, 250, 500, 1000, 2000, 5000]
// How often the watchdog looks; a stall is noticed within killAfterMs + this.
const WATCHDOG_TICK_MS = 250

interface WorkerSlot {
  id: number
  worker: Worker | undefined
  listening: boolean
  restarts: number
  lastStart: number
  /** When the watchdog's unanswered ping went out (Date.now()); 0: none outstanding. */
  pingSentAt: number
}

/** With port 0 every reusePort listener would get its own port: reserve one for all of them. */
async function reservePort(host: string | undefined, port: number): Promise<{ port: number; release: () => void }> {
  if (port !== 0) return { port, release: () => undefined }
  const placeholder = createNetServer()
  await new Promise<void>((resolve, reject) => {
    placeholder.once('error', reject)
    placeholder.listen({ host, port: 0, reusePort: true }, resolve)
  })
  const addr = placeholder.address()
  const bound = typeof addr === 'object' && addr ? addr.port : 0
  return { port: bound, release: () => placeholder.close() }
}

/** The effective config for /config: secrets and URL credentials replaced. */
export function redactConfig(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (/secret|password|passwd|token|api_?key|private/i.test(key)) return '[redacted]'
    return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/@\s]+)@/i, '$1[redacted]@')
  }
  if (Array.isArray(value)) return value.map((v) => redactConfig(v, key))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = redactConfig(v, k)
    return out
  }
  return value
}

export async function startProxy(opts: ProxyOptions): Promise<ProxyHandle> {
  let config = opts.config
  let version = opts.version ?? 1
  const destination = opts.logDestination ?? pino.destination({ dest: 1, sync: false })
  const logger = createLogger(config.log.level, destination, { component: 'supervisor' })
  // Lifecycle lines (listening, config applied, draining, stopped) are written even when the
  // configured level is warn or error: operators and scripts rely on them. Only "silent" hides them.
  const lifecycle = config.log.level === 'silent' ? logger : logger.child({}, { level: 'info' })

  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'igw_' })
  const versionGauge = gauge(registry, { name: 'igw_config_version', help: 'Config version this proxy runs', aggregator: 'max' })
  const reloadFailures = counter(registry, { name: 'igw_config_reload_failures_total', help: 'Config documents rejected on reload (the previous one stays in force)' })
  const reloads = counter(registry, { name: 'igw_config_reloads_total', help: 'Config versions applied after start' })
  const restarts = counter(registry, { name: 'igw_worker_restarts_total', help: 'Worker threads restarted after a crash' })
  const stalls = counter(registry, { name: 'igw_worker_stalls_total', help: 'Worker threads terminated by the watchdog because their event loop stopped turning' })
  const workersLive = gauge(registry, { name: 'igw_workers', help: 'Worker threads listening' })
  const upstreamUp = gauge(registry, { name: 'igw_upstream_healthy', help: '1 when the upstream answered its last health probe', labelNames: ['upstream'] })
  versionGauge.set(version)

  // Shared memory is allocated once for the life of the process, whatever config comes later.
  const shared: Record<string, SharedArrayBuffer> = {}
  for (const [name, mod] of Object.entries(filterModules)) {
    if (mod.sharedBytes) shared[name] = new SharedArrayBuffer(mod.sharedBytes)
  }

  const { host, port: wantedPort } = splitListenAddress(config.listen)
  const reservation = await reservePort(host, wantedPort)
  const port = reservation.port
  const workerCount = config.workers === 'auto' ? availableParallelism() : config.workers

  let closing = false
  const slots: WorkerSlot[] = Array.from({ length: workerCount }, (_, id) => ({ id, worker: undefined, listening: false, restarts: 0, lastStart: 0, pingSentAt: 0 }))
  let metricsSeq = 0
  const metricsWaiters = new Map<number, { want: number; got: MetricsJson[]; done: (d: MetricsJson[]) => void }>()
  const usageWaiters = new Map<number, { want: number; got: UsageSnapshot[]; done: (d: UsageSnapshot[]) => void }>()
  const applyWaiters = new Map<number, { want: number; ok: number; errors: string[]; done: () => void }>()
  let drainWaiters: (() => void)[] = []

  const health = { current: new UpstreamHealth(config, (s) => upstreamUp.labels(s.name).set(s.healthy ? 1 : 0)) }

  function spawn(slot: WorkerSlot, firstStart: (err?: Error) => void): void {
    const data: WorkerData = { workerId: slot.id, version, config, shared, host, port }
    const worker = new Worker(WORKER_URL, {
      workerData: data,
      stdout: false,
      stderr: false,
      // A small young generation: a proxy's allocations die young, and each scavenge also
      // frees the dead socket Buffers that otherwise pile up (as RSS) until V8's external
      // memory trigger (~64 MB) fires. Measured: no throughput cost, far flatter RSS.
      resourceLimits: { maxYoungGenerationSizeMb: config.workerHeap.youngGenerationMb, ...(config.workerHeap.maxOldGenerationMb ? { maxOldGenerationSizeMb: config.workerHeap.maxOldGenerationMb } : {}) },
    })
    slot.worker = worker
    slot.lastStart = Date.now()
    slot.pingSentAt = 0
    let started = false
    worker.on('message', (msg: FromWorker) => {
      switch (msg.t) {
        case 'log':
          destination.write(msg.chunk)
          return
        case 'listening':
          slot.listening = true
          workersLive.set(slots.filter((s) => s.listening).length)
          if (!started) {
            started = true
            firstStart()
          }
          return
        case 'fatal':
          if (!started) {
            started = true
            firstStart(new Error(`worker ${slot.id}: ${msg.error}`))
          }
          return
        case 'metrics': {
          const w = metricsWaiters.get(msg.id)
          if (w) {
            w.got.push(msg.data)
            if (w.got.length >= w.want) w.done(w.got)
          }
          return
        }
        case 'usage': {
          const w = usageWaiters.get(msg.id)
          if (w) {
            w.got.push(msg.data)
            if (w.got.length >= w.want) w.done(w.got)
          }
          return
        }
        case 'applied':
        case 'apply-failed': {
          const w = applyWaiters.get(msg.version)
          if (w) {
            if (msg.t === 'applied') w.ok++
            else w.errors.push(msg.error)
            if (w.ok + w.errors.length >= w.want) w.done()
          }
          return
        }
        case 'pong':
          slot.pingSentAt = 0
          return
        case 'drained':
          // Its logs were posted before this message, so they are in; now the thread can go.
          slot.listening = false
          void worker.terminate()
          return
      }
    })
    worker.on('error', (err) => logger.error({ err, worker: slot.id }, 'worker thread error'))
    worker.on('exit', (code) => {
      slot.listening = false
      slot.worker = undefined
      workersLive.set(slots.filter((s) => s.listening).length)
      for (const w of metricsWaiters.values()) w.want--
      for (const w of usageWaiters.values()) w.want--
      if (closing) {
        if (slots.every((s) => s.worker === undefined)) for (const d of drainWaiters.splice(0)) d()
        return
      }
      if (!started) return // a start failure is reported by firstStart, not retried here
      // A worker died: the others keep serving; bring it back with a growing backoff.
      restarts.inc()
      const stable = Date.now() - slot.lastStart > 30_000
      slot.restarts = stable ? 0 : slot.restarts + 1
      const delay = RESTART_BACKOFF_MS[Math.min(slot.restarts, RESTART_BACKOFF_MS.length - 1)]!
      logger.error({ worker: slot.id, code, restartInMs: delay }, 'worker thread exited; restarting')
      setTimeout(() => {
        if (!closing) spawn(slot, (err) => err && logger.error({ err }, 'worker restart failed'))
      }, delay).unref()
    })
  }

  try {
    await Promise.all(slots.map((slot) => new Promise<void>((resolve, reject) => spawn(slot, (err) => (err ? reject(err) : resolve())))))
  } catch (err) {
    closing = true
    await Promise.all(slots.map((s) => s.worker?.terminate()))
    reservation.release()
    health.current.stop()
    throw err
  } finally {
    reservation.release()
  }

  // The watchdog: each listening worker gets a ping whenever its last one was answered; one left
  // unanswered for killAfterMs means its event loop is stuck, so the thread is terminated and the
  // exit handler restarts it like a crashed one. The others keep serving meanwhile.
  const watchdog = setInterval(() => {
    const killAfter = config.workerWatchdog.killAfterMs
    if (closing || killAfter === 0) return
    const now = Date.now()
    for (const slot of slots) {
      const worker = slot.worker
      if (worker === undefined || !slot.listening) continue
      if (slot.pingSentAt === 0) {
        slot.pingSentAt = now
        worker.postMessage({ t: 'ping' } satisfies ToWorker)
      } else if (now - slot.pingSentAt >= killAfter) {
        stalls.inc()
        logger.error({ worker: slot.id, stalledMs: now - slot.pingSentAt }, 'worker event loop stalled; terminating the thread')
        slot.listening = false
        slot.pingSentAt = 0
        void worker.terminate()
      }
    }
  }, WATCHDOG_TICK_MS)
  watchdog.unref()

  function post(msg: ToWorker): number {
    let n = 0
    for (const s of slots) {
      if (s.worker && s.listening) {
        s.worker.postMessage(msg)
        n++
      }
    }
    return n
  }

  async function applyConfig(next: GatewayConfig, explicitVersion?: number): Promise<ReloadResult> {
    const nextVersion = explicitVersion ?? version + 1
    const fixed = ['listen', 'admin', 'workers', 'listener'] as const
    for (const key of fixed) {
      if (JSON.stringify(next[key]) !== JSON.stringify(config[key])) logger.warn({ key }, `config change of "${key}" needs a restart; the running value stays`)
    }
    const merged: GatewayConfig = { ...next, listen: config.listen, admin: config.admin, workers: config.workers, listener: config.listener }
    const outcome = await new Promise<{ ok: number; errors: string[] }>((resolve) => {
      const waiter = { want: 0, ok: 0, errors: [] as string[], done: () => resolve(waiter) }
      applyWaiters.set(nextVersion, waiter)
      waiter.want = post({ t: 'config', version: nextVersion, config: merged })
      if (waiter.want === 0) resolve(waiter)
    })
    applyWaiters.delete(nextVersion)
    if (outcome.errors.length > 0) {
      reloadFailures.inc()
      logger.error({ version: nextVersion, errors: outcome.errors }, 'config rejected by workers')
      return { ok: false, version, error: outcome.errors[0] }
    }
    config = merged
    version = nextVersion
    versionGauge.set(version)
    reloads.inc()
    health.current.stop()
    health.current = new UpstreamHealth(config, (s) => upstreamUp.labels(s.name).set(s.healthy ? 1 : 0))
    lifecycle.info({ version }, 'config applied')
    return { ok: true, version }
  }

  let reloading: Promise<ReloadResult> | undefined
  async function reload(): Promise<ReloadResult> {
    if (!opts.loadConfig) return { ok: false, version, error: 'no config file to reload' }
    // Reloads never overlap: a change during a reload is picked up by the next one.
    while (reloading) await reloading
    reloading = (async () => {
      let next: GatewayConfig
      try {
        next = opts.loadConfig!()
      } catch (err) {
        reloadFailures.inc()
        logger.error({ err: { message: (err as Error).message } }, 'config reload rejected; keeping the running config')
        return { ok: false, version, error: (err as Error).message }
      }
      return applyConfig(next)
    })()
    try {
      return await reloading
    } finally {
      reloading = undefined
    }
  }

  // Watch the directory, not the file: editors and Kubernetes ConfigMaps replace files by rename.
  let watcher: FSWatcher | undefined
  let lastDigest = ''
  if (opts.watchPath) {
    const path = opts.watchPath
    const digest = () => {
      try {
        return createHash('sha256').update(readFileSync(path)).digest('hex')
      } catch {
        return ''
      }
    }
    lastDigest = digest()
    let debounce: NodeJS.Timeout | undefined
    const name = basename(path)
    watcher = watch(dirname(path), (_event, file) => {
      if (file !== null && file !== name && !file.startsWith('..')) return
      clearTimeout(debounce)
      debounce = setTimeout(() => {
        const d = digest()
        if (d === '' || d === lastDigest) return
        lastDigest = d
        void reload()
      }, 100)
    })
    watcher.on('error', (err) => logger.warn({ err }, 'config watch failed; SIGHUP still reloads'))
  }

  async function collectMetrics(): Promise<string> {
    const id = ++metricsSeq
    const fromWorkers = await new Promise<MetricsJson[]>((resolve) => {
      const waiter = { want: 0, got: [] as MetricsJson[], done: resolve }
      metricsWaiters.set(id, waiter)
      waiter.want = post({ t: 'metrics', id })
      if (waiter.want === 0) resolve([])
      setTimeout(() => resolve(waiter.got), 2_000).unref()
    })
    metricsWaiters.delete(id)
    const own = (await registry.getMetricsAsJSON()) as unknown as MetricsJson
    return AggregatorRegistry.aggregate([own, ...fromWorkers] as never).metrics()
  }

  async function collectUsage(): Promise<UsageSnapshot> {
    const id = ++metricsSeq
    const parts = await new Promise<UsageSnapshot[]>((resolve) => {
      const waiter = { want: 0, got: [] as UsageSnapshot[], done: resolve }
      usageWaiters.set(id, waiter)
      waiter.want = post({ t: 'usage', id })
      if (waiter.want === 0) resolve([])
      setTimeout(() => resolve(waiter.got), 2_000).unref()
    })
    usageWaiters.delete(id)
    return parts.reduce<UsageSnapshot>((acc, p) => mergeUsage(acc, p), {})
  }

  // --- admin port ---------------------------------------------------------------------------
  const admin: Server = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })
      res.end(JSON.stringify(body, null, 2))
    }
    switch (path) {
      case '/healthz': {
        const live = slots.filter((s) => s.listening).length
        json(live > 0 ? 200 : 503, { status: live > 0 ? 'ok' : 'no worker listening', workers: live })
        return
      }
      case '/readyz': {
        const live = slots.filter((s) => s.listening).length
        const upstreams = [...health.current.states.values()].map((s) => ({ name: s.name, url: s.url, healthy: s.healthy, error: s.error }))
        const ready = !closing && live === slots.length && upstreams.every((u) => u.healthy)
        json(ready ? 200 : 503, { ready, version, workers: { listening: live, wanted: slots.length }, draining: closing, upstreams })
        return
      }
      case '/metrics':
        collectMetrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': registry.contentType })
            res.end(text)
          },
          (err: Error) => json(500, { error: err.message }),
        )
        return
      case '/config':
        json(200, { version, config: redactConfig(config) })
        return
      case '/':
        json(200, { endpoints: ['/healthz', '/readyz', '/metrics', '/config'] })
        return
      default:
        json(404, { error: `no admin endpoint ${path}` })
    }
  })
  const adminAddr = splitListenAddress(config.admin.listen)
  await new Promise<void>((resolve, reject) => {
    admin.once('error', reject)
    admin.listen({ host: adminAddr.host, port: adminAddr.port }, resolve)
  })
  const adminBound = admin.address()
  const adminPort = typeof adminBound === 'object' && adminBound ? adminBound.port : adminAddr.port
  lifecycle.info({ listen: `${host ?? '*'}:${port}`, admin: `${adminAddr.host ?? '*'}:${adminPort}`, workers: workerCount, mode: config.mode, version }, 'igw proxy listening')

  async function close(): Promise<void> {
    if (closing) return
    closing = true
    clearInterval(watchdog)
    watcher?.close()
    health.current.stop()
    const deadlineMs = config.shutdown.drainTimeoutMs
    lifecycle.info({ deadlineMs }, 'draining')
    const allExited = new Promise<void>((resolve) => {
      if (slots.every((s) => s.worker === undefined)) resolve()
      else drainWaiters.push(resolve)
    })
    for (const s of slots) s.worker?.postMessage({ t: 'drain', deadlineMs } satisfies ToWorker)
    // A worker that ignores the drain is stopped shortly after the deadline.
    const hard = setTimeout(() => {
      for (const s of slots) void s.worker?.terminate()
    }, deadlineMs + 2_000)
    await allExited
    clearTimeout(hard)
    await new Promise<void>((resolve) => admin.close(() => resolve()))
    admin.closeAllConnections()
    lifecycle.info('stopped')
    if ('flushSync' in destination && typeof destination.flushSync === 'function') {
      try {
        ;(destination as { flushSync(): void }).flushSync()
      } catch {}
    }
  }

  return {
    port,
    adminPort,
    workerCount,
    logger,
    version: () => version,
    config: () => config,
    reload,
    applyConfig,
    metricsText: collectMetrics,
    collectUsage,
    threads: () => slots.map((s) => s.worker),
    close,
  }
}
