// The supervisor (main thread of `igw proxy`): owns the config and its reloads, the shared
// memory, the worker threads (restarted when they crash), upstream health, and the admin port
// whose /metrics is one view merged from every thread.
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import type { Server } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { availableParallelism, totalmem } from 'node:os'
import { basename, dirname } from 'node:path'
import { Worker } from 'node:worker_threads'
import { pino, type DestinationStream, type Logger } from 'pino'
import { AggregatorRegistry, collectDefaultMetrics, Registry } from 'prom-client'
import { canonicalJson, sha256Hex } from '../config/canonical-json.ts'
import { defaultReadinessUpstreams } from '../config/defaults.ts'
import { fileStamp } from '../config/file-stamp.ts'
import { splitListenAddress } from '../config/primitives.ts'
import { redactConfig } from '../config/redact.ts'
import type { GatewayConfig } from '../config/schema.ts'
import { sharedStateModules } from '../filters/registry.ts'
import { UpstreamHealth, type UpstreamState } from './health.ts'
import { createLogger, LogWindow } from './log.ts'
import type { FromWorker, MetricsJson, ToWorker, WorkerData } from './messages.ts'
import { collectErrorsCounter, counter, gauge, logCollectErrors, metricsJson } from './metrics.ts'
import { mergeUsage, type UsageSnapshot } from './tenant-usage.ts'

// Not an `import … from 'node:http'`: building that module's ESM namespace reads each export,
// and http.WebSocket's getter loads Node's bundled undici, ~50 ms of the supervisor's start for
// a class it never uses.
const { createServer: createHttpServer } = process.getBuiltinModule('node:http')

export interface ProxyOptions {
  config: GatewayConfig
  /** Re-reads the config (file + CLI overrides) on reload; throws ConfigError when invalid. */
  loadConfig?: () => GatewayConfig
  /** Watched for changes; a change triggers loadConfig. */
  watchPath?: string
  logDestination?: DestinationStream
  /** Version number of the initial config (a control plane's version); default 1. */
  version?: number
  /** Where the initial config came from, shown by /readyz and /config; default `file`. */
  source?: ConfigSource
}

/**
 * Where the running config came from: `file` (--config/--upstream, no control plane),
 * `control-plane` (a version it sent), `last-known-good` (the snapshot on disk, booted while the
 * control plane was away or its head unusable), `fallback` (--config/--upstream while a control
 * plane has given nothing yet). A fallback still runs as version 1 here (versions key the apply
 * waiters and worker sync, where 0 means "none"), so this is what tells it from the control plane's
 * version 1.
 */
export type ConfigSource = 'file' | 'control-plane' | 'last-known-good' | 'fallback'

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
  /** Apply a config document (already validated) as a new version; `source` defaults to `file`. */
  applyConfig(config: GatewayConfig, version?: number, source?: ConfigSource): Promise<ReloadResult>
  /**
   * Counts a config document refused before it reached the workers (a pushed snapshot that does
   * not verify or does not validate here) in igw_config_reload_failures_total, as a refused file is.
   */
  noteRejected(): void
  /**
   * The control plane says `version`, running from a last-known-good snapshot, is its head: the
   * running config is now the control plane's (`source` becomes `control-plane`; nothing reloads).
   */
  confirmedByControlPlane(version: number): void
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
// A thread that lived this long was stable: its death starts the slot's backoff (and count) anew.
const STABLE_MS = 30_000
// A slot whose threads died this many times in a row, each before it was stable (the backoff has
// reached its cap), is crash looping: /healthz fails, so the kubelet restarts the pod. Restarting
// the thread for ever kept liveness green while one worker in N never served (a bad file in the
// image, corrupted shared memory), and /readyz only took the pod out of its Service.
const CRASH_LOOP_RESTARTS = 5
// How often the watchdog looks; a stall is noticed within killAfterMs + this.
const WATCHDOG_TICK_MS = 250
// A starting thread is pinged once its modules are loaded (its first pong); one that never gets
// that far within this (or killAfterMs, when longer) is stopped as stalled all the same.
const WORKER_LOAD_DEADLINE_MS = 30_000
// How often the config file is stat-ed besides the directory watch (see the watch below).
const CONFIG_POLL_MS = 2_000
// A changed config file is read once it has stayed the same this long (see the watch), or after
// this many looks at one that keeps changing.
const CONFIG_SETTLE_MS = 200
const CONFIG_SETTLE_LOOKS = 25
// A reloaded document the workers could not build is read again after these (doubling).
const REFUSED_RETRY_MIN_MS = 2_000
const REFUSED_RETRY_MAX_MS = 60_000

interface WorkerSlot {
  id: number
  worker: Worker | undefined
  listening: boolean
  restarts: number
  /** Its threads keep dying before they are stable (CRASH_LOOP_RESTARTS in a row). */
  crashLoop: boolean
  lastStart: number
  /** When the watchdog's unanswered ping went out (Date.now()); 0: none outstanding. */
  pingSentAt: number
  /** The thread's event loop has answered (its first pong comes once its modules are loaded). */
  answered: boolean
  /** When the watchdog terminated this thread (it has not exited yet); 0: it did not. */
  stalledAt: number
  /** When a thread is respawned in this slot (the restart backoff); 0: none scheduled. */
  restartAt: number
  /** The config version this thread runs: the one it booted with or last built. */
  version: number
  /** The version syncVersions sent this thread, not answered yet; 0: none. */
  syncing: number
  /** The supervisor's version this thread could not build (it serves `version`), and why. */
  syncFailed: { version: number; error: string } | undefined
  /** That build tried again (REFUSED_RETRY_*, doubling per failure of this thread). */
  syncRetry: NodeJS.Timeout | undefined
  syncRetryDelay: number
  /** What this thread answered to the last metrics scrape (see collectMetrics). */
  lastMetrics: MetricsJson | undefined
  /** When that answer came (Date.now()); 0: none. */
  lastMetricsAt: number
  /**
   * The scrape that answer was for (0: none; Infinity: the thread's unasked last answer as it
   * died). A thread collects asynchronously (a quota gauge reads Redis), so with two scrapes at
   * once (two Prometheus replicas) the older one's answer can come second: kept, it rolled every
   * counter of the thread back, which Prometheus reads as a counter reset.
   */
  lastMetricsId: number
}

/** Where the container's memory limit is read: cgroup v2, then v1 (IGW_CGROUP_MEMORY_MAX_FILE overrides). */
const CGROUP_MEMORY_FILES = ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']

/**
 * The memory limit of this process's container in bytes, or undefined when it has none: cgroup
 * v2 `memory.max` ("max": none), else v1 `memory.limit_in_bytes` (a huge number: none), else what
 * libuv finds (process.constrainedMemory()). A limit at or above the machine's memory is none.
 * IGW_CGROUP_MEMORY_MAX_FILE names the one file to read instead (tests; unusual mounts).
 */
export function containerMemoryLimit(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const machine = totalmem()
  const usable = (n: number): number | undefined => (Number.isFinite(n) && n > 0 && n < machine && n < 2 ** 60 ? n : undefined)
  const override = env.IGW_CGROUP_MEMORY_MAX_FILE
  for (const file of override ? [override] : CGROUP_MEMORY_FILES) {
    let text: string
    try {
      text = readFileSync(file, 'utf8').trim()
    } catch {
      continue
    }
    if (text === 'max') return undefined
    if (/^\d+$/.test(text)) return usable(Number(text))
  }
  if (override) return undefined
  return usable(typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0)
}

