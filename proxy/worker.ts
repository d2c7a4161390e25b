// Worker thread entry: one listener (reusePort) and one WorkerProxy; talks to the supervisor.
import { enableCompileCache } from 'node:module'
import { parentPort, workerData } from 'node:worker_threads'
import type { FromWorker, ToWorker, WorkerData } from './messages.ts'

// Each thread is a Node instance of its own, and a proxy started in a process (tests, embedders)
// did not get the compile cache bin/igw.js enables: enabled here, before the modules load (hence
// the dynamic imports), a thread boots in about half the CPU. Same rules as bin/igw.js
// (NODE_COMPILE_CACHE, NODE_DISABLE_COMPILE_CACHE); it never throws.
enableCompileCache()
const [{ Registry }, { BatchingDestination, createLogger }, { logCollectErrors, metricsJson, ProxyMetrics }, { WorkerProxy }, { loadFilterModules }] = await Promise.all([
  import('prom-client'),
  import('./log.ts'),
  import('./metrics.ts'),
  import('./worker-proxy.ts'),
  import('../filters/registry.ts'),
])

const data = workerData as WorkerData
const port = parentPort!
const send = (m: FromWorker): void => port.postMessage(m)

const destination = new BatchingDestination((chunk) => send({ t: 'log', chunk }))
const logger = createLogger(data.config.log.level, destination, { worker: data.workerId })
const metrics = new ProxyMetrics(new Registry())
const proxy = new WorkerProxy({ workerId: data.workerId, logger, metrics, shared: data.shared }, data.config)

const onCollectError = logCollectErrors(logger)
/** This thread's metrics; one that fails to collect is left out, counted and logged (not a crash). */
function collectMetrics(): ReturnType<typeof metricsJson> {
  return metricsJson(metrics.registry, metrics.collectErrors, onCollectError)
}

let dying = false
process.on('uncaughtException', (err) => {
  if (dying) throw err // the rethrow below, or a second fault while sending the last counts
  dying = true
  // Log through the batcher, flush, then let the thread die: the supervisor restarts it.
  logger.fatal({ err }, 'uncaught exception in worker')
  destination.flush()
  sendLastUsage()
  // What it counted since the last scrape, unasked (id 0): the supervisor keeps a dead thread's
  // last metrics answer in its totals, and without this one every request the thread served
  // since the previous scrape vanished from igw_requests_total and the other counters. Bounded:
  // a collect() that never settles must not keep a broken thread alive.
  const last = Promise.race([collectMetrics().then((json) => send({ t: 'metrics', id: 0, data: json as never })), new Promise((resolve) => setTimeout(resolve, 1_000))])
  void last
    .catch(() => undefined)
    .finally(() =>
      setImmediate(() => {
        throw err
      }),
    )
})

/** The usage counted since the last collection, unasked (id 0): the supervisor keeps it for the next one. */
function sendLastUsage(): void {
  try {
    const data = proxy.usage.drain()
    if (Object.keys(data).length > 0) send({ t: 'usage', id: 0, data })
  } catch {}
}

let applying: Promise<void> = Promise.resolve()
port.on('message', (msg: ToWorker) => {
  switch (msg.t) {
    case 'config':
      // One apply at a time, in the order sent: building a snapshot awaits (async filters), so two
      // overlapping builds could finish out of order and leave the older version in force.
      applying = applying.then(() =>
        proxy.apply(msg.version, msg.config).then(
          () => send({ t: 'applied', version: msg.version }),
          (err: Error) => {
            metrics.configApplyFailures.inc()
            logger.error({ err: { message: err.message }, version: msg.version }, 'config version rejected by worker; keeping the previous one')
            send({ t: 'apply-failed', version: msg.version, error: err.message })
          },
        ),
      )
      return
    case 'metrics':
      void collectMetrics().then((json) => send({ t: 'metrics', id: msg.id, data: json as never }))
      return
    case 'usage':
      send({ t: 'usage', id: msg.id, data: proxy.usage.drain() })
      return
    case 'ping': // the supervisor's watchdog: an answer means this event loop still turns
      send({ t: 'pong' })
      return
    case 'drain':
      proxy.drain(msg.deadlineMs).finally(() => {
        destination.flush()
        sendLastUsage() // what the drain's last requests counted, before the thread goes
        send({ t: 'drained' })
      })
      return
  }
})

// The modules of the filters this config names (the others load when a reload names one).
await loadFilterModules(data.config)

// Unasked: this thread's modules are loaded and its event loop answers, so the supervisor's
// watchdog watches it from here on, through the config build (a thread stuck in it is restarted).
send({ t: 'pong' })

try {
  await proxy.apply(data.version, data.config)
  const bound = await proxy.listen(data.host, data.port)
  send({ t: 'listening', port: bound })
} catch (err) {
  destination.flush()
  const code = (err as NodeJS.ErrnoException).code
  send({ t: 'fatal', error: (err as Error).message, ...(typeof code === 'string' ? { code } : {}) })
  process.exit(1)
}
