// The quota filter across proxies, on a real redis-server: exact shared limits between two
// `igw proxy` processes, events exactly once across them, and Redis outages (killed, hung)
// under load with each policy — no request waits more than the budget, nothing crashes, and
// limits are shared again once Redis is back (outage usage reconciled).
import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber, quotaKeys, usedTodayFromRedis } from '../../../config/quota-usage.ts'
import { DECIDE_LUA } from '../../../filters/quota/redis-script.ts'
import { DecisionRule, RedisQuotaStore, type RedisFailure } from '../../../filters/quota/redis-store.ts'
import { RecordingWaiter } from './recording-waiter.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { echoHandler, startDemoBackend, startRawBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, spawnIgw, startTestProxy, writeTempConfig, type SpawnedIgw, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

function fire(pool: Pool, tenant: string): Promise<{ status: number; code?: string; retry?: string; ms: number }> {
  const t0 = performance.now()
  return pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: QUERY }).then(async (r) => {
    const text = await r.body.text()
    const code = r.statusCode === 200 ? undefined : (JSON.parse(text) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code
    return { status: r.statusCode, code, retry: r.headers['retry-after'] as string | undefined, ms: performance.now() - t0 }
  })
}

async function metrics(adminUrl: string): Promise<string> {
  return (await fetch(`${adminUrl}/metrics`)).text()
}

describe('two igw proxy processes sharing one Redis', () => {
  let redis: TestRedis
  let a: SpawnedIgw
  let b: SpawnedIgw
  let configPath: string
  const events: { id: string; threshold: number }[] = []
  let hook: Awaited<ReturnType<typeof startRawBackend>>

  beforeAll(async () => {
    redis = await startRedis()
    hook = await startRawBackend((req, res) => {
      let d = ''
      req.on('data', (c: Buffer) => (d += c))
      req.on('end', () => {
        events.push(JSON.parse(d) as { id: string; threshold: number })
        res.writeHead(204).end()
      })
    })
    configPath = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 2,
      log: { level: 'warn', access: { enabled: false } },
      redis: { url: redis.url, keyPrefix: 'igwtest:' },
      tenants: { bucket: {}, daily: {}, spend: {} },
      quotas: {
        // This test is about exactness, not latency: 400 requests at once on two shared cores
        // (two proxies, their workers, Redis, the backend, the clients) must not hit the budget.
        // The budget itself is tested on a quiet Redis below; fail-closed makes any miss visible.
        redis: { budgetMs: 1000, onOutage: 'fail-closed' },
        tenants: { bucket: { graphql: { rate: 0.001, burst: 100 } }, daily: { graphql: { limitPerDay: 100 } }, spend: { budget: { units: 50, hardCap: true } } },
        events: { webhook: { url: hook.url } },
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    ;[a, b] = await Promise.all([spawnIgw(['proxy', '--config', configPath]), spawnIgw(['proxy', '--config', configPath])])
  })
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    await redis?.close()
    await hook?.close()
  })

  it('200 concurrent clients across both proxies (2 workers each), limit 100 → exactly 100 admitted', async () => {
    const pa = new Pool(a.url, { connections: 100 })
    const pb = new Pool(b.url, { connections: 100 })
    try {
      const run = (tenant: string) => Promise.all(Array.from({ length: 400 }, (_, i) => fire(i % 2 ? pa : pb, tenant)))
      const [bucket, daily] = await Promise.all([run('bucket'), run('daily')])
      expect(bucket.filter((r) => r.status === 200)).toHaveLength(100)
      expect(bucket.filter((r) => r.code === 'RATE_LIMITED')).toHaveLength(300)
      expect(daily.filter((r) => r.status === 200)).toHaveLength(100)
      expect(daily.filter((r) => r.code === 'QUOTA_EXCEEDED')).toHaveLength(300)
      const ma = await metrics(a.adminUrl)
      const mb = await metrics(b.adminUrl)
      // both proxies decided, through Redis, on both of their worker threads
      for (const m of [ma, mb]) {
        expect(metricSum(m, 'igw_quota_decision_seconds_count', 'path="redis"')).toBeGreaterThan(100)
        expect(metricSum(m, 'igw_quota_decision_seconds_count', 'path="fallback"')).toBe(0)
        expect(metricSum(m, 'igw_worker_requests_total', 'worker="0"')).toBeGreaterThan(0)
        expect(metricSum(m, 'igw_worker_requests_total', 'worker="1"')).toBeGreaterThan(0)
        // usedToday as the control plane reads it: the shared figure, on either proxy
        expect(metricSum(m, 'igw_quota_used_today', 'tenant="daily"')).toBe(100)
      }
      const client = new Redis(redis.url)
      try {
        expect(await usedTodayFromRedis(client, 'igwtest:', 'daily', 'graphql')).toBe(100)
      } finally {
        client.disconnect()
      }
    } finally {
      await pa.close()
      await pb.close()
    }
  })

  it('budget events fire exactly once across both proxies', async () => {
    const pa = new Pool(a.url, { connections: 20 })
    const pb = new Pool(b.url, { connections: 20 })
    try {
      const all = await Promise.all(Array.from({ length: 100 }, (_, i) => fire(i % 2 ? pa : pb, 'spend')))
      expect(all.filter((r) => r.status === 200)).toHaveLength(50)
      expect(all.filter((r) => r.code === 'BUDGET_EXHAUSTED')).toHaveLength(50)
      await waitUntil(() => events.length >= 2, 3_000, 'two budget events')
      await new Promise((r) => setTimeout(r, 300))
      expect(events.map((e) => e.threshold).sort()).toEqual([0.8, 1])
      const fired = metricSum(await metrics(a.adminUrl), 'igw_quota_events_total') + metricSum(await metrics(b.adminUrl), 'igw_quota_events_total')
      expect(fired).toBe(2)
    } finally {
      await pa.close()
      await pb.close()
    }
  })

  it('a restarted proxy keeps the shared usedToday', async () => {
    await a.stop()
    a = await spawnIgw(['proxy', '--config', configPath])
    const pa = new Pool(a.url, { connections: 1 })
    try {
      const r = await fire(pa, 'daily')
      expect(r.code).toBe('QUOTA_EXCEEDED')
      expect(metricSum(await metrics(a.adminUrl), 'igw_quota_used_today', 'tenant="daily"')).toBe(100)
    } finally {
      await pa.close()
    }
  })
})

