// Worker thread for dead-thread-owed-sweep34g.test.ts: a quota runtime on the shared table that
// admits outage units while Redis is down, then dies of an uncaught exception (no close runs).
import { readFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { validateConfig } from '../../../config/load.ts'
import { decideLocal, Verdict } from '../../../filters/quota/local-limiter.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { resolveRule } from '../../../filters/quota/rules.ts'
import { owedFilePath } from '../../../filters/quota/state-file.ts'
import { SharedRedis } from '../../../proxy/redis.ts'

interface Admit {
  /** Requests the outage policy admits (decideLocal counts their units into shared memory). */
  pending: number
  /** A lost decision call's units, owed by this thread alone (`owe`), under this token. */
  owe: { units: number; token: string }
  /** Wait until this thread's periodic save wrote the call's token to its owed file. */
  awaitSave: boolean
}

const { shared, doc, redisUrl, prefix, day } = workerData as { shared: SharedArrayBuffer; doc: { quotas: { stateFile: string } }; redisUrl: string; prefix: string; day: number }
const config = validateConfig(doc)
const rt = quotaRuntime(shared, config, pino({ level: 'silent' }))
const provider = new SharedRedis(redisUrl, prefix, pino({ level: 'silent' }), {
  up: new Gauge({ name: 'up', help: 'h', registers: [new Registry()] }),
  reconnects: new Counter({ name: 'rc', help: 'h', registers: [new Registry()] }),
})
rt.attach(config, new Registry(), provider)

function saved(token: string): boolean {
  try {
    return readFileSync(owedFilePath(doc.quotas.stateFile, rt.epoch), 'utf8').includes(token)
  } catch {
    return false
  }
}

parentPort!.on('message', (m: { t: 'admit'; admit: Admit } | { t: 'die' }) => {
  if (m.t === 'die') {
    setImmediate(() => {
      throw new Error('sweep34g: worker thread dies')
    })
    return
  }
  const { pending, owe, awaitSave } = m.admit
  // As the quota filter decides with Redis unreachable (index.ts, the outage policy).
  const rule = resolveRule(config.quotas, 'acme', 'graphql', undefined, 'UTC', false)
  const v = new Verdict()
  for (let i = 0; i < pending; i++) {
    if (!decideLocal(rt.table, rt.table.slotOf('acme'), rule, 1, Date.now(), day, true, 1, v).allowed) throw new Error('sweep34g: not admitted')
  }
  rt.owe(-1, 0, 0, 'acme', owe.units, day, owe.token)
  if (!awaitSave) return void parentPort!.postMessage('admitted')
  const t0 = Date.now()
  const poll = setInterval(() => {
    if (saved(owe.token) || Date.now() - t0 > 10_000) {
      clearInterval(poll)
      parentPort!.postMessage(saved(owe.token) ? 'admitted' : 'not saved')
    }
  }, 20)
})
// Ready once connected (a restarted thread's Redis may be down: ready at once then).
const t0 = Date.now()
const connected = setInterval(() => {
  if (provider.ready || Date.now() - t0 > 5_000 || (workerData as { restart?: boolean }).restart === true) {
    clearInterval(connected)
    parentPort!.postMessage('ready')
  }
}, 10)
