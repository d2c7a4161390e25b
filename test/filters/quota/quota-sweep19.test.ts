// Robustness sweep 19 of the quota filter:
// - the event-loop monitor (QoS by event-loop delay) stops once no live filter instance of the
//   thread sheds by delay — it kept sampling after a reload turned it off, until the filter
//   closed — and starts again when a reload turns it back on;
// - under `local-share` during a Redis outage, a request that this proxy's share can never admit
//   (a cost over its share of the burst, a hard-capped budget's share spent) is told to retry
//   when Redis may answer again (the breaker's next probe), not after a refill or an hour's
//   bucket that admits nothing under the share. Real proxy, real redis-server, real client.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import type { Filter } from '../../../proxy/filter.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { registerLivePeers, startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'
import { parseList } from './structured-fields.ts'

/** Keep this thread's event loop busy for `ms` (a delay the monitor, when it runs, records). */
function block(ms: number): void {
  const end = Date.now() + ms
  while (Date.now() < end) {
    /* busy */
  }
}

describe('the event-loop monitor follows the live configs (sweep 19)', () => {
  const doc = (maxEventLoopDelayMs: number | undefined) =>
    validateConfig({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { rate: 100 } } }, qos: maxEventLoopDelayMs === undefined ? { maxInFlight: 1000 } : { maxEventLoopDelayMs } },
      routes: [{ name: 'api', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
  const shared = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
  const registry = new Registry()
  const logger = pino({ level: 'silent' })
  const build = (config: ReturnType<typeof doc>) => quotaFilter.create(config.routes[0]!.filters[1] as never, { routeName: 'api', workerId: 0, config, logger, registry, shared, redis: undefined }) as Promise<Filter>

  it('a reload that turns maxEventLoopDelayMs off stops the sampling once the old instance closes; one that turns it on starts it again', async () => {
    const on = doc(50)
    const off = doc(undefined)
    const first = await build(on)
    const rt = quotaRuntime(shared, on, logger)
    let closing: Filter[] = [first]
    const measured = () =>
      waitUntil(
        async () => {
          block(150)
          await sleep(100)
          return rt.eventLoop.delayMs > 0
        },
        20_000,
        'an event-loop delay measured',
      )
    try {
      await measured()
      // Reload to a config without delay shedding: the old instance still drains (and still
      // sheds by delay), so the monitor runs on until it closes.
      const second = await build(off)
      closing = [first, second]
      expect(rt.eventLoop.running).not.toBe(false)
      await first.close!()
      closing = [second]
      // Nothing samples: a busy loop leaves no figure (the old code kept measuring it every 0.5 s).
      for (let i = 0; i < 3; i++) {
        block(150)
        await sleep(600)
      }
      expect(rt.eventLoop.delayMs).toBe(0)
      expect(rt.eventLoop.running).toBe(false)

      // Reload back on: it measures again.
      const third = await build(on)
      closing = [second, third]
      await second.close!()
      closing = [third]
      expect(rt.eventLoop.running).toBe(true)
      await measured()
      await third.close!()
      closing = []
      expect(rt.eventLoop.running).toBe(false)
      expect(rt.eventLoop.delayMs).toBe(0)
    } finally {
      for (const f of closing) await f.close!()
    }
  })

  it('a reload that keeps it off never starts it', async () => {
    const buf = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const off = doc(undefined)
    const mk = () => quotaFilter.create(off.routes[0]!.filters[1] as never, { routeName: 'api', workerId: 0, config: off, logger, registry: new Registry(), shared: buf, redis: undefined }) as Promise<Filter>
    const a = await mk()
    const b = await mk()
    try {
      expect(quotaRuntime(buf, off, logger).eventLoop.running).toBe(false)
    } finally {
      await a.close!()
      await b.close!()
    }
  })
})

type Reply = { status: number; code?: string; message?: string; retry?: number; ratelimit?: string; extensions?: Record<string, unknown> }

async function gql(url: string, tenant: string, query: string): Promise<Reply> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query }) })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  const e = (JSON.parse(text) as { errors: { message: string; extensions: Record<string, unknown> }[] }).errors[0]!
  return { status: res.statusCode, code: e.extensions.code as string, message: e.message, retry: Number(res.headers['retry-after']), ratelimit: res.headers['ratelimit'] as string | undefined, extensions: e.extensions }
}