/**
 * The old-generation cap of each worker thread when workerHeap.maxOldGenerationMb is absent. Each
 * V8 isolate sized its heap from the memory it saw, so the supervisor's and N workers' limits
 * together exceeded the container's: a worker could grow until the kernel OOM-killed the whole
 * pod (no drain) instead of that one thread failing and being restarted. Three quarters of the
 * limit go to heaps (the rest is native memory: socket and body Buffers, code, stacks), split in
 * equal shares among the workers and the supervisor thread; a worker's share holds its young
 * generation too. Undefined (V8's default) when the container has no memory limit.
 */
export function defaultWorkerOldGenerationMb(limitBytes: number | undefined, workers: number, youngGenerationMb: number): number | undefined {
  if (limitBytes === undefined) return undefined
  const share = Math.floor((limitBytes / 1024 / 1024) * 0.75 / (workers + 1))
  // Below ~64 MB a worker with a rule pack, a policy bundle and a manifest loaded dies of its
  // heap under load and restarts in a loop; the start warns instead (too many workers for the
  // memory: `workers: auto` counts the node's cores when the pod has no CPU limit).
  return Math.max(MIN_WORKER_OLD_GENERATION_MB, share - effectiveYoungGenerationMb(youngGenerationMb))
}

/**
 * The young generation V8 actually reserves for `maxYoungGenerationSizeMb`: three semi-spaces,
 * each a third of it rounded up to a power of two (16 reserves 24, 32 reserves 48; measured as
 * heap_size_limit − maxOldGenerationSizeMb). Subtracting the nominal value left the workers' heaps
 * over their share of the container by the difference.
 */
export function effectiveYoungGenerationMb(youngGenerationMb: number): number {
  return 3 * 2 ** Math.ceil(Math.log2(youngGenerationMb / 3))
}
export const MIN_WORKER_OLD_GENERATION_MB = 64

/** Metric types whose values only grow: a retired thread's are kept (gauges are not: it is gone). */
const CUMULATIVE = new Set(['counter', 'histogram'])

/** A thread's answer to a metrics scrape, with the thread that gave it. */
interface MetricsAnswer {
  from: Worker
  data: MetricsJson
}

/**
 * Adds the counters and histograms of `from` into `into` (same name, same metricName and labels:
 * values summed), synchronously: the retired total must change in the same turn as the thread
 * it counts leaves the live set, or a scrape in between counts that thread twice or not at all.
 */
function addCumulative(into: MetricsJson, from: MetricsJson): MetricsJson {
  const byName = new Map(into.map((m) => [m.name, m]))
  for (const m of from) {
    // (prom-client's typings declare a numeric enum; the JSON carries "counter", "gauge", …)
    if (!CUMULATIVE.has(m.type as unknown as string)) continue
    let target = byName.get(m.name)
    if (target === undefined) {
      target = { ...m, values: [] }
      byName.set(m.name, target)
      into.push(target)
    }
    const index = new Map<string, MetricsJson[number]['values'][number]>()
    for (const v of target.values) index.set(seriesKey(v), v)
    for (const v of m.values) {
      const key = seriesKey(v)
      const have = index.get(key)
      if (have !== undefined) have.value += v.value
      else {
        const copy = { ...v, labels: { ...v.labels } }
        target.values.push(copy)
        index.set(key, copy)
      }
    }
  }
  return into
}

/**
 * A dying thread's last counts (`dying`, sent unasked as it dies) against its latest scrape answer
 * (`answered`): the thread keeps serving and answering scrapes while it collects them, so an
 * answer read after them can arrive first. A thread's counters and histograms only grow: of each
 * such family the snapshot with the larger total is the later one, and is kept whole (buckets,
 * sum and count from one reading). Before, the older snapshot replaced the newer and was retired
 * with the thread: its counters dropped at the next scrape, a reset to Prometheus.
 */
function laterCumulative(answered: MetricsJson, dying: MetricsJson): MetricsJson {
  const before = new Map(answered.map((m) => [m.name, m]))
  // a counter's series summed; a histogram's counts (its buckets and sums grow with them)
  const total = (m: MetricsJson[number]) => {
    const histogram = (m.type as unknown as string) === 'histogram'
    let sum = 0
    for (const v of m.values) if (!histogram || (v as { metricName?: string }).metricName?.endsWith('_count')) sum += v.value
    return sum
  }
  return dying.map((m) => {
    const had = before.get(m.name)
    return had !== undefined && CUMULATIVE.has(m.type as unknown as string) && total(had) > total(m) ? had : m
  })
}

