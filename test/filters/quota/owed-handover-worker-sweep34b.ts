// Worker thread for owed-handover-sweep34b.test.ts: a quota runtime on the shared table that owes
// Redis outage units and then closes its last quota filter while Redis is down.
import { parentPort, workerData } from 'node:worker_threads'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { validateConfig } from '../../../config/load.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { SharedRedis } from '../../../proxy/redis.ts'

const { shared, doc, redisUrl, prefix, day } = workerData as { shared: SharedArrayBuffer; doc: unknown; redisUrl: string; prefix: string; day: number }
const config = validateConfig(doc)
const rt = quotaRuntime(shared, config, pino({ level: 'silent' }))
const provider = new SharedRedis(redisUrl, prefix, pino({ level: 'silent' }), {
  up: new Gauge({ name: 'up', help: 'h', registers: [new Registry()] }),
  reconnects: new Counter({ name: 'rc', help: 'h', registers: [new Registry()] }),
})
const a = rt.attach(config, new Registry(), provider)
parentPort!.on('message', (m: string) => {
  if (m !== 'close') return
  // Units a lost decision call carried (kind graphql), owed by this thread alone.
  rt.owe(-1, 0, 0, 'acme', 6, day, 'tok-34b-handover')
  void rt
    .detach(a)
    .then(() => provider.close())
    .then(() => parentPort!.postMessage('closed'))
})
parentPort!.postMessage('ready')
