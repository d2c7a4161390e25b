// A Redis that hangs (SIGSTOP: the TCP connection stays up, nothing answers) against the shared
// connection every filter uses: commands must not pile up forever. The heartbeat drops the
// connection, every queued command fails (callers take their outage path), and it comes back
// on its own when Redis answers again.
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SharedRedis } from '../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('shared Redis connection against a hung server', () => {
  let redis: TestRedis
  let provider: SharedRedis
  const lines: { msg?: string; silentMs?: number }[] = []

  beforeAll(async () => {
    redis = await startRedis()
    const registry = new Registry()
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { msg?: string })
        cb()
      },
    })
    provider = new SharedRedis(redis.url, 'hang:', pino({ level: 'info' }, sink), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
  })
  afterAll(async () => {
    redis?.resume()
    await provider?.close()
    await redis?.close()
  })

  it('fails the queued commands within seconds, reports not ready, and recovers after the hang', async () => {
    const client = provider.client()
    await waitUntil(() => provider.ready, 5_000, 'ready')
    await client.set('hang:k', 'v')
    redis.pause()
    const t0 = Date.now()
    const settled: ('ok' | 'failed')[] = []
    const pending = Array.from({ length: 200 }, (_, i) => client.get(`hang:k${i}`).then(() => settled.push('ok'), () => settled.push('failed')))
    await waitUntil(() => settled.length === pending.length, 6_000, 'every queued command settled')
    const took = Date.now() - t0
    expect(settled.every((s) => s === 'failed')).toBe(true)
    expect(took).toBeGreaterThanOrEqual(1_000) // not at once: only after a heartbeat went unanswered (2 s; one may have left just before the pause)
    expect(provider.ready).toBe(false)
    const drop = lines.find((l) => l.msg === 'redis connected but not answering; dropping the connection')
    expect(drop).toBeDefined()
    expect(drop!.silentMs).toBeGreaterThanOrEqual(2_000)
    // While it hangs, new commands fail at once instead of queueing.
    const t1 = Date.now()
    await expect(client.get('hang:k')).rejects.toThrow()
    expect(Date.now() - t1).toBeLessThan(500)
    redis.resume()
    await waitUntil(() => provider.ready, 10_000, 'ready again after the hang')
    expect(await client.get('hang:k')).toBe('v')
  })
})