/** The persisted filter's static estimate prices `items(first: n) { id }` at n units. */
const costing = (n: number) => `{ items(first: ${n}) { id } }`

describe('local-share: Retry-After on a refusal only Redis can lift (sweep 19)', () => {
  let backend: DemoBackend
  let redis: TestRedis
  beforeAll(async () => {
    backend = await startDemoBackend()
    redis = await startRedis()
  })
  afterAll(async () => {
    await backend?.close()
    await redis?.close()
  })

  it("a cost over this proxy's share of the burst, and a spent share of a hard-capped budget: retry when Redis may answer, and that retry is admitted once it does", async () => {
    const prefix = 'sweep19share:'
    // One more proxy is live: this proxy's share is a half.
    await registerLivePeers(redis.url, prefix, 'peer-a')
    const p = await startTestProxy({
      workers: 1,
      log: { level: 'warn', access: { enabled: false } } as never,
      redis: { url: redis.url, keyPrefix: prefix },
      tenants: { slow: {}, slow2: {}, capped: {} },
      quotas: {
        redis: { onOutage: 'local-share', budgetMs: 200, breakerOpenMs: 1_000, heartbeatMs: 60_000 },
        tenants: {
          // 10 units of burst refilled at 0.01/s: half of it (5) is this proxy's during an outage
          slow: { graphql: { rate: 0.01, burst: 10 } },
          slow2: { graphql: { rate: 0.01, burst: 10 } },
          // a 1000-unit hard cap: 500 of it are this proxy's during an outage (bucket: 1 h)
          capped: { budget: { units: 1000, hardCap: true } },
        },
      } as never,
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never,
    })
    try {
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_live_proxies') === 2, 10_000, 'two live proxies')
      await redis.stop()

      // 8 units: more than the share (5) of the burst, which no refill at 0.01/s ever changes.
      // It was told "retry in 600 s" (3 units at 0.005/s) — and refused again then all the same.
      const big = await gql(p.url, 'slow', costing(8))
      expect(big.status).toBe(429)
      expect(big.code).toBe('RATE_LIMITED')
      expect(big.message).toMatch(/exceeds this proxy's share \(5 units\)/)
      expect(big.retry).toBeGreaterThanOrEqual(1)
      expect(big.retry).toBeLessThanOrEqual(1) // the breaker's next probe (breakerOpenMs 1 s)
      expect(big.extensions!.retryAfterSeconds).toBe(big.retry)
      expect(parseList(big.ratelimit!).map((x) => [x.value, x.params.get('t')])).toEqual([['rate', big.retry]])
      // A cost the share does fit is still told the refill's honest wait (another tenant: what
      // is admitted now is owed to Redis and would hold `slow` back once it is back).
      expect((await gql(p.url, 'slow2', costing(4))).status).toBe(200)
      const refill = await gql(p.url, 'slow2', costing(4))
      expect(refill.code).toBe('RATE_LIMITED')
      expect(refill.retry).toBeGreaterThan(250) // 3 units at 0.005 units/s: 600 s

      // The budget: this proxy's 500 of the 1000 spent; Redis (whose last word was 0 used)
      // would admit more — it was told to come back in an hour (one budget bucket).
      for (let i = 0; i < 5; i++) expect((await gql(p.url, 'capped', costing(100))).status).toBe(200)
      const over = await gql(p.url, 'capped', costing(100))
      expect(over.status).toBe(429)
      expect(over.code).toBe('BUDGET_EXHAUSTED')
      expect(over.retry).toBeGreaterThanOrEqual(1)
      expect(over.retry).toBeLessThanOrEqual(1)
      expect(parseList(over.ratelimit!).map((x) => [x.value, x.params.get('t')])).toEqual([['budget', over.retry]])

      // Redis is back: the same requests, retried as told, get through.
      await redis.start()
      let slowOk = false
      let cappedOk = false
      for (let i = 0; i < 40 && !(slowOk && cappedOk); i++) {
        if (!slowOk) {
          const r = await gql(p.url, 'slow', costing(8))
          slowOk = r.status === 200
          if (!slowOk) {
            expect(r.retry).toBeLessThanOrEqual(1)
          }
        }
        if (!cappedOk) cappedOk = (await gql(p.url, 'capped', costing(100))).status === 200
        if (!(slowOk && cappedOk)) await sleep(250)
      }
      expect(slowOk).toBe(true)
      expect(cappedOk).toBe(true)
    } finally {
      await p.close()
    }
  })
})

describe('outage use of a tenant Redis holds no bucket or budget for yet reaches them (sweep 19)', () => {
  let backend: DemoBackend
  let redis: TestRedis
  beforeAll(async () => {
    backend = await startDemoBackend()
    redis = await startRedis()
  })
  afterAll(async () => {
    await backend?.close()
    await redis?.close()
  })

  it('tenants first seen during the outage: their outage units count in the budget and the bucket once Redis is back (they were handed a whole budget and burst again)', async () => {
    const prefix = 'sweep19fresh:'
    const p = await startTestProxy({
      workers: 1,
      log: { level: 'warn', access: { enabled: false } } as never,
      redis: { url: redis.url, keyPrefix: prefix },
      tenants: { fresh: {}, bursty: {} },
      quotas: {
        redis: { onOutage: 'fail-open', budgetMs: 200, breakerOpenMs: 300, heartbeatMs: 100 },
        tenants: { fresh: { budget: { units: 1000, hardCap: true } }, bursty: { graphql: { rate: 0.001, burst: 10 } } },
      } as never,
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never,
    })
    const client = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    try {
      await redis.stop()
      // Redis never decided for this tenant: 600 units admitted by the outage policy alone.
      for (let i = 0; i < 6; i++) expect((await gql(p.url, 'fresh', costing(100))).status).toBe(200)
      // And 6 of a 10-unit burst that refills at 0.001/s.
      for (let i = 0; i < 6; i++) expect((await gql(p.url, 'bursty', '{ hello }')).status).toBe(200)
      await redis.start()
      await client.connect()
      // The heartbeat reports the outage use without waiting for a request.
      await waitUntil(async () => Number(await client.hget(`${prefix}q:{fresh}:graphql`, 'u')) === 600 && Number(await client.hget(`${prefix}q:{bursty}:graphql`, 'u')) === 6, 10_000, 'outage use reported')
      expect(Number(await client.hget(`${prefix}q:{fresh}:budget`, 'tot'))).toBe(600)
      expect(Number(await client.hget(`${prefix}q:{bursty}:graphql`, 'tk'))).toBe(4_000_000) // not a fresh burst of 10
      // What is left of the budget is 400 units, across the proxies sharing Redis.
      let admitted = 0
      for (let i = 0; i < 40; i++) {
        const r = await gql(p.url, 'fresh', costing(100))
        if (r.status === 200) admitted++
        else if (r.code === 'BUDGET_EXHAUSTED') break
        else await sleep(100) // the breaker's probe (a request decides it)
      }
      expect(admitted).toBe(4)
      let burst = 0
      for (let i = 0; i < 20; i++) if ((await gql(p.url, 'bursty', '{ hello }')).status === 200) burst++
      expect(burst).toBe(4)
    } finally {
      client.disconnect()
      await p.close()
    }
  })
})
