// The supervisor tells every worker thread to drain on SIGTERM, also one it just restarted and
// whose first config is still being built. Its drain then threw (no snapshot yet to close the
// filters of): a spurious "uncaught exception in worker" fatal line at every such shutdown. A
// real WorkerProxy, drained before its first apply, then one that has applied and listens.
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'

const config = validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:9', filters: [] }] })
const make = () => new WorkerProxy({ workerId: 0, logger: pino({ level: 'silent' }), metrics: new ProxyMetrics(new Registry()), shared: {} }, config)

it('drains a worker whose first config is not built yet, as one that serves', async () => {
  await expect(make().drain(200)).resolves.toBeUndefined()
  const serving = make()
  await serving.apply(1, config)
  await serving.listen('127.0.0.1', 0)
  await expect(serving.drain(200)).resolves.toBeUndefined()
})