describe('the Redis store: budget, breaker, late replies (a quiet process, so timers are on time)', () => {
  it('a hung Redis costs each call at most the budget; the breaker then answers at once; a late reply is reported', async () => {
    const redis = await startRedis()
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, 'igwunit:', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const failures: RedisFailure[] = []
    let recovered = 0
    const store = new RedisQuotaStore(provider, { budgetMs: 5, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: (k) => failures.push(k), breakerChanged: () => undefined, recovered: () => recovered++ })
    const day = localDayNumber('UTC', Date.now())
    const args = (cost: number) => [cost, day, 0, 1000, 10_000_000, 100, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    const kindKey = quotaKeys.kind('igwunit:', 't', 'graphql')
    const budgetKey = quotaKeys.budget('igwunit:', 't')
    const late: (number[] | undefined)[] = []
    try {
      expect(await store.warmUp(2_000)).toBe(true)
      let ok = await store.decide(kindKey, budgetKey, args(1))
      for (let i = 0; i < 20 && !Array.isArray(ok); i++) ok = await store.decide(kindKey, budgetKey, args(0)) // a busy machine may miss 5 ms once
      expect(Array.isArray(ok) && ok[0]).toBe(1)
      store.breaker.success()
      failures.length = 0 // a miss above counted one
      redis.pause()
      const waits: number[] = []
      for (let i = 0; i < 3; i++) {
        expect(store.usable(Date.now())).toBe(true)
        const t0 = performance.now()
        expect(await store.decide(kindKey, budgetKey, args(1), (r) => late.push(r))).toBe('timeout')
        waits.push(performance.now() - t0)
      }
      const opened = Date.now()
      for (const w of waits) {
        expect(w).toBeGreaterThanOrEqual(4) // timers may fire up to a millisecond early
        // The 5 ms budget + timer granularity + a loaded machine's lag (CI runs three files on
        // two cores: timers came 50 ms late and more); the hang itself is endless.
        expect(w).toBeLessThan(250)
      }
      expect(failures).toEqual(['timeout', 'timeout', 'timeout'])
      // Open: no call, no wait. Asked as of the third failure: a stall of the test process
      // before this line must not be able to run out the 200 ms it stays open.
      expect(store.usable(opened)).toBe(false)
      await new Promise((r) => setTimeout(r, 250))
      expect(store.usable(Date.now())).toBe(true) // the half-open probe…
      expect(store.usable(Date.now())).toBe(false) // …only one
      expect(await store.decide(kindKey, budgetKey, args(1), (r) => late.push(r))).toBe('timeout')
      redis.resume()
      await waitUntil(() => late.length === 4, 2_000, 'late replies')
      expect(late.every((r) => Array.isArray(r) && r[0] === 1)).toBe(true) // Redis ran them after all
      await new Promise((r) => setTimeout(r, 250))
      expect(store.usable(Date.now())).toBe(true)
      let back = await store.decide(kindKey, budgetKey, args(1))
      for (let i = 0; i < 20 && !Array.isArray(back); i++) back = await store.decide(kindKey, budgetKey, args(0)) // as above: a busy machine may miss 5 ms
      expect(Array.isArray(back) && back[3]).toBe(6) // used today: 1 + 4 late + this one (cost-0 retries count nothing)
      expect(recovered).toBe(1)
      await redis.stop()
      await waitUntil(() => provider.client().status !== 'ready', 2_000, 'connection lost')
      expect(await store.decide(kindKey, budgetKey, args(1))).toBe('unavailable') // no wait at all
    } finally {
      redis.resume()
      await provider.close()
      await redis.close()
    }
  })
})

describe('the decision script (Lua) against a real Redis: the same rules as the local limiter', () => {
  it('budget: hard cap, retry when old buckets leave the window, thresholds once per window; outage units reconciled', async () => {
    const redis = await startRedis()
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, 'igwlua:', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
    const day = localDayNumber('UTC', Date.now())
    // no bucket, daily limit 100, budget 10 units per 3 × 200 ms, hard cap, thresholds 0.8 and 1
    const args = (cost: number, pending = 0) => [cost, day, pending, 0, 0, 100, 10, 200, 3, 1, 0, 2, 800_000, 1_000_000, 0, 0]
    const k = quotaKeys.kind('igwlua:', 't', 'graphql')
    const b = quotaKeys.budget('igwlua:', 't')
    const decide = async (cost: number, pending = 0) => {
      const r = await store.decide(k, b, args(cost, pending))
      if (!Array.isArray(r)) throw new Error(`redis: ${r}`)
      return { allowed: r[0] === 1, reason: r[1]!, used: r[3]!, total: r[4]!, retry: r[5]!, fired: r[6]! }
    }
    try {
      await store.warmUp(2_000)
      expect(await decide(4)).toMatchObject({ allowed: true, total: 4, fired: 0 })
      expect(await decide(4)).toMatchObject({ allowed: true, total: 8, fired: 0b01 }) // 80%, once
      const refused = await decide(4)
      expect(refused).toMatchObject({ allowed: false, reason: 4, total: 8, fired: 0b10 }) // exhausted counts as 100%
      expect(refused.retry).toBeGreaterThan(0)
      expect(refused.retry).toBeLessThanOrEqual(600)
      expect(await decide(1)).toMatchObject({ allowed: true, total: 9, fired: 0 }) // neither fires again
      await new Promise((r) => setTimeout(r, refused.retry + 50))
      const later = await decide(4)
      expect(later.allowed).toBe(true) // the first buckets left the window
      expect(later.total).toBeLessThanOrEqual(9)
      // units admitted during an outage (pending) count toward the day and the budget; a late
      // reply's correction (negative) takes one back. Let the whole window (3 × 200 ms) pass
      // first: how many of the earlier buckets have left it depends on timer lag, and a budget
      // still holding 9 units would (rightly) refuse 1 + 3 pending under the hard cap.
      await new Promise((r) => setTimeout(r, 650))
      const before = later.used
      expect((await decide(1, 3)).used).toBe(before + 4)
      expect((await decide(1, -1)).used).toBe(before + 4)
      // Redis lost its scripts (a restart, SCRIPT FLUSH): the call goes again as EVAL, which
      // reloads the script, and is decided — not failed over to the outage policy
      const admin = new Redis(redis.url)
      try {
        await admin.script('FLUSH')
        expect((await decide(0)).used).toBe(before + 4)
        expect(await admin.script('EXISTS', createHash('sha1').update(DECIDE_LUA).digest('hex'))).toEqual([1])
        expect((await decide(1)).used).toBe(before + 5)
      } finally {
        admin.disconnect()
      }
    } finally {
      await provider.close()
      await redis.close()
    }
  })
})

describe('batched decisions (Lua) against a real Redis: a group decides as one call per decision would', () => {
  it('bucket, daily quota, budget with hard cap and thresholds, shadow rules, outage units, two kinds on one budget', async () => {
    const redis = await startRedis()
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, '', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
    const day = localDayNumber('UTC', Date.now())
    // graphql: burst 12 (refill 1 unit per 1000 s), 7 a day; ingest: no bucket, 5 a day, its
    // daily rule in shadow mode; one budget of 20 units (hard cap, thresholds 50/80/100 %)
    const budget = [20, 3_600_000, 3, 1]
    const graphql = [1, 12_000_000, 7, ...budget, 0, 3, 500_000, 800_000, 1_000_000, 0]
    const ingest = [0, 0, 5, ...budget, 2, 3, 500_000, 800_000, 1_000_000, 0]
    const costs = { graphql: [1, 2, 1, 3, 1, 1, 9, 13, 2, 1, 1], ingest: [2, 1, 3, 1, 4, 1, 1, 2] }
    const pending = { graphql: 2, ingest: -1 }
    const rules = (prefix: string) => ({
      graphql: new DecisionRule(quotaKeys.kind(prefix, 't', 'graphql'), quotaKeys.budget(prefix, 't'), graphql),
      ingest: new DecisionRule(quotaKeys.kind(prefix, 't', 'ingest'), quotaKeys.budget(prefix, 't'), ingest),
    })
    const settled = (ws: RecordingWaiter[]) => waitUntil(() => ws.every((w) => w.reply !== undefined), 2_000, 'replies')
    // allowed, reason, whole tokens, used, budget total, retry > 0, fired, would
    const shape = (w: RecordingWaiter) => {
      if (!Array.isArray(w.reply)) throw new Error(`redis: ${String(w.reply)}`)
      const [allowed, reason, tokens, used, total, retry, fired, would] = w.reply as [number, number, number, number, number, number, number, number]
      return [allowed, reason, Math.floor(tokens / 1e6), used, total, Math.sign(retry), fired, would]
    }
    const client = new Redis(redis.url)
    try {
      await store.warmUp(2_000)
      // Reference: one call per decision (each awaited), graphql's then ingest's — the order
      // the batch's groups run in (decisions of one event-loop turn have no order of their own).
      const one = rules('one:')
      const sequential: RecordingWaiter[] = []
      for (const kind of ['graphql', 'ingest'] as const) {
        for (let i = 0; i < costs[kind].length; i++) {
          const w = new RecordingWaiter()
          store.enqueue(one[kind], costs[kind][i]!, day, i === 0 ? pending[kind] : 0, w)
          sequential.push(w)
          await settled([w])
        }
      }
      // The same decisions in one turn, interleaved: one call, two groups.
      const many = rules('many:')
      const batched = { graphql: [] as RecordingWaiter[], ingest: [] as RecordingWaiter[] }
      for (let i = 0; i < 11; i++) {
        for (const kind of ['graphql', 'ingest'] as const) {
          if (i >= costs[kind].length) continue
          const w = new RecordingWaiter()
          store.enqueue(many[kind], costs[kind][i]!, day, i === 0 ? pending[kind] : 0, w)
          batched[kind].push(w)
        }
      }
      const all = [...batched.graphql, ...batched.ingest]
      await settled(all)
      expect(all.map(shape)).toEqual(sequential.map(shape))
      // the script saw refusals of every kind, admissions, shadow passes and threshold events
      const reasons = new Set(all.map((w) => (w.reply as number[])[1]))
      expect([...reasons].sort()).toEqual([0, 1, 2, 4])
      expect(all.some((w) => (w.reply as number[])[7] === 2)).toBe(true)
      expect(all.reduce((bits, w) => bits | (w.reply as number[])[6]!, 0)).toBe(0b111)
      // and left the same state behind
      const state = async (prefix: string) => {
        const k = await client.hgetall(quotaKeys.kind(prefix, 't', 'graphql'))
        const i = await client.hgetall(quotaKeys.kind(prefix, 't', 'ingest'))
        const b = await client.hgetall(quotaKeys.budget(prefix, 't'))
        return { graphql: [k.d, k.u, Math.floor(Number(k.tk) / 1e6)], ingest: [i.d, i.u], budget: Object.keys(b).sort(), tot: b.tot, buckets: Object.entries(b).filter(([f]) => f.startsWith('b')) }
      }
      expect(await state('many:')).toEqual(await state('one:'))
      // what each group's last decision reports is what Redis kept
      const kept = await state('many:')
      const lastOf = (ws: RecordingWaiter[]) => shape(ws[ws.length - 1]!)
      expect([String(lastOf(batched.graphql)[3]), lastOf(batched.graphql)[2]]).toEqual([kept.graphql[1], kept.graphql[2]])
      expect(String(lastOf(batched.ingest)[3])).toBe(kept.ingest[1])
      expect(String(lastOf(batched.ingest)[4])).toBe(kept.tot)
    } finally {
      client.disconnect()
      await provider.close()
      await redis.close()
    }
  })
})

/** Closed-loop load: `clients` sequential loops until stop(); every result kept with its latency. */
function load(pool: Pool, tenant: string, clients: number) {
  const results: { status: number; code?: string; retry?: string; ms: number; at: number }[] = []
  let stopping = false
  const loops = Array.from({ length: clients }, async () => {
    while (!stopping) {
      const at = Date.now()
      results.push({ ...(await fire(pool, tenant).catch(() => ({ status: 0, ms: 0 }))), at })
    }
  })
  return {
    results,
    async stop() {
      stopping = true
      await Promise.all(loops)
    },
  }
}


describe('Redis outages under load (2 worker threads, 5 ms budget)', () => {
  // A request that waited for Redis to come back lasts at least this long; stalls of a loaded
  // machine (up to ~1 s seen with Redis healthy) must stay well below it.
  const OUTAGE_MS = 3_000

  async function outageProxy(redis: TestRedis, policy: 'fail-open' | 'fail-closed', upstream: string): Promise<TestProxy> {
    return startTestProxy({
      workers: 2,
      redis: { url: redis.url },
      tenants: { acme: {} },
      quotas: { redis: { onOutage: policy, budgetMs: 5, breakerOpenMs: 300 }, tenants: { acme: { graphql: { rate: 1e6, burst: 1e6 } } } },
      routes: [{ name: 'api', upstream, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
  }

  async function outage(policy: 'fail-open' | 'fail-closed', hang: boolean) {
    const redis = await startRedis()
    // A cheap echo backend: the latencies measured are the proxy's, not a GraphQL server's.
    const echo = await startRawBackend(echoHandler)
    const p = await outageProxy(redis, policy, echo.url)
    const pool = new Pool(p.url, { connections: 8 })
    const warm = load(pool, 'acme', 8)
    // JIT and pools warm (a few hundred decisions through Redis); not measured
    await waitUntil(() => warm.results.length >= 300, 30_000, 'warm-up requests')
    await warm.stop()
    // The decision histogram from here on: a cold worker's first decisions (JIT, the script's
    // first load) took over 0.5 s on a loaded machine, and they are no part of the outage.
    const warmed = await p.metricsText()
    const l = load(pool, 'acme', 8)
    try {
      await waitUntil(() => l.results.length >= 16, 5_000, 'load running') // the load is running before the outage
      if (hang) redis.pause()
      else await redis.stop()
      // From the process's exit on (a loaded machine took hundreds of ms to reap it): requests
      // sent before then may still have been decided by Redis, and admitted.
      const down = Date.now()
      await sleep(OUTAGE_MS)
      const up = Date.now()
      if (hang) redis.resume()
      else await redis.start()
      const before = metricSum(await p.metricsText(), 'igw_quota_decision_seconds_count', 'path="redis"')
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_redis_recoveries_total') >= 1, 10_000, 'breaker recovery')
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_decision_seconds_count', 'path="redis"') > before + 20, 10_000, 'decisions through Redis again')
      await l.stop()
      const text = await p.metricsText()
      const during = l.results.filter((r) => r.at >= down + 50 && r.at < up)
      return { results: l.results, during, text, warmed, p }
    } finally {
      await l.stop()
      await pool.close()
      await p.close()
      await redis.close()
      await echo.close()
    }
  }

  /** Decisions counted in `text` and not yet in `warmed`, from the series whose line holds every one of `labels`. */
  function decisionsSince(warmed: string, text: string, series: string, ...labels: string[]): number {
    const sum = (t: string) => t.split('\n').filter((l) => l.startsWith(`igw_quota_decision_seconds_${series}{`) && labels.every((s) => l.includes(s))).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
    return sum(text) - sum(warmed)
  }

  function noRequestWaited(results: { ms: number }[], warmed: string, text: string) {
    // The budget itself is measured call by call in "the Redis store" above. Here, under load
    // on a shared 2-core machine (client stalls of up to ~1 s were seen with Redis healthy while
    // other suites ran, and single decisions of 0.5 s), the claims are, from the warm-up's end
    // on: no client request (so no decision) lasted as long as the outage, and most of the
    // decisions the outage policy made were immediate, as a wait on each (a connect timeout, a
    // budget of 10 ms or more) would put nearly all of them above 10 ms. Not 95% within 10 ms
    // of all decisions: those through Redis wait on a Redis process that shares the two cores
    // (up to 70% of them took over 10 ms under load), and even the local ones wait their turn
    // of a starved event loop (16% of them over 10 ms at a load of 17).
    const fallback = decisionsSince(warmed, text, 'count', 'path="fallback"')
    expect(fallback).toBeGreaterThan(50)
    expect(decisionsSince(warmed, text, 'bucket', 'le="0.01"', 'path="fallback"')).toBeGreaterThanOrEqual(fallback * 0.5)
    expect(Math.max(...results.map((r) => r.ms))).toBeLessThan(OUTAGE_MS)
    expect(metricSum(text, 'igw_worker_restarts_total')).toBe(0)
  }

  it('fail-open, Redis killed: every request decided locally at once, no errors; shared again after restart', async () => {
    const { results, during, text, warmed } = await outage('fail-open', false)
    expect(during.length).toBeGreaterThan(50)
    expect(results.every((r) => r.status === 200)).toBe(true)
    expect(metricSum(text, 'igw_quota_redis_fallbacks_total', 'policy="fail-open"')).toBeGreaterThan(0)
    noRequestWaited(results, warmed, text)
  })

  it('fail-closed, Redis killed: 503 OVERLOADED (never 401/403/429) with Retry-After; shared again after restart', async () => {
    const { results, during, text, warmed } = await outage('fail-closed', false)
    expect(during.length).toBeGreaterThan(50)
    expect(during.filter((r) => r.status === 503).length).toBeGreaterThan(during.length * 0.9)
    expect(results.every((r) => r.status === 200 || (r.status === 503 && r.code === 'OVERLOADED' && Number(r.retry) >= 1))).toBe(true)
    expect(metricSum(text, 'igw_quota_rejections_total', 'reason="redis_unavailable"')).toBeGreaterThan(0)
    noRequestWaited(results, warmed, text)
  })

  it('fail-open, Redis hung (SIGSTOP): requests wait at most the budget, the breaker opens, then recovers', async () => {
    const { results, during, text, warmed } = await outage('fail-open', true)
    expect(during.length).toBeGreaterThan(50)
    expect(results.every((r) => r.status === 200)).toBe(true)
    expect(metricSum(text, 'igw_quota_redis_errors_total', 'error="timeout"')).toBeGreaterThanOrEqual(3)
    noRequestWaited(results, warmed, text)
  })
})

describe('local-share: the local limiter at limit ÷ live proxies', () => {
  it('two proxies split what Redis had left; the outage use reaches Redis when it is back', async () => {
    const redis = await startRedis({ persistent: true })
    const path = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      log: { level: 'warn', access: { enabled: false } },
      redis: { url: redis.url },
      tenants: { acme: {}, fresh: {} },
      quotas: {
        // Exact counts: a decision that missed its budget on a loaded machine would be made by the
        // outage policy instead (a killed Redis fails at once, whatever the budget).
        redis: { onOutage: 'local-share', budgetMs: 1_000, breakerOpenMs: 200, heartbeatMs: 100 },
        tenants: { acme: { graphql: { rate: 0.001, burst: 100, limitPerDay: 1000 } }, fresh: { graphql: { rate: 0.001, burst: 10 } } },
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    const [a, b] = await Promise.all([spawnIgw(['proxy', '--config', path]), spawnIgw(['proxy', '--config', path])])
    const pa = new Pool(a.url, { connections: 1 })
    const pb = new Pool(b.url, { connections: 1 })
    const client = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    try {
      await waitUntil(async () => metricSum(await metrics(a.adminUrl), 'igw_quota_live_proxies') === 2 && metricSum(await metrics(b.adminUrl), 'igw_quota_live_proxies') === 2, 20_000, 'both proxies count 2')
      for (let i = 0; i < 40; i++) expect((await fire(i % 2 ? pb : pa, 'acme')).status).toBe(200) // 60 tokens left in Redis
      // Let Redis write its AOF buffer out before it dies: SIGKILL loses what the process still
      // holds, not what it wrote (appendfsync everysec may postpone the write while an fsync runs).
      const admin = new Redis(redis.url)
      try {
        await waitUntil(async () => /^aof_buffer_length:0\r?$/m.test(await admin.info('persistence')), 20_000, 'AOF written')
      } finally {
        admin.disconnect()
      }
      await redis.stop()
      let admitted = 0
      for (let i = 0; i < 200; i++) if ((await fire(i % 2 ? pb : pa, 'acme')).status === 200) admitted++
      expect(admitted).toBe(60) // each proxy: its half of the 60 (fail-open would admit 120)
      await redis.start()
      // Without any request: each proxy's heartbeat finds Redis again and reports its outage use.
      await client.connect()
      await waitUntil(async () => (await usedTodayFromRedis(client, 'igw:', 'acme', 'graphql')) === 100, 20_000, 'outage use reported') // 40 + 60
      // Requests drive the breakers' probes: both recover, and the spent bucket stays spent.
      await waitUntil(
        async () => {
          expect((await fire(pa, 'acme')).code).toBe('RATE_LIMITED')
          expect((await fire(pb, 'acme')).code).toBe('RATE_LIMITED')
          return metricSum(await metrics(a.adminUrl), 'igw_quota_redis_recoveries_total') >= 1 && metricSum(await metrics(b.adminUrl), 'igw_quota_redis_recoveries_total') >= 1
        },
        20_000,
        'both proxies recover',
      )
      expect(await usedTodayFromRedis(client, 'igw:', 'acme', 'graphql')).toBe(100)
      // shared limits again: a fresh tenant gets exactly its burst across both proxies
      let fresh = 0
      for (let i = 0; i < 30; i++) if ((await fire(i % 2 ? pb : pa, 'fresh')).status === 200) fresh++
      expect(fresh).toBe(10)
    } finally {
      client.disconnect()
      await pa.close()
      await pb.close()
      await Promise.all([a.stop(), b.stop()])
      await redis.close()
    }
  })
})