function seriesKey(v: { labels: object; metricName?: string }): string {
  const labels = Object.entries(v.labels as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `${v.metricName ?? ''}\u0000${JSON.stringify(labels)}`
}

/** Replies awaited from the worker threads a request went to; a thread that exits no longer counts. */
interface Waiter<T> {
  pending: Set<number>
  got: T[]
  done: (got: T[]) => void
}

/**
 * With port 0 every reusePort listener would get its own port: reserve one for all of them. A
 * fixed port is first bound without reusePort, which any listener there refuses: the workers'
 * reusePort listeners bound beside another igw's (a forgotten one, a copy with another admin
 * port) without a word, and the kernel split the connections between the two processes.
 */
async function reservePort(host: string | undefined, port: number): Promise<{ port: number; release: () => void }> {
  const placeholder = createNetServer()
  await new Promise<void>((resolve, reject) => {
    placeholder.once('error', reject)
    placeholder.listen({ host, port, reusePort: port === 0 }, resolve)
  })
  if (port !== 0) {
    await new Promise<void>((resolve) => placeholder.close(() => resolve()))
    return { port, release: () => undefined }
  }
  const addr = placeholder.address()
  const bound = typeof addr === 'object' && addr ? addr.port : 0
  return { port: bound, release: () => placeholder.close() }
}

/**
 * The proxy could not start for a reason of its environment: `listen` (a port taken, an address
 * this host does not have) or `start` (a worker that failed to build its chain). The CLI prints
 * the message as one line and exits with a code per kind, no stack trace.
 */
export class StartupError extends Error {
  readonly kind: 'listen' | 'start'
  constructor(message: string, kind: 'listen' | 'start') {
    super(message)
    this.name = 'StartupError'
    this.kind = kind
  }
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use (another process listens there)',
  EADDRNOTAVAIL: 'address not available on this host',
  EACCES: 'permission denied (ports below 1024 need privileges)',
}

function listenError(what: string, address: string, code: string | undefined, fallback: string): StartupError {
  const reason = code !== undefined ? LISTEN_REASONS[code] : undefined
  return reason ? new StartupError(`cannot listen on ${address} (${what}): ${reason} [${code}]`, 'listen') : new StartupError(`cannot start: ${what}: ${fallback}`, 'start')
}

/** What the config file holds, as a digest ('' when it cannot be read). */
function configDigest(path: string): string {
  try {
    return sha256Hex(readFileSync(path))
  } catch {
    return ''
  }
}

export async function startProxy(opts: ProxyOptions): Promise<ProxyHandle> {
  // The watch's baseline is the file as the running config was read from it, taken before the
  // first await: the worker threads take a second or more to load, and a file changed meanwhile
  // (a ConfigMap update racing a rollout) became the baseline when it was taken once they
  // listened, so the change was never applied; the proxy ran the old document until the next edit.
  // The stat first: a change between the two is seen by the first poll.
  const watchBaseline = opts.watchPath !== undefined ? { stat: fileStamp(opts.watchPath), digest: configDigest(opts.watchPath) } : undefined
  let config = opts.config
  let version = opts.version ?? 1
  let source: ConfigSource = opts.source ?? 'file'
  // Asynchronous stdout; with a reader that stops (an unread pipe, a stuck log shipper) its
  // buffer grew without bound (every thread's lines land here) until the process was OOM-killed.
  const stdout = opts.logDestination === undefined ? pino.destination({ dest: 1, sync: false, maxLength: config.log.maxBufferedBytes || undefined }) : undefined
  const destination = opts.logDestination ?? stdout!
  const logger = createLogger(config.log.level, destination, { component: 'supervisor' })
  // Lifecycle lines (listening, config applied, draining, stopped) are written even when the
  // configured level is warn or error: operators and scripts rely on them. Only "silent" hides them.
  const lifecycleFor = (c: GatewayConfig): Logger => (c.log.level === 'silent' ? logger : logger.child({}, { level: 'info' }))
  let lifecycle = lifecycleFor(config)

  const registry = new Registry()
  // Counts of worker threads that exited (see retire() below). Declared before any thread is
  // spawned: a thread that fails at start exits, and retires, while startProxy is still running.
  const retired: MetricsJson = []
  collectDefaultMetrics({ register: registry, prefix: 'igw_' })
  const versionGauge = gauge(registry, { name: 'igw_config_version', help: 'Config version this proxy runs', aggregator: 'max' })
  const reloadFailures = counter(registry, { name: 'igw_config_reload_failures_total', help: 'Config documents rejected on reload (the previous one stays in force)' })
  const reloads = counter(registry, { name: 'igw_config_reloads_total', help: 'Config versions applied after start' })
  // As Prometheus's own prometheus_config_last_reload_successful: 0 from a refused document (file,
  // SIGHUP, control-plane push) until one applies, so an alert lasts as long as the proxy runs an
  // older document than it was given (a counter's increase() forgot it after its window). Also 0
  // while a worker thread serves an older version than the running one (workers.staleConfig): it
  // stayed 1 then, and IgwConfigReloadRejected never fired. Read at each scrape, so neither cause
  // clears the other.
  let lastDocumentApplied = true
  gauge(registry, {
    name: 'igw_config_last_reload_successful',
    help: 'Whether the last config document offered to this proxy applied in every worker thread (1) or was refused, or a thread could not build it, the previous one kept in force (0)',
    collect() {
      this.set(lastDocumentApplied && staleWorkers().length === 0 ? 1 : 0)
    },
  })
  const refusedReload = (): void => {
    reloadFailures.inc()
    lastDocumentApplied = false
  }
  const restarts = counter(registry, { name: 'igw_worker_restarts_total', help: 'Worker threads restarted after a crash' })
  const logDropped = counter(registry, { name: 'igw_log_dropped_bytes_total', help: 'Log output dropped because stdout did not keep up and log.maxBufferedBytes was held' })
  const logDropWindow = new LogWindow(10_000)
  stdout?.on('drop', (data: string | Buffer) => {
    logDropped.inc(Buffer.byteLength(data))
    // Said once in a while on stderr (stdout is the stuck one), not through the full buffer.
    const held = logDropWindow.take()
    if (held !== undefined) process.stderr.write(`igw: stdout is not keeping up; log output over log.maxBufferedBytes (${config.log.maxBufferedBytes} bytes) is being dropped (igw_log_dropped_bytes_total)\n`)
  })
  const stalls = counter(registry, { name: 'igw_worker_stalls_total', help: 'Worker threads terminated by the watchdog because their event loop stopped turning' })
  const workersLive = gauge(registry, { name: 'igw_workers', help: 'Worker threads listening' })
  const crashLooping = gauge(registry, { name: 'igw_workers_crash_looping', help: `Worker slots whose threads died ${CRASH_LOOP_RESTARTS} times in a row, each within ${STABLE_MS / 1000} s of its start; /healthz fails while above 0` })
  const collectErrors = collectErrorsCounter(registry)
  const onCollectError = logCollectErrors(logger)
  // Each worker's V8 heap (igw_nodejs_heap_* are the supervisor thread's alone): what a worker
  // uses against the limit it was given, read by the supervisor at every scrape.
  const workerHeapUsed = gauge(registry, { name: 'igw_worker_heap_used_bytes', help: 'V8 heap in use per worker thread', labelNames: ['worker'] })
  const workerHeapLimit = gauge(registry, { name: 'igw_worker_heap_size_limit_bytes', help: 'V8 heap size limit per worker thread (workerHeap, or a share of the container memory limit)', labelNames: ['worker'] })
  const upstreamUp = gauge(registry, { name: 'igw_upstream_healthy', help: '1 when the upstream answered its last health probe', labelNames: ['upstream'] })
  // Version numbers are per process in file mode (each pod counts its own reloads from 1): the
  // digest says whether two proxies run the same document, whatever number they gave it.
  const digestInfo = gauge(registry, { name: 'igw_config_digest_info', help: 'Always 1, labelled with a digest of the config this proxy runs (equal configs, equal digest)', labelNames: ['digest'] })
  const setDigest = (c: GatewayConfig): void => {
    digestInfo.reset()
    digestInfo.labels(sha256Hex(canonicalJson(c)).slice(0, 16)).set(1)
  }
  // 0 on the fallback: its internal version 1 would equal the control plane's version 1 (an alert
  // comparing the head with the proxies took a proxy on its --upstream fallback as up to date).
  const setVersionGauge = (): void => versionGauge.set(source === 'fallback' ? 0 : version)
  setVersionGauge()
  setDigest(config)

  // Shared memory is allocated once for the life of the process, whatever config comes later:
  // the filters that keep some are loaded here (the others when a chain names one).
  const sharedOwners = await sharedStateModules()
  const shared: Record<string, SharedArrayBuffer> = {}
  for (const [name, mod] of sharedOwners) {
    if (mod.sharedBytes) shared[name] = new SharedArrayBuffer(mod.sharedBytes)
  }

  const { host, port: wantedPort } = splitListenAddress(config.listen)
  let reservation: Awaited<ReturnType<typeof reservePort>>
  try {
    reservation = await reservePort(host, wantedPort)
  } catch (err) {
    throw listenError('listen', config.listen, (err as NodeJS.ErrnoException).code, (err as Error).message)
  }
  const port = reservation.port
  const workerCount = config.workers === 'auto' ? availableParallelism() : config.workers
  // Read once: the container's limit does not change under a running process.
  const memoryLimit = containerMemoryLimit()
  const workerOldGenerationMb = (c: GatewayConfig): number | undefined => c.workerHeap.maxOldGenerationMb ?? defaultWorkerOldGenerationMb(memoryLimit, workerCount, c.workerHeap.youngGenerationMb)

  let closing = false
  const slots: WorkerSlot[] = Array.from({ length: workerCount }, (_, id) => ({ id, worker: undefined, listening: false, restarts: 0, crashLoop: false, lastStart: 0, pingSentAt: 0, answered: false, stalledAt: 0, restartAt: 0, version, syncing: 0, syncFailed: undefined, syncRetry: undefined, syncRetryDelay: REFUSED_RETRY_MIN_MS, lastMetrics: undefined, lastMetricsAt: 0, lastMetricsId: 0 }))
  let metricsSeq = 0
  const metricsWaiters = new Map<number, Waiter<MetricsAnswer>>()
  const usageWaiters = new Map<number, Waiter<UsageSnapshot>>()
  /** Usage drained from threads outside a collection (late answers, last counts): see 'usage'. */
  let unclaimedUsage: UsageSnapshot = {}
  /** Keyed by version; `got` holds one entry per answer: undefined (applied) or the error. */
  const applyWaiters = new Map<number, Waiter<string | undefined>>()
  /** A config version is being applied: a thread that starts meanwhile is synced when it ends. */
  let applying = 0
  const answer = <T>(w: Waiter<T> | undefined, slotId: number, value: T): void => {
    if (w === undefined || !w.pending.delete(slotId)) return
    w.got.push(value)
    if (w.pending.size === 0) w.done(w.got)
  }
  const forget = <T>(w: Waiter<T>, slotId: number): void => {
    if (w.pending.delete(slotId) && w.pending.size === 0) w.done(w.got)
  }
  let drainWaiters: (() => void)[] = []

  const onHealth = (s: UpstreamState): void => {
    upstreamUp.labels(s.name).set(s.healthy ? 1 : 0)
  }
  const health = { current: new UpstreamHealth(config, onHealth) }

  /**
   * What thread `id` held in shared memory and can no longer give back itself: released once the
   * thread is gone (its 'exit': it runs no more code), whether it crashed or drained.
   * `threadId`: its Worker's, taken at its start (the Worker says -1 once it exited).
   */
  function releaseShares(id: number, threadId: number): number {
    let released = 0
    for (const [name, mod] of sharedOwners) {
      const buffer = shared[name]
      if (mod.workerExited === undefined || buffer === undefined) continue
      try {
        released += mod.workerExited(buffer, id, threadId)
      } catch (err) {
        logger.error({ err, worker: id, filter: name }, 'releasing a dead worker thread\'s shared state failed')
      }
    }
    return released
  }

  /** `restart`: it replaces a thread that died (one that dies before listening is retried too). */
  function spawn(slot: WorkerSlot, firstStart: (err?: Error) => void, restart = false): void {
    const data: WorkerData = { workerId: slot.id, version, config, shared, host, port }
    const oldGenerationMb = workerOldGenerationMb(config)
    const worker = new Worker(WORKER_URL, {
      workerData: data,
      stdout: false,
      stderr: false,
      // A small young generation: a proxy's allocations die young, and each scavenge also
      // frees the dead socket Buffers that otherwise pile up (as RSS) until V8's external
      // memory trigger (~64 MB) fires. Measured: no throughput cost, far flatter RSS.
      // The old generation: workerHeap.maxOldGenerationMb, or a share of the container's memory
      // limit (see defaultWorkerOldGenerationMb), or V8's default when there is no limit.
      resourceLimits: { maxYoungGenerationSizeMb: config.workerHeap.youngGenerationMb, ...(oldGenerationMb !== undefined ? { maxOldGenerationSizeMb: oldGenerationMb } : {}) },
    })
    slot.worker = worker
    const threadId = worker.threadId
    slot.lastStart = Date.now()
    slot.pingSentAt = 0
    slot.answered = false
    slot.stalledAt = 0
    slot.restartAt = 0
    slot.version = data.version
    slot.syncing = 0
    slot.syncFailed = undefined
    clearTimeout(slot.syncRetry)
    slot.syncRetry = undefined
    slot.syncRetryDelay = REFUSED_RETRY_MIN_MS
    let started = false
    /** Why the thread died, when Node says (the heap limit: ERR_WORKER_OUT_OF_MEMORY; an uncaught exception). */
    let died: Error | undefined
    worker.on('message', (msg: FromWorker) => {
      switch (msg.t) {
        case 'log':
          destination.write(msg.chunk)
          return
        case 'listening':
          setListening(slot, true)
          // A thread restarted while a reload was in flight booted with the config of its spawn.
          if (applying === 0) syncVersions()
          if (!started) {
            started = true
            firstStart()
          }
          return
        case 'fatal':
          if (!started) {
            started = true
            firstStart(Object.assign(new Error(`worker ${slot.id}: ${msg.error}`), { code: msg.code }))
          }
          return
        case 'metrics':
          if (slot.worker === worker && (msg.id === 0 || msg.id > slot.lastMetricsId)) {
            slot.lastMetrics = msg.id === 0 && slot.lastMetrics !== undefined ? laterCumulative(slot.lastMetrics, msg.data) : msg.data
            slot.lastMetricsAt = Date.now()
            slot.lastMetricsId = msg.id === 0 ? Number.POSITIVE_INFINITY : msg.id
          }
          answer(metricsWaiters.get(msg.id), slot.id, { from: worker, data: msg.data })
          return
        case 'usage': {
          // An answer nobody waits for any more (it came after the 2 s deadline) or that nobody
          // asked for (a thread's last counts, sent as it drains or dies) was drained from the
          // thread all the same: kept for the next collection instead of being lost.
          const w = usageWaiters.get(msg.id)
          if (w !== undefined && w.pending.has(slot.id)) answer(w, slot.id, msg.data)
          else unclaimedUsage = mergeUsage(unclaimedUsage, msg.data)
          return
        }
        case 'applied':
          if (slot.worker === worker) {
            slot.version = msg.version
            if (slot.syncing === msg.version) slot.syncing = 0
            slot.syncFailed = undefined
            slot.syncRetryDelay = REFUSED_RETRY_MIN_MS
          }
          answer(applyWaiters.get(msg.version), slot.id, undefined)
          return
        case 'apply-failed':
          if (slot.worker === worker && slot.syncing === msg.version) syncFailed(slot, msg.version, msg.error)
          answer(applyWaiters.get(msg.version), slot.id, msg.error)
          return
        case 'pong':
          if (slot.worker === worker) {
            slot.pingSentAt = 0
            slot.answered = true
          }
          return
        case 'drained':
          // Its logs were posted before this message, so they are in; now the thread can go.
          setListening(slot, false)
          void worker.terminate()
          return
      }
    })
    worker.on('error', (err) => {
      died = err
      logger.error({ err, worker: slot.id }, 'worker thread error')
    })
    worker.on('exit', (code) => {
      const stalledMs = slot.stalledAt === 0 ? undefined : slot.stalledAt - slot.lastStart
      slot.stalledAt = 0
      slot.worker = undefined
      setListening(slot, false)
      // Whatever it was asked is answered without it (a reload must not wait forever on a
      // thread that died in the middle of applying; the restart boots with the current config).
      for (const w of metricsWaiters.values()) forget(w, slot.id)
      for (const w of usageWaiters.values()) forget(w, slot.id)
      for (const w of applyWaiters.values()) forget(w, slot.id)
      retire(slot)
      const released = releaseShares(slot.id, threadId)
      if (closing) {
        if (slots.every((s) => s.worker === undefined)) for (const d of drainWaiters.splice(0)) d()
        return
      }
      if (!started) {
        // It died before it listened without saying why (the heap limit while loading, an
        // uncaught exception, terminated): a start failure all the same. Unreported, the first
        // start waited forever (the CLI hung after one log line) and a restarted thread's slot
        // stayed empty for the life of the process (one worker less, /readyz 503 for good).
        started = true
        const errCode = (died as NodeJS.ErrnoException | undefined)?.code
        const why = died !== undefined ? `: ${died.message}${errCode !== undefined ? ` [${errCode}]` : ''}` : stalledMs !== undefined ? `: terminated by the watchdog ${stalledMs} ms after its start, its event loop stuck (workerWatchdog.killAfterMs)` : ''
        firstStart(Object.assign(new Error(`worker ${slot.id} exited with code ${code} before listening${why}`), errCode !== undefined ? { code: errCode } : {}))
        if (!restart) return // the proxy's start fails with it; a restart is retried below
      }
      // A worker died: the others keep serving; bring it back with a growing backoff.
      restarts.inc()
      const stable = Date.now() - slot.lastStart > STABLE_MS
      slot.restarts = stable ? 0 : slot.restarts + 1
      const delay = RESTART_BACKOFF_MS[Math.min(slot.restarts, RESTART_BACKOFF_MS.length - 1)]!
      logger.error({ worker: slot.id, code, restartInMs: delay, ...(released > 0 ? { quotaSlotsReleased: released } : {}) }, 'worker thread exited; restarting')
      const looping = slot.restarts >= CRASH_LOOP_RESTARTS
      if (looping && !slot.crashLoop) logger.error({ worker: slot.id, restarts: slot.restarts }, `worker thread is crash looping (${slot.restarts} deaths in a row, each within ${STABLE_MS / 1000} s of its start); /healthz fails until a thread of it stays up ${STABLE_MS / 1000} s`)
      setCrashLoop(slot, looping)
      slot.restartAt = Date.now() + delay
      setTimeout(() => {
        if (!closing) spawn(slot, (err) => err && logger.error({ err }, 'worker restart failed'), true)
      }, delay).unref()
    })
  }

  /** igw_workers follows every change at once (a thread the watchdog stopped no longer serves, exited or not). */
  function setListening(slot: WorkerSlot, listening: boolean): void {
    slot.listening = listening
    workersLive.set(slots.filter((s) => s.listening).length)
  }

  function setCrashLoop(slot: WorkerSlot, looping: boolean): void {
    slot.crashLoop = looping
    crashLooping.set(slots.filter((s) => s.crashLoop).length)
  }

  // The admin port is bound before any worker listens: when it is taken (a second igw started
  // by mistake) the proxy port never accepts a connection that a failed start would then reset.
  // --- admin port ---------------------------------------------------------------------------
  const admin: Server = createHttpServer((req, res) => {
    // A request target in absolute-form ("GET http://pod:9901/metrics", as a client configured
    // with an HTTP proxy sends it) is to be accepted like origin-form (RFC 9112 §3.2.2): its path
    // was looked up whole, and every endpoint answered 404.
    const target = req.url ?? '/'
    const path = (target.startsWith('/') ? target : (URL.parse(target)?.pathname ?? target)).split('?')[0]
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers })
      res.end(JSON.stringify(body, null, 2))
    }
    // Every endpoint is read-only. Other methods were answered as a GET: a POST of a config
    // document to /config got 200 and its version, as if it had been applied.
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(405, { error: `method ${req.method} not allowed on the admin port (GET or HEAD only)` }, { allow: 'GET, HEAD' })
      return
    }
    switch (path) {
      case '/healthz': {
        // Liveness: a worker listens, and no slot is crash looping (a pod restart is the remedy
        // left, as for a container in CrashLoopBackOff). A single crash is no reason to fail.
        const live = slots.filter((s) => s.listening).length
        const looping = slots.filter((s) => s.crashLoop).map((s) => ({ worker: s.id, restarts: s.restarts }))
        const status = live === 0 ? 'no worker listening' : looping.length > 0 ? 'worker crash loop' : 'ok'
        json(status === 'ok' ? 200 : 503, { status, workers: live, ...(looping.length > 0 ? { crashLooping: looping } : {}) })
        return
      }
      case '/readyz': {
        const live = slots.filter((s) => s.listening).length
        const upstreams = [...health.current.states.values()].map((s) => ({ name: s.name, url: s.url, healthy: s.healthy, error: s.error }))
        // Upstream health counts as admin.readiness.upstreams says: in ingress mode (default
        // "none") one dead backend made every gateway pod unready, and Kubernetes then took all
        // of them out of the Service: every other route went down with it.
        const policy = config.admin.readiness?.upstreams ?? defaultReadinessUpstreams(config.mode)
        const upstreamsOk = policy === 'none' || upstreams.length === 0 || (policy === 'all' ? upstreams.every((u) => u.healthy) : upstreams.some((u) => u.healthy))
        const ready = !closing && live === slots.length && upstreamsOk
        // Why a slot does not serve: its thread starting (for how long), stopped by the watchdog
        // and not gone yet, or its replacement waiting out the restart backoff.
        const now = Date.now()
        const notListening = slots
          .filter((s) => !s.listening)
          .map((s) => (s.worker === undefined ? { worker: s.id, state: 'restarting', inMs: Math.max(0, s.restartAt - now) } : s.stalledAt !== 0 ? { worker: s.id, state: 'stalled', forMs: now - s.stalledAt } : { worker: s.id, state: 'starting', forMs: now - s.lastStart }))
        // Serving all the same, with the version they have: not a reason to leave the Service
        // (a file every pod lacks would take them all out), but no longer hidden.
        const staleConfig = staleWorkers().map((s) => ({ worker: s.id, version: s.version, error: s.syncFailed!.error }))
        json(ready ? 200 : 503, { ready, version, source, workers: { listening: live, wanted: slots.length, ...(notListening.length > 0 && !closing ? { notListening } : {}), ...(staleConfig.length > 0 ? { staleConfig } : {}) }, draining: closing, readiness: { upstreams: policy }, upstreams })
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
        json(200, { version, source, config: redactConfig(config) })
        return
      case '/':
        json(200, { endpoints: ['/healthz', '/readyz', '/metrics', '/config'] })
        return
      default:
        json(404, { error: `no admin endpoint ${path}` })
    }
  })
  const adminAddr = splitListenAddress(config.admin.listen)
  try {
    await new Promise<void>((resolve, reject) => {
      admin.once('error', reject)
      admin.listen({ host: adminAddr.host, port: adminAddr.port }, resolve)
    })
  } catch (err) {
    reservation.release()
    health.current.stop()
    throw listenError('admin.listen', config.admin.listen, (err as NodeJS.ErrnoException).code, (err as Error).message)
  }
  const adminBound = admin.address()
  const adminPort = typeof adminBound === 'object' && adminBound ? adminBound.port : adminAddr.port

  // The watchdog: each running worker gets a ping whenever its last one was answered; one left
  // unanswered for killAfterMs means its event loop is stuck, so the thread is terminated and the
  // exit handler restarts it like a crashed one. The others keep serving meanwhile. A thread still
  // starting is watched too, from its first pong (modules loaded) on, and one that never answers
  // is stopped after WORKER_LOAD_DEADLINE_MS: stuck while it built its config (a runaway loop, a
  // file read that never returns), it was never pinged, the start waited for ever and the slot
  // stayed empty (/readyz 503) without a word. Runs from the first start: a stalled first start
  // fails it. It also ends the crash loop of a slot whose thread has stayed up STABLE_MS.
  const watchdog = setInterval(() => {
    if (closing) return
    const now = Date.now()
    for (const slot of slots) {
      if (slot.crashLoop && slot.listening && now - slot.lastStart > STABLE_MS) {
        setCrashLoop(slot, false)
        logger.warn({ worker: slot.id }, 'worker thread stable again; no longer crash looping')
      }
    }
    const killAfter = config.workerWatchdog.killAfterMs
    if (killAfter === 0) return
    for (const slot of slots) {
      const worker = slot.worker
      if (worker === undefined || slot.stalledAt !== 0) continue
      let stalledMs: number
      if (!slot.answered) {
        stalledMs = now - slot.lastStart
        if (stalledMs < Math.max(killAfter, WORKER_LOAD_DEADLINE_MS)) continue
      } else if (slot.pingSentAt === 0) {
        slot.pingSentAt = now
        worker.postMessage({ t: 'ping' } satisfies ToWorker)
        continue
      } else {
        stalledMs = now - slot.pingSentAt
        if (stalledMs < killAfter) continue
      }
      stalls.inc()
      const starting = !slot.listening
      logger.error({ worker: slot.id, stalledMs, ...(starting ? { startedMsAgo: now - slot.lastStart } : {}) }, starting ? 'worker thread stalled while starting; terminating the thread' : 'worker event loop stalled; terminating the thread')
      slot.stalledAt = now
      slot.pingSentAt = 0
      setListening(slot, false)
      void worker.terminate()
    }
  }, WATCHDOG_TICK_MS)
  watchdog.unref()

  try {
    await Promise.all(slots.map((slot) => new Promise<void>((resolve, reject) => spawn(slot, (err) => (err ? reject(err) : resolve())))))
  } catch (err) {
    closing = true
    clearInterval(watchdog)
    await Promise.all(slots.map((s) => s.worker?.terminate()))
    reservation.release()
    health.current.stop()
    admin.closeAllConnections()
    await new Promise<void>((resolve) => admin.close(() => resolve()))
    const msg = (err as Error).message
    const code = (err as NodeJS.ErrnoException).code
    throw code !== undefined && code in LISTEN_REASONS ? listenError('listen', config.listen, code, msg) : new StartupError(`cannot start: ${msg}`, 'start')
  } finally {
    reservation.release()
  }

  /** Sends to every listening thread; returns their slot ids. */
  function post(msg: ToWorker): Set<number> {
    const sent = new Set<number>()
    for (const s of slots) {
      if (s.worker && s.listening) {
        s.worker.postMessage(msg)
        sent.add(s.id)
      }
    }
    return sent
  }

  /**
   * Every listening thread runs the supervisor's version: one restarted during a reload booted
   * with the config of its spawn, and after a reload some threads refused, those that took it
   * go back to the running one. Called only while no apply is in flight.
   */
  function syncVersions(): void {
    for (const s of slots) {
      if (s.worker && s.listening && s.version !== version && s.syncing !== version && s.syncRetry === undefined) {
        s.syncing = version
        s.worker.postMessage({ t: 'config', version, config } satisfies ToWorker)
      }
    }
  }

  /** Listening threads serving an older version than the running one, which they could not build. */
  function staleWorkers(): WorkerSlot[] {
    return slots.filter((s) => s.listening && s.version !== version && s.syncFailed !== undefined)
  }

  /**
   * A thread that could not build the running version (a file it names gone since the reload
   * read it) serves the one it has. It was recorded as running the current one and never sent it
   * again: only its own log line told. Now it is recorded as what it runs, shown by /readyz
   * (workers.staleConfig), counted as a refused reload, and tried again as a refused reload is.
   */
  function syncFailed(slot: WorkerSlot, failed: number, error: string): void {
    slot.syncing = 0
    slot.syncFailed = { version: failed, error }
    reloadFailures.inc()
    const delay = slot.syncRetryDelay
    slot.syncRetryDelay = Math.min(delay * 2, REFUSED_RETRY_MAX_MS)
    logger.error({ worker: slot.id, version: failed, runs: slot.version, error, retryInMs: delay }, 'worker thread could not build the running config version; it serves the one it has until a retry builds it')
    clearTimeout(slot.syncRetry)
    slot.syncRetry = setTimeout(() => {
      slot.syncRetry = undefined
      if (!closing && applying === 0) syncVersions() // else the apply's end syncs it
    }, delay)
    slot.syncRetry.unref()
  }

  /**
   * A reload (SIGHUP, the file, a push) once the drain began is not applied: the draining threads
   * built a new version (chain, pools, Redis) for nothing, and the supervisor started a new upstream
   * health checker after close() had stopped the last one, which then probed every upstream for
   * the rest of the process (for good in an embedding that closes the proxy and goes on).
   */
  function refusedWhileDraining(): ReloadResult {
    lifecycle.info({ version }, 'config reload ignored: the proxy is draining')
    return { ok: false, version, error: 'the proxy is draining (shutting down); the config is not reloaded' }
  }

  // Applies run one at a time, in call order (a file reload, SIGHUP, a control plane push, the
  // API): two at once took the same "version + 1", so one waiter replaced the other's and that
  // caller (a reload, and every reload queued behind it) never returned.
  let applyQueue: Promise<unknown> = Promise.resolve()
  /** Results of documents that validated but a worker could not build (a file they name, say). */
  const refusedByWorkers = new WeakSet<ReloadResult>()
  function applyConfig(next: GatewayConfig, explicitVersion?: number, nextSource: ConfigSource = 'file'): Promise<ReloadResult> {
    const run = applyQueue.then(() => applyConfigNow(next, explicitVersion, nextSource))
    applyQueue = run.catch(() => undefined)
    return run
  }

  async function applyConfigNow(next: GatewayConfig, explicitVersion: number | undefined, nextSource: ConfigSource): Promise<ReloadResult> {
    if (closing) return refusedWhileDraining()
    const nextVersion = explicitVersion ?? version + 1
    const fixed = ['listen', 'workers', 'listener'] as const
    for (const key of fixed) {
      if (JSON.stringify(next[key]) !== JSON.stringify(config[key])) logger.warn({ key }, `config change of "${key}" needs a restart; the running value stays`)
    }
    // admin.listen is bound once; admin.readiness is read per /readyz and follows reloads.
    if (next.admin.listen !== config.admin.listen) logger.warn({ key: 'admin.listen' }, 'config change of "admin.listen" needs a restart; the running value stays')
    // A thread's heap limits are fixed when it is spawned. Taken from a reload, they reached only
    // threads restarted after a crash (a mix of limits; a cap too small to load with turned every
    // later crash into a thread that never came back), while /config showed them as in force.
    for (const key of ['maxOldGenerationMb', 'youngGenerationMb'] as const) {
      if (next.workerHeap[key] !== config.workerHeap[key]) logger.warn({ key: `workerHeap.${key}` }, `config change of "workerHeap.${key}" needs a restart; the running value stays`)
    }
    // The stdout buffer's bound is set when the destination opens.
    if (next.log.maxBufferedBytes !== config.log.maxBufferedBytes) logger.warn({ key: 'log.maxBufferedBytes' }, 'config change of "log.maxBufferedBytes" needs a restart; the running value stays')
    const workerHeap = { ...next.workerHeap, maxOldGenerationMb: config.workerHeap.maxOldGenerationMb, youngGenerationMb: config.workerHeap.youngGenerationMb }
    const log = { ...next.log, maxBufferedBytes: config.log.maxBufferedBytes }
    const merged: GatewayConfig = { ...next, listen: config.listen, admin: { ...next.admin, listen: config.admin.listen }, workers: config.workers, listener: config.listener, workerHeap, log }
    applying++
    const answers = await new Promise<(string | undefined)[]>((resolve) => {
      const waiter: Waiter<string | undefined> = { pending: new Set(), got: [], done: resolve }
      applyWaiters.set(nextVersion, waiter)
      waiter.pending = post({ t: 'config', version: nextVersion, config: merged })
      if (waiter.pending.size === 0) resolve([])
    })
    applyWaiters.delete(nextVersion)
    applying--
    // The drain began while the threads built it: the proxy is going away with the version it
    // ran (a checker started now would probe the upstreams for as long as the process lives).
    if (closing) return refusedWhileDraining()
    const errors = answers.filter((e): e is string => e !== undefined)
    if (errors.length > 0) {
      refusedReload()
      logger.error({ version: nextVersion, errors }, 'config rejected by workers')
      if (applying === 0) syncVersions() // threads that took it return to the running version
      const refused: ReloadResult = { ok: false, version, error: errors[0] }
      refusedByWorkers.add(refused)
      return refused
    }
    config = merged
    version = nextVersion
    source = nextSource
    setVersionGauge()
    setDigest(config)
    // The supervisor's own lines follow a reloaded log.level, as the workers' do.
    if (logger.level !== config.log.level) {
      logger.level = config.log.level
      lifecycle = lifecycleFor(config)
    }
    reloads.inc()
    lastDocumentApplied = true
    const previousHealth = health.current
    health.current = new UpstreamHealth(config, onHealth, previousHealth)
    previousHealth.stop()
    // The gauge shows the upstreams checked now: one the new config no longer has (or no longer
    // checks) kept its last value for the life of the process, so a removed upstream that was
    // down paged (IgwUpstreamUnhealthy) forever. Those carried over keep their verdict.
    upstreamUp.reset()
    for (const st of health.current.states.values()) if (st.checked) upstreamUp.labels(st.name).set(st.healthy ? 1 : 0)
    lifecycle.info({ version }, 'config applied')
    if (applying === 0) syncVersions() // a thread that started meanwhile booted with the previous config
    return { ok: true, version }
  }

  // Reloads never overlap, and those asked for while one runs share the one that follows it: it
  // reads the file after each of them was asked, which is all any of them needs. A burst of
  // SIGHUPs (a reloader looping, a file event per write) was a reload each, every one a new
  // config version whose workers built a new chain, pools and Redis clients.
  let reloading: Promise<ReloadResult> | undefined
  let reloadNext: Promise<ReloadResult> | undefined
  /** Digest of the config file as a reload last read it (or as the proxy started with it): the watch reloads only on a change from it. */
  let lastDigest = ''
  function reload(): Promise<ReloadResult> {
    if (!opts.loadConfig) return Promise.resolve({ ok: false, version, error: 'no config file to reload' })
    if (closing) return Promise.resolve(refusedWhileDraining())
    if (reloadNext) return reloadNext
    if (reloading) {
      const after = (): Promise<ReloadResult> => {
        reloadNext = undefined
        return startReload()
      }
      reloadNext = reloading.then(after, after)
      return reloadNext
    }
    return startReload()
  }
  // A document that validates but that the workers cannot build names something outside it that
  // is not there yet: a key file, a rule pack, a bundle. In Kubernetes the Secret or the second
  // ConfigMap holding it is updated on its own sync, often after the config's: the reload was
  // refused once and never tried again, since the config file did not change any more; the proxy
  // ran the old document until someone edited it or sent SIGHUP. Such a refusal is retried with a
  // growing delay (2 s … 60 s) for as long as it lasts; any reload meanwhile replaces the retry. A
  // document that does not validate is not retried: it cannot change without the file changing.
  let retryTimer: NodeJS.Timeout | undefined
  let retryDelay = REFUSED_RETRY_MIN_MS
  function retryIfRefused(result: ReloadResult): void {
    if (result.ok || !refusedByWorkers.has(result) || closing) {
      if (result.ok) retryDelay = REFUSED_RETRY_MIN_MS
      return
    }
    const delay = retryDelay
    retryDelay = Math.min(retryDelay * 2, REFUSED_RETRY_MAX_MS)
    logger.warn({ retryInMs: delay }, 'config reload will be retried: a worker could not build it (a file it names may not be there yet)')
    retryTimer = setTimeout(() => {
      retryTimer = undefined
      if (!closing) void reload()
    }, delay)
    retryTimer.unref()
  }
  function startReload(): Promise<ReloadResult> {
    clearTimeout(retryTimer)
    retryTimer = undefined
    const run = (async (): Promise<ReloadResult> => {
      // The file as this reload reads it is no change for the watch: a SIGHUP sent for an edit
      // (a config reloader sidecar, `kill -HUP` after saving) was followed by the watch's own
      // reload of the same edit, so every change was applied twice — two versions, two rebuilt chains.
      if (opts.watchPath !== undefined) {
        const d = configDigest(opts.watchPath)
        if (d !== '') lastDigest = d
      }
      let next: GatewayConfig
      try {
        next = opts.loadConfig!()
      } catch (err) {
        refusedReload()
        logger.error({ err: { message: (err as Error).message } }, 'config reload rejected; keeping the running config')
        return { ok: false, version, error: (err as Error).message }
      }
      return applyConfig(next)
    })()
    reloading = run
    const done = (): void => {
      if (reloading === run) reloading = undefined
    }
    run.then(done, done)
    // (A reload queued behind this one starts right after and clears a retry scheduled here.)
    run.then(retryIfRefused, () => undefined)
    return run
  }

  // Watch the directory, not the file: editors and Kubernetes ConfigMaps replace files by rename.
  // The directory watch alone goes deaf when the directory it holds is replaced: inotify follows
  // the inode, so a config reached through a swapped directory symlink (a ConfigMap `items` path
  // with a subdirectory: conf -> ..data/conf, or a `current -> release-N` layout) or a directory
  // removed and created again is never heard from after the first swap. A stat poll of the path
  // (symlinks followed) catches those, and a watch that cannot start (inotify limits) is no
  // reason not to serve: the poll and SIGHUP still reload.
  let watcher: FSWatcher | undefined
  let stopPolling: (() => void) | undefined
  if (opts.watchPath) {
    const path = opts.watchPath
    const digest = () => configDigest(path)
    const statKey = () => fileStamp(path)
    // Taken when the proxy began to start (see watchBaseline): a change during the start is
    // seen by the first poll, and the directory watch hears every later one.
    let lastStat = watchBaseline!.stat
    lastDigest = watchBaseline!.digest
    // A file rewritten in place (`cat > igw.yaml`, an editor that does not rename) is read only
    // once it stays the same, digest and stat, for CONFIG_SETTLE_MS: read 100 ms after the last
    // write event, a writer pausing mid-write had its truncated file applied (a cut-off tenants
    // list) or refused (igw_config_last_reload_successful 0, a reload failure) for a moment. One
    // that never settles is read after CONFIG_SETTLE_LOOKS looks. SIGHUP reloads at once.
    let debounce: NodeJS.Timeout | undefined
    let seen: { digest: string; stat: string; at: number } | undefined
    let looks = 0
    const look = () => {
      debounce = undefined
      if (closing) return
      const now = { stat: statKey(), digest: digest(), at: performance.now() }
      if (now.digest === '' || now.digest === lastDigest) {
        seen = undefined
        looks = 0
        return
      }
      const same = seen !== undefined && seen.digest === now.digest && seen.stat === now.stat
      if (same && now.at - seen!.at < CONFIG_SETTLE_MS) {
        debounce = setTimeout(look, CONFIG_SETTLE_MS - (now.at - seen!.at))
        return
      }
      if (!same && ++looks <= CONFIG_SETTLE_LOOKS) {
        seen = now
        debounce = setTimeout(look, CONFIG_SETTLE_MS)
        return
      }
      seen = undefined
      looks = 0
      lastDigest = now.digest
      void reload()
    }
    const changed = () => {
      if (closing) return
      clearTimeout(debounce)
      debounce = setTimeout(look, 100)
    }
    const name = basename(path)
    try {
      watcher = watch(dirname(path), (_event, file) => {
        if (file !== null && file !== name && !file.startsWith('..')) return
        changed()
      })
      watcher.on('error', (err) => logger.warn({ err }, 'config directory watch failed; the file is still polled and SIGHUP still reloads'))
    } catch (err) {
      logger.warn({ err }, 'config directory watch failed; the file is still polled and SIGHUP still reloads')
    }
    const poll = setInterval(() => {
      const k = statKey()
      if (k === lastStat) return
      lastStat = k
      changed()
    }, CONFIG_POLL_MS)
    poll.unref()
    stopPolling = () => {
      clearInterval(poll)
      clearTimeout(debounce)
    }
  }

  /**
   * Counters must never go backwards in a scrape (Prometheus reads a drop as a reset: rate()
   * spikes, alerts fire). A thread that exits takes its counts with it, so the counters and
   * histograms of its last answer are kept here and added to every scrape from then on; a thread
   * that does not answer a scrape in time is counted with its last answer.
   *
   * Kept in step with the live set: a thread's last answer moves into `retired` in the same turn
   * as its slot lets it go (slot.worker undefined), and a scrape counts the live slots' latest
   * answers only, never the answers themselves (a gone thread's is in `retired`). A thread that answered a scrape and died before the scrape
   * ended was counted twice in it (its answer and its retired counts), and the next scrape then
   * dropped by that much: a counter reset to Prometheus.
   */
  function retire(slot: WorkerSlot): void {
    const last = slot.lastMetrics
    slot.lastMetrics = undefined
    slot.lastMetricsAt = 0
    slot.lastMetricsId = 0
    if (last !== undefined) addCumulative(retired, last)
  }

  /**
   * Asks every listening thread (`ask` builds the message for the request id) and settles with
   * the waiter when all answered, or after 2 s: `got` holds the answers, `pending` who did not.
   */
  async function gather<T>(waiters: Map<number, Waiter<T>>, ask: (id: number) => ToWorker): Promise<Waiter<T>> {
    const id = ++metricsSeq
    const waiter: Waiter<T> = { pending: new Set(), got: [], done: () => undefined }
    await new Promise<void>((resolve) => {
      waiter.done = () => resolve()
      waiters.set(id, waiter)
      waiter.pending = post(ask(id))
      if (waiter.pending.size === 0) resolve()
      setTimeout(resolve, 2_000).unref()
    })
    waiters.delete(id)
    return waiter
  }

  /** Sets the per-worker heap gauges from each listening thread (bounded like a metrics answer). */
  async function readWorkerHeaps(): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), 2_000)
      timer.unref()
    })
    const results = await Promise.all(
      slots.map(async (s) => {
        const worker = s.worker
        if (worker === undefined || !s.listening) return undefined
        try {
          const stats = await Promise.race([worker.getHeapStatistics(), late])
          return stats === undefined ? undefined : { id: s.id, stats }
        } catch {
          return undefined // exited meanwhile
        }
      }),
    )
    clearTimeout(timer)
    workerHeapUsed.reset()
    workerHeapLimit.reset()
    for (const r of results) {
      if (r === undefined) continue
      workerHeapUsed.labels(String(r.id)).set(r.stats.used_heap_size)
      workerHeapLimit.labels(String(r.id)).set(r.stats.heap_size_limit)
    }
  }

  // A scrape that serves a thread's last answer says so in a log line, at most once a minute.
  const STALE_LOG_EVERY_MS = 60_000
  let staleLoggedAt = 0
  let staleUnlogged = 0

  /**
   * One view over every thread. A live thread is counted with its latest answer: the one it gave
   * this scrape, or, when it did not answer in time (its event loop busy: a CPU-heavy request, a
   * runaway pattern) or was not asked (the watchdog or a drain already stopped it and it has not
   * exited yet), the one before. Such a scrape is partial: its numbers for that thread are as old
   * as that answer (missing when it never answered), and nothing else in the text showed it.
   * igw_metrics_stale_workers counts those threads in this scrape (0 when every thread answered)
   * and igw_worker_metrics_age_seconds{worker} is how old each thread's numbers are, as
   * node_exporter's node_scrape_collector_success / _duration_seconds tell a partial scrape.
   */
  async function collectMetrics(): Promise<string> {
    const asked = Date.now()
    const [{ got, pending }] = await Promise.all([gather(metricsWaiters, (id) => ({ t: 'metrics', id })), readWorkerHeaps()])
    const own = (await metricsJson(registry, collectErrors, onCollectError)) as unknown as MetricsJson
    // From here on synchronous: no thread can exit between reading the answers and `retired`.
    const answered = new Set<Worker>()
    for (const a of got) answered.add(a.from)
    const fromWorkers: MetricsJson[] = []
    const ages: { labels: { worker: string }; value: number }[] = []
    const stale: { worker: number; ageMs: number | null }[] = []
    for (const s of slots) {
      const worker = s.worker
      if (worker === undefined) continue // gone: its counts are in `retired`
      const last = s.lastMetrics
      if (last !== undefined) {
        fromWorkers.push(last)
        ages.push({ labels: { worker: String(s.id) }, value: Math.max(0, asked - s.lastMetricsAt) / 1000 })
      }
      if (!answered.has(worker) && (pending.has(s.id) || last !== undefined)) stale.push({ worker: s.id, ageMs: last === undefined ? null : Math.max(0, asked - s.lastMetricsAt) })
    }
    const scrape = [
      { name: 'igw_metrics_stale_workers', help: 'Worker threads that did not answer this scrape in time: their numbers in it are from their last answer (igw_worker_metrics_age_seconds), or missing when they never answered', type: 'gauge', aggregator: 'sum', values: [{ labels: {}, value: stale.length }] },
      { name: 'igw_worker_metrics_age_seconds', help: 'How much older than this scrape the numbers it shows for each worker thread are (0: the thread answered this scrape)', type: 'gauge', aggregator: 'sum', values: ages },
    ] as unknown as MetricsJson
    if (stale.length > 0) {
      const now = Date.now()
      if (now - staleLoggedAt >= STALE_LOG_EVERY_MS) {
        logger.warn({ stale, ...(staleUnlogged > 0 ? { partialScrapesNotLogged: staleUnlogged } : {}) }, 'metrics scrape is partial: worker threads did not answer in time; their last answers are served (igw_metrics_stale_workers)')
        staleLoggedAt = now
        staleUnlogged = 0
      } else staleUnlogged++
    }
    return AggregatorRegistry.aggregate([own, retired, scrape, ...fromWorkers] as never).metrics()
  }

  async function collectUsage(): Promise<UsageSnapshot> {
    const { got } = await gather(usageWaiters, (id) => ({ t: 'usage', id }))
    const out = got.reduce<UsageSnapshot>((acc, p) => mergeUsage(acc, p), unclaimedUsage)
    unclaimedUsage = {}
    return out
  }

  if (config.workerHeap.maxOldGenerationMb === undefined && memoryLimit !== undefined && workerOldGenerationMb(config) === MIN_WORKER_OLD_GENERATION_MB) {
    logger.warn(
      { memoryLimitMb: Math.floor(memoryLimit / 1024 / 1024), workers: workerCount, workerOldGenerationMb: MIN_WORKER_OLD_GENERATION_MB },
      'the memory limit is small for this many workers: each gets the minimum heap, and together they may exceed the limit; set workers to the CPU limit (workers: auto counts the node cores without one) or raise the memory limit',
    )
  }
  lifecycle.info({ listen: `${host ?? '*'}:${port}`, admin: `${adminAddr.host ?? '*'}:${adminPort}`, workers: workerCount, mode: config.mode, version, memoryLimitMb: memoryLimit === undefined ? null : Math.floor(memoryLimit / 1024 / 1024), workerOldGenerationMb: workerOldGenerationMb(config) ?? null }, 'igw proxy listening')

  async function close(): Promise<void> {
    if (closing) return
    closing = true
    clearInterval(watchdog)
    watcher?.close()
    stopPolling?.()
    clearTimeout(retryTimer)
    health.current.stop()
    // /readyz answers 503 from here on; the listeners stay open and serve as usual meanwhile, so
    // a balancer polling it stops sending before connections are refused (they were at once).
    const delayMs = config.shutdown.delayMs
    if (delayMs > 0) {
      lifecycle.info({ delayMs }, 'shutting down: readiness fails now, draining after the delay')
      await new Promise((resolve) => setTimeout(resolve, delayMs))
    }
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
    // Connections cut first: close() waits for every connection to end, and it also stops the
    // server's header and request timeouts, so one admin connection with a request half sent (a
    // client that stalled, a port-forward, a scanner) held the stop for ever: `igw proxy` never
    // exited on SIGTERM (killed at the grace period, "stopped" never logged) and close() never
    // resolved. Every worker is gone by now; nothing is left to answer.
    const adminClosed = new Promise<void>((resolve) => admin.close(() => resolve()))
    admin.closeAllConnections()
    await adminClosed
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
    noteRejected: refusedReload,
    confirmedByControlPlane: (v: number) => {
      // Booted from the snapshot while the control plane was away; back, it confirms the same
      // version as its head. Left `last-known-good`, /readyz said so until the next push, and an
      // alert on source != control-plane never cleared.
      if (v !== version || source !== 'last-known-good') return
      source = 'control-plane'
      logger.info({ version }, 'the control plane confirmed the running last-known-good version as its head: source is control-plane')
    },
    metricsText: collectMetrics,
    collectUsage,
    threads: () => slots.map((s) => s.worker),
    close,
  }
}
