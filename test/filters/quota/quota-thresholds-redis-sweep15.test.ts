// Budget threshold markers in Redis follow their threshold's value, as the local limiter's do
// (rolling-budget.ts): a reload that adds, removes or reorders thresholds neither fires one again
// that already fired in this window nor silences one that has not. The decision script kept them
// by position: dropping 0.8 from [0.8, 1] hid the 100 % event for the rest of the window, and
// adding 0.5 in front fired 0.8 and 1 a second time.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber, quotaKeys } from '../../../config/quota-usage.ts'
import { add, advance, crossedThresholds, RING_F64, type BudgetShape } from '../../../filters/quota/rolling-budget.ts'
import { RedisQuotaStore } from '../../../filters/quota/redis-store.ts'
import { budgetRule } from '../../../filters/quota/rules.ts'
import { validateConfig } from '../../../config/load.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { request } from 'undici'
import { startDemoBackend, startRawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const H = 3_600_000
const shape = (thresholds: number[]): BudgetShape => ({ units: 100, windowMs: 24 * H, bucketMs: H, buckets: 24, thresholds })

let redis: TestRedis
let provider: SharedRedis
let store: RedisQuotaStore
let admin: Redis

beforeAll(async () => {
  redis = await startRedis()
  const registry = new Registry()
  provider = new SharedRedis(redis.url, 'sw15:', pino({ level: 'silent' }), {
    up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
    reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
  })
  store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
  await store.warmUp(2_000)
  admin = new Redis(redis.url)
})
afterAll(async () => {
  admin?.disconnect()
  await provider?.close()
  await redis?.close()
})

/** One admitted decision through the real script: the thresholds it fired (bit i = thresholds[i]). */
async function viaRedis(tenant: string, cost: number, thresholds: number[]): Promise<number> {
  const day = localDayNumber('UTC', Date.now())
  const ppm = [0, 1, 2, 3].map((i) => Math.round((thresholds[i] ?? 0) * 1_000_000))
  const args = [cost, day, 0, 0, 0, -1, 100, H, 24, 0, 0, thresholds.length, ...ppm]
  const r = await store.decide(quotaKeys.kind('sw15:', tenant, 'graphql'), quotaKeys.budget('sw15:', tenant), args)
  if (!Array.isArray(r)) throw new Error(`redis: ${r}`)
  expect(r[0]).toBe(1)
  return r[6]!
}

describe('budget threshold markers in Redis follow the threshold, not its position (sweep 15)', () => {
  // (thresholds after a reload, cost of the next request, what fires)
  const scenarios: Record<string, [number[], number, number][]> = {
    'dropping 0.8 from [0.8, 1] does not silence the 100 % event': [
      [[0.8, 1], 85, 0b01],
      [[1], 15, 0b1],
      [[1], 1, 0],
    ],
    'adding 0.5 in front fires 0.5 (new), and neither 0.8 nor 1 twice': [
      [[0.8, 1], 85, 0b01],
      [[0.5, 0.8, 1], 0, 0b001],
      [[0.5, 0.8, 1], 15, 0b100],
      [[0.8, 1], 1, 0],
      [[0.8, 0.9, 1], 0, 0b010], // 0.9 added: only it fires
    ],
    'dropping 0.8 and listing it again within the window does not fire it twice': [
      [[0.8, 1], 85, 0b01],
      [[1], 15, 0b1],
      [[0.8, 1], 0, 0],
      [[0.5, 0.8, 1], 0, 0b001],
      [[0.8, 1], 1, 0],
    ],
  }
  for (const [n, [name, steps]] of Object.entries(scenarios).entries()) {
    it(`${name}: Redis fires what the local limiter fires`, async () => {
      const f = new Float64Array(RING_F64)
      for (const [i, [th, cost, want]] of steps.entries()) {
        const now = Date.now()
        advance(f, 0, now, shape(th))
        add(f, 0, cost)
        expect(crossedThresholds(f, 0, now, shape(th), false), `local, step ${i}`).toBe(want)
        expect(await viaRedis(`scenario${n}`, cost, th), `redis, step ${i}`).toBe(want)
      }
    })
  }

  it('markers written by position (an older script) are taken over once by the thresholds at those positions', async () => {
    const key = quotaKeys.budget('sw15:', 'legacy')
    expect(await viaRedis('legacy', 50, [0.8, 1])).toBe(0)
    // What the older script left: 0.8 (position 1) fired a minute ago.
    await admin.hset(key, 'f1', Date.now() - 60_000)
    expect(await viaRedis('legacy', 35, [0.8, 1])).toBe(0) // 85 %: 0.8 already fired
    expect(await admin.hmget(key, 'f1', 'f2', 'f3', 'f4')).toEqual([null, null, null, null])
    expect(await viaRedis('legacy', 15, [1])).toBe(0b1) // now by value: 0.8's marker is not 100 %'s
  })

  it('a threshold listed twice fires once', async () => {
    const cfg = validateConfig({ routes: [{ name: 'g', upstream: 'http://127.0.0.1:9' }], quotas: { defaults: { budget: { units: 100, window: '1d', thresholds: [1, 0.8, 0.8] } } } })
    const rule = budgetRule(cfg.quotas.defaults.budget!)
    expect(rule.thresholds).toEqual([0.8, 1])
    const f = new Float64Array(RING_F64)
    const now = Date.now()
    advance(f, 0, now, rule)
    add(f, 0, 90)
    expect(crossedThresholds(f, 0, now, rule, false)).toBe(0b01)
    expect(await viaRedis('dup', 90, [...rule.thresholds])).toBe(0b01)
  })
})

describe('budget events through a proxy on Redis, across a reload (sweep 15)', () => {
  it('dropping 80 % still sends the 100 % event; adding 50 % sends it without repeating 80 % or 100 %', async () => {
    const backend = await startDemoBackend()
    const received: { tenant: string; threshold: number }[] = []
    const hook = await startRawBackend((req, res) => {
      let d = ''
      req.on('data', (c: Buffer) => (d += c))
      req.on('end', () => {
        received.push(JSON.parse(d) as { tenant: string; threshold: number })
        res.writeHead(200).end()
      })
    })
    const doc = (thresholds: number[]) => ({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      redis: { url: redis.url, keyPrefix: 'sw15e2e:' },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
      tenants: { acme: {} },
      quotas: { defaults: { budget: { units: 10, window: '1d', bucket: '1h', thresholds } }, redis: { budgetMs: 1000 }, events: { webhook: { url: hook.url } } },
    })
    const p = await startTestProxy(doc([0.8, 1]) as never)
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ hello }' }) })
        await r.body.dump()
        expect(r.statusCode).toBe(200)
      }
    }
    const fired = () => received.filter((e) => e.tenant === 'acme').map((e) => e.threshold)
    try {
      await send(8)
      await waitUntil(() => fired().length === 1, 10_000, 'the 80 % event')
      expect((await p.applyConfig(validateConfig(doc([1])))).ok).toBe(true)
      await send(2)
      await waitUntil(() => fired().length === 2, 10_000, 'the 100 % event after the reload')
      expect(fired()).toEqual([0.8, 1])
      expect((await p.applyConfig(validateConfig(doc([0.5, 0.8, 1])))).ok).toBe(true)
      await send(1)
      await waitUntil(() => fired().length === 3, 10_000, 'the new 50 % event')
      await sleep(300)
      expect(fired()).toEqual([0.8, 1, 0.5])
    } finally {
      await p.close()
      await hook.close()
      await backend.close()
    }
  })
})

