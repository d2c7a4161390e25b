// A worker thread whose last quota filter closed while another thread of the process kept serving
// (a config version only some threads took) saved the outage units it owed Redis to its own file,
// and only the next process start pushed them: the tenant's usage in Redis stayed short for as
// long as the process ran. The closing thread now says which file it left, and a thread still
// serving takes it over: its retries push the units (same tokens) once Redis answers.
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber } from '../../../config/quota-usage.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { graphqlUsedInRedis, owedFiles } from '../../helpers/quota.ts'
import { waitUntil } from '../../helpers/wait.ts'

let redis: TestRedis
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.close()
})

const used = (prefix: string): Promise<number> => graphqlUsedInRedis(redis.url, prefix)

describe('owed units of a closing worker thread (sweep 34b)', () => {
  it('are pushed by a thread still serving, not left for the next start', async () => {
    const prefix = 'sw34b3:'
    const dir = mkdtempSync(join(tmpdir(), 'igw-owed-handover-'))
    const stateFile = join(dir, 'quota-state.json')
    const doc = {
      redis: { url: redis.url, keyPrefix: prefix },
      routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
      tenants: { acme: {} },
      quotas: { defaults: { graphql: { limitPerDay: 1000 } }, stateFile, flushIntervalMs: 200, redis: { heartbeatMs: 200 } },
    }
    const config = validateConfig(doc)
    const shared = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const logs: { msg: string; units?: number }[] = []
    const rt = quotaRuntime(shared, config, pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as { msg: string }) }))
    const provider = new SharedRedis(redis.url, prefix, pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [new Registry()] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [new Registry()] }),
    })
    const a = rt.attach(config, new Registry(), provider)
    const worker = new Worker(new URL('./owed-handover-worker-sweep34b.ts', import.meta.url), {
      workerData: { shared, doc, redisUrl: redis.url, prefix, day: localDayNumber('UTC', Date.now()) },
    })
    const next = () => new Promise<string>((resolve, reject) => worker.once('message', resolve).once('error', reject))
    try {
      expect(await next()).toBe('ready')
      await waitUntil(() => provider.ready, 5_000)
      await redis.stop()
      worker.postMessage('close')
      expect(await next()).toBe('closed')
      // Saved by the closing thread.
      const saved = owedFiles(dir)
      expect(saved.length).toBeGreaterThan(0)
      expect(saved.map((f) => readFileSync(join(dir, f), 'utf8')).join()).toContain('tok-34b-handover')

      await redis.start()
      await waitUntil(async () => (await used(prefix)) === 6, 10_000)
      await waitUntil(() => owedFiles(dir).length === 0, 5_000)
      expect(await used(prefix)).toBe(6)
      // Taken over by this thread (the closing one is gone).
      expect(logs.find((l) => l.msg.includes('left by a closing worker thread'))?.units).toBe(6)
    } finally {
      await worker.terminate()
      await rt.detach(a)
      await provider.close()
    }
  }, 60_000)
})
