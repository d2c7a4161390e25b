// A worker thread that died during a Redis outage (an uncaught exception, the watchdog, its heap
// limit) never ran its close, and took with it outage usage Redis never counted until the next
// process start, or never: a reconcile retry (every heartbeat while anything is owed) moved the
// units the outage policy admitted from shared memory — which outlives any thread — into the
// thread's private list before seeing Redis was unreachable, and what its periodic save wrote to
// its owed file was read only at the next start. Retries now leave the shared units alone while
// Redis is unreachable, and the supervisor's workerExited hands the dead thread's file to the
// threads still serving (as a closing thread hands its own over): Redis gets every unit once.
// This thread plays the one still serving; the worker thread dies (quotaFilter.workerExited is
// called with its id as the supervisor does at its 'exit').
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber } from '../../../config/quota-usage.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { quotaRuntime, type QuotaAttachment, type QuotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { graphqlUsedInRedis, owedFiles } from '../../helpers/quota.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

let redis: TestRedis
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.close()
})

const used = (prefix: string): Promise<number> => graphqlUsedInRedis(redis.url, prefix)

interface Scenario {
  prefix: string
  flushIntervalMs: number
  heartbeatMs: number
  admit: { pending: number; owe: { units: number; token: string }; awaitSave: boolean }
  /** How long the worker lives on after admitting (its retries run meanwhile). */
  liveOnMs: number
  expected: number
  /**
   * No thread of this test serves: the dead thread's restart is the first to listen (one worker),
   * and asks the supervisor for the threads that died.
   */
  alone?: boolean
}

async function run(s: Scenario): Promise<{ logs: { msg: string; units?: number }[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'igw-dead-owed-'))
  const stateFile = join(dir, 'quota-state.json')
  const doc = {
    redis: { url: redis.url, keyPrefix: s.prefix },
    routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
    tenants: { acme: {} },
    quotas: { defaults: { graphql: { limitPerDay: 1000 } }, stateFile, flushIntervalMs: s.flushIntervalMs, redis: { heartbeatMs: s.heartbeatMs } },
  }
  const config = validateConfig(doc)
  const shared = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
  const logs: { msg: string; units?: number }[] = []
  const workerData = { shared, doc, redisUrl: redis.url, prefix: s.prefix, day: localDayNumber('UTC', Date.now()) }
  const worker = new Worker(new URL('./dead-thread-owed-worker-sweep34g.ts', import.meta.url), { workerData })
  let restarted: Worker | undefined
  let live: { rt: QuotaRuntime; a: QuotaAttachment; provider: SharedRedis } | undefined
  if (s.alone !== true) {
    const rt = quotaRuntime(shared, config, pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as { msg: string }) }))
    const provider = new SharedRedis(redis.url, s.prefix, pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [new Registry()] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [new Registry()] }),
    })
    live = { rt, a: rt.attach(config, new Registry(), provider), provider }
  }
  // As the supervisor: the Worker says -1 once it exited.
  const threadId = worker.threadId
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
  worker.on('error', () => undefined) // its death is the point
  const next = () => new Promise<unknown>((resolve) => worker.once('message', resolve))
  try {
    expect(await next()).toBe('ready')
    if (live !== undefined) await waitUntil(() => live.provider.ready, 5_000)
    await redis.stop()
    worker.postMessage({ t: 'admit', admit: s.admit })
    expect(await next()).toBe('admitted')
    await sleep(s.liveOnMs)
    worker.postMessage({ t: 'die' })
    expect(await exited).toBe(1)
    quotaFilter.workerExited(shared, 1, threadId)
    if (s.alone === true) {
      // The supervisor's restart of the slot, after its backoff.
      restarted = new Worker(new URL('./dead-thread-owed-worker-sweep34g.ts', import.meta.url), { workerData: { ...workerData, restart: true } })
      restarted.on('error', () => undefined)
      expect(await new Promise((resolve) => restarted!.once('message', resolve))).toBe('ready')
    }
    await sleep(100) // the handover message is read (Redis still down)
    await redis.start()
    await waitUntil(async () => (await used(s.prefix)) >= s.expected, 10_000).catch(() => undefined)
    // Once each: a few more heartbeats push nothing twice.
    await sleep(s.heartbeatMs * 3)
    expect(await used(s.prefix)).toBe(s.expected)
    await waitUntil(() => owedFiles(dir).length === 0, 5_000)
    return { logs }
  } finally {
    await worker.terminate()
    await restarted?.terminate()
    if (live !== undefined) {
      await live.rt.detach(live.a)
      await live.provider.close()
    }
  }
}

describe('outage units of a worker thread that died (sweep 34g)', () => {
  it('its owed file is pushed by a thread still serving, not left for the next start', async () => {
    // Its periodic save wrote the units of a lost decision call (owed by it alone) to its file.
    const { logs } = await run({
      prefix: 'sw34g1:',
      flushIntervalMs: 200,
      heartbeatMs: 200,
      admit: { pending: 5, owe: { units: 6, token: 'tok-34g-dead' }, awaitSave: true },
      liveOnMs: 0,
      expected: 11,
    })
    expect(logs.some((l) => l.msg.includes('left by a worker thread that died'))).toBe(true)
  }, 60_000)

  it('its owed file is taken by its restart when no other thread serves (one worker)', async () => {
    await run({
      prefix: 'sw34g3:',
      flushIntervalMs: 200,
      heartbeatMs: 200,
      admit: { pending: 5, owe: { units: 6, token: 'tok-34g-alone' }, awaitSave: true },
      liveOnMs: 0,
      expected: 11,
      alone: true,
    })
  }, 60_000)

  it('its reconcile retries leave the admitted units in shared memory while Redis is down', async () => {
    // No periodic save within the test: the retries (every 100 ms, armed by a decision call's
    // units and its late correction, merged to nothing) are what ran on the thread.
    await run({
      prefix: 'sw34g2:',
      flushIntervalMs: 60_000,
      heartbeatMs: 100,
      admit: { pending: 5, owe: { units: 0, token: 'tok-34g-net0' }, awaitSave: false },
      liveOnMs: 500,
      expected: 5,
    })
  }, 60_000)
})
