// Worker thread for concurrent-slots-sweep23a.test.ts: a real quota filter on the shared table,
// asking for a concurrency slot over and over (each one taken is given back at once).
import type { IncomingMessage } from 'node:http'
import { parentPort, workerData } from 'node:worker_threads'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { validateConfig } from '../../../config/load.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { RequestContext } from '../../../proxy/context.ts'
import type { Filter } from '../../../proxy/filter.ts'
import type { RouteRuntime } from '../../../proxy/runtime.ts'

const { shared, doc, workerId, attempts, sync } = workerData as { shared: SharedArrayBuffer; doc: unknown; workerId: number; attempts: number; sync: SharedArrayBuffer }
const config = validateConfig(doc)
const logger = pino({ level: 'silent' })
const filter = (await quotaFilter.create(config.routes[0]!.filters[1] as never, { routeName: 'api', workerId, config, logger, registry: new Registry(), shared, redis: undefined })) as Filter
// The filter reads only the method, URL, host and peer address of the request it is given.
const req = { method: 'POST', url: '/graphql', headers: {}, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage
const route = { name: 'api', timeouts: { totalMs: 0 } } as unknown as RouteRuntime
const flags = new Int32Array(sync) // [0] go, [1] workers done
parentPort!.postMessage('ready')
Atomics.wait(flags, 0, 0)
let admitted = 0
let refused = 0
for (let i = 0; i < attempts; i++) {
  const ctx = new RequestContext(req, undefined, route, logger, 0, `r${i}`)
  ctx.tenant = 't'
  ctx.tier = 'silver'
  if (filter.onRequest!(ctx) === undefined) {
    admitted++
    ctx.runCleanups()
  } else refused++
}
Atomics.add(flags, 1, 1)
await filter.close?.()
parentPort!.postMessage({ admitted, refused })
