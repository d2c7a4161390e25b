// One tenant's broken key must not become everyone's outage. The decisions of one event-loop
// turn travel in one script call; a key of the wrong type under our prefix (an operator's SET,
// another tool sharing the Redis) used to fail that whole call with WRONGTYPE, so every tenant
// decided in the turn fell to the outage policy and, repeated, the breaker opened for everyone.
// Now only that tenant's group fails: its requests follow the outage policy, counted as
// igw_quota_redis_errors_total{error="key"} and logged (rate-limited) with Redis's words; the
// other tenants of the same call are decided by Redis, and the breaker stays closed. Real
// redis-server, real proxy, real clients.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber, quotaKeys } from '../../../config/quota-usage.ts'
import { DecisionRule, RedisQuotaStore, type RedisFailure } from '../../../filters/quota/redis-store.ts'
import { RecordingWaiter } from './recording-waiter.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })
const REFUSED_LOG = "redis refused a tenant's quota keys: its decisions follow the outage policy"

let backend: DemoBackend
let redis: TestRedis
let admin: Redis
beforeAll(async () => {
  backend = await startDemoBackend()
  redis = await startRedis()
  admin = new Redis(redis.url)
})
afterAll(async () => {
  admin?.disconnect()
  await backend?.close()
  await redis?.close()
})

type Reply = { tenant: string; status: number; code?: string; retry?: string }

function fire(pool: Pool, tenant: string): Promise<Reply> {
  return pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: QUERY }).then(async (r) => {
    const text = await r.body.text()
    const code = r.statusCode === 200 ? undefined : (JSON.parse(text) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code
    return { tenant, status: r.statusCode, code, retry: r.headers['retry-after'] as string | undefined }
  })
}

/** `n` requests of each tenant, all sent at once and interleaved, so the proxy decides them in the same turns. */
function burst(pool: Pool, tenants: string[], n: number): Promise<Reply[]> {
  const all: Promise<Reply>[] = []
  for (let i = 0; i < n; i++) for (const t of tenants) all.push(fire(pool, t))
  return Promise.all(all)
}

const of = (replies: Reply[], tenant: string) => replies.filter((r) => r.tenant === tenant)
const outcomes = (replies: Reply[]) => {
  const count: Record<string, number> = {}
  for (const r of replies) {
    const k = `${r.status}${r.code ? ` ${r.code}` : ''}`
    count[k] = (count[k] ?? 0) + 1
  }
  return count
}

describe('the decision script: a group that fails on its own keys fails alone', () => {
  it('one call with a wrong-type kind key and a wrong-type budget key among healthy tenants: only those groups fail (error "key"), the breaker counts no failure', async () => {
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, 'isounit:', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const failures: RedisFailure[] = []
    const refused: { keys: readonly string[]; said: string }[] = []
    let breakerChanges = 0
    const store = new RedisQuotaStore(
      provider,
      // breakerFailures 1: a single call counted as failed would open the breaker at once
      { budgetMs: 1000, breakerFailures: 1, breakerOpenMs: 60_000, breakerAfterMs: 0 },
      { failure: (k) => failures.push(k), breakerChanged: () => breakerChanges++, recovered: () => undefined, keyRefused: (keys, said) => refused.push({ keys, said }) },
    )
    const day = localDayNumber('UTC', Date.now())
    const p = 'isounit:'
    // bucket of 2 units (refill 1 per 1000 s), 100 a day; the budget rule adds 50 units per 30 d
    const bucket = [0.001, 2_000_000, 100, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    const budgeted = [0.001, 2_000_000, 100, 50, 3_600_000, 720, 0, 0, 0, 0, 0, 0, 0]
    const rule = (tenant: string, constants: number[]) => new DecisionRule(quotaKeys.kind(p, tenant, 'graphql'), quotaKeys.budget(p, tenant), constants)
    const decideAll = async (rules: DecisionRule[], perRule: number) => {
      const ws = rules.map(() => Array.from({ length: perRule }, () => new RecordingWaiter()))
      // one synchronous turn: one batch, one script call
      for (let i = 0; i < perRule; i++) for (let r = 0; r < rules.length; r++) store.enqueue(rules[r]!, 1, day, 0, ws[r]![i]!)
      await waitUntil(() => ws.every((g) => g.every((w) => w.reply !== undefined)), 5_000, 'replies')
      return ws.map((g) => g.map((w) => (Array.isArray(w.reply) ? (w.reply[0] === 1 ? 'allowed' : `refused:${w.reply[1]}`) : w.reply)))
    }
    try {
      expect(await store.warmUp(2_000)).toBe(true)
      await admin.set(quotaKeys.kind(p, 'broken', 'graphql'), 'not a hash')
      await admin.rpush(quotaKeys.budget(p, 'brokenbudget'), 'a list')
      const rules = [rule('a', bucket), rule('broken', bucket), rule('b', budgeted), rule('brokenbudget', budgeted), rule('c', bucket)]
      const replies0 = store.replies
      const first = await decideAll(rules, 3)
      expect(store.replies - replies0).toBe(1) // all five groups went in one call
      expect(first).toEqual([
        ['allowed', 'allowed', 'refused:1'],
        ['key', 'key', 'key'],
        ['allowed', 'allowed', 'refused:1'],
        ['key', 'key', 'key'],
        ['allowed', 'allowed', 'refused:1'],
      ])
      expect(failures).toEqual(['key', 'key'])
      expect(refused.map((r) => r.keys)).toEqual([[quotaKeys.kind(p, 'broken', 'graphql')], [quotaKeys.kind(p, 'brokenbudget', 'graphql'), quotaKeys.budget(p, 'brokenbudget')]])
      for (const r of refused) expect(r.said).toMatch(/^WRONGTYPE Operation against a key holding the wrong kind of value/)
      // Redis answered: nothing counted against it, the breaker never moved
      expect(store.breaker.failures).toBe(0)
      expect(breakerChanges).toBe(0)
      // calls of broken groups only, again and again: still no outage
      for (let i = 0; i < 3; i++) expect(await decideAll([rule('broken', bucket)], 1)).toEqual([['key']])
      expect(store.usable(Date.now())).toBe(true)
      expect(store.breaker.failures).toBe(0)
      // the healthy groups were charged exactly (2 admitted each), the broken keys left as they were
      expect(await admin.hget(quotaKeys.kind(p, 'a', 'graphql'), 'u')).toBe('2')
      expect(await admin.hget(quotaKeys.budget(p, 'b'), 'tot')).toBe('2')
      expect(await admin.get(quotaKeys.kind(p, 'broken', 'graphql'))).toBe('not a hash')
      expect(await admin.exists(quotaKeys.kind(p, 'brokenbudget', 'graphql'))).toBe(0) // its group wrote nothing
      // fixed by the operator: decided by Redis again
      await admin.del(quotaKeys.kind(p, 'broken', 'graphql'), quotaKeys.budget(p, 'brokenbudget'))
      expect(await decideAll([rule('broken', bucket), rule('brokenbudget', budgeted)], 1)).toEqual([['allowed'], ['allowed']])
    } finally {
      await provider.close()
    }
  })

  it('a refusal of Redis itself (OOM) still fails the whole call: that is an outage', async () => {
    const registry = new Registry()
    const provider = new SharedRedis(redis.url, 'isooom:', pino({ level: 'silent' }), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
    const failures: RedisFailure[] = []
    const store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 5, breakerOpenMs: 60_000, breakerAfterMs: 0 }, { failure: (k) => failures.push(k), breakerChanged: () => undefined, recovered: () => undefined })
    const day = localDayNumber('UTC', Date.now())
    const args = [1, day, 0, 0.001, 2_000_000, 100, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    try {
      expect(await store.warmUp(2_000)).toBe(true)
      await admin.config('SET', 'maxmemory-policy', 'noeviction')
      await admin.config('SET', 'maxmemory', '1')
      try {
        const [a, b] = await Promise.all([store.decide(quotaKeys.kind('isooom:', 'a', 'graphql'), quotaKeys.budget('isooom:', 'a'), args), store.decide(quotaKeys.kind('isooom:', 'b', 'graphql'), quotaKeys.budget('isooom:', 'b'), args)])
        expect([a, b]).toEqual(['error', 'error'])
      } finally {
        await admin.config('SET', 'maxmemory', '0')
      }
      expect(failures).toEqual(['error'])
      expect(store.breaker.failures).toBe(1)
    } finally {
      await provider.close()
    }
  })
})

describe('a wrong-type key for one tenant, through the real proxy', () => {
  // rate: 1000/s: never refused here; tight: 3 units, then refused (refill 1 per 1000 s)
  const quotas = (onOutage: 'fail-closed' | 'fail-open') => ({
    // a generous budget: this is about errors, not latency on a busy test machine
    // breakerFailures 2 / breakerAfterMs 0: two failed calls would open the breaker for a minute
    redis: { budgetMs: 1000, onOutage, breakerFailures: 2, breakerAfterMs: 0, breakerOpenMs: 60_000 },
    tenants: {
      broken: { graphql: { rate: 0.001, burst: 2 } },
      acme: { graphql: { rate: 1000, burst: 1000 } },
      tight: { graphql: { rate: 0.001, burst: 3 } },
    },
  })
  let proxy: TestProxy | undefined
  afterAll(async () => {
    await proxy?.close()
  })

  async function start(prefix: string, onOutage: 'fail-closed' | 'fail-open'): Promise<TestProxy> {
    // planted before the proxy's first decision, as another tool or an operator's SET would
    await admin.set(quotaKeys.kind(prefix, 'broken', 'graphql'), 'operator mistake')
    proxy = await startTestProxy({
      redis: { url: redis.url, keyPrefix: prefix },
      tenants: { broken: {}, acme: {}, tight: {} },
      quotas: quotas(onOutage),
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    return proxy
  }

  it('fail-closed: "broken" gets 503 OVERLOADED, everyone in the same turns is decided by Redis (200 / 429), the breaker stays closed, each refusal is counted and logged once', async () => {
    const p = await start('isoclosed:', 'fail-closed')
    const pool = new Pool(p.url, { connections: 30 })
    try {
      const replies = [...(await burst(pool, ['broken', 'acme', 'tight'], 10)), ...(await burst(pool, ['broken', 'acme', 'tight'], 10))]
      expect(outcomes(of(replies, 'acme'))).toEqual({ '200': 20 })
      expect(outcomes(of(replies, 'tight'))).toEqual({ '200': 3, '429 RATE_LIMITED': 17 })
      expect(outcomes(of(replies, 'broken'))).toEqual({ '503 OVERLOADED': 20 })
      for (const r of of(replies, 'broken')) expect(r.retry).toBe('1')
      const m = await p.metricsText()
      expect(metricSum(m, 'igw_quota_redis_errors_total', 'error="key"')).toBeGreaterThanOrEqual(1)
      expect(metricSum(m, 'igw_quota_redis_errors_total', 'error="key"')).toBeLessThanOrEqual(20) // one per refused group per call
      expect(metricSum(m, 'igw_quota_redis_errors_total', 'error="error"')).toBe(0)
      expect(metricSum(m, 'igw_quota_redis_errors_total', 'error="timeout"')).toBe(0)
      expect(metricSum(m, 'igw_quota_redis_breaker_open')).toBe(0)
      expect(metricSum(m, 'igw_quota_rejections_total', 'reason="redis_unavailable"')).toBe(20)
      expect(metricSum(m, 'igw_quota_redis_fallbacks_total', 'policy="fail-closed"')).toBe(20)
      // acme and tight: every decision by Redis
      expect(metricSum(m, 'igw_quota_decision_seconds_count', 'path="redis"')).toBe(40)
      // the log says which key and what Redis said, once (rate-limited), not once per request
      await waitUntil(() => p.logs.find(REFUSED_LOG).length > 0, 2_000, 'the refused-key log line')
      const lines = p.logs.find(REFUSED_LOG)
      expect(lines).toHaveLength(1)
      expect(lines[0]!.keys).toEqual([quotaKeys.kind('isoclosed:', 'broken', 'graphql')])
      expect(String(lines[0]!.redisError)).toMatch(/^WRONGTYPE/)
      expect(p.logs.find('redis unreachable: quota decisions follow the outage policy')).toHaveLength(0)
      // later requests: the others still through Redis; "broken" served once the key is fixed
      expect((await fire(pool, 'acme')).status).toBe(200)
      expect((await fire(pool, 'tight')).code).toBe('RATE_LIMITED')
      await admin.del(quotaKeys.kind('isoclosed:', 'broken', 'graphql'))
      expect(outcomes(await burst(pool, ['broken'], 3))).toEqual({ '200': 2, '429 RATE_LIMITED': 1 })
      expect(metricSum(await p.metricsText(), 'igw_quota_redis_breaker_open')).toBe(0)
    } finally {
      await pool.close()
      await p.close()
      proxy = undefined
    }
  })

  it('fail-open: "broken" is limited by the local limiter, the others by Redis, and the breaker stays closed', async () => {
    const p = await start('isoopen:', 'fail-open')
    const pool = new Pool(p.url, { connections: 30 })
    try {
      const replies = [...(await burst(pool, ['broken', 'acme', 'tight'], 10)), ...(await burst(pool, ['broken', 'acme', 'tight'], 10))]
      expect(outcomes(of(replies, 'acme'))).toEqual({ '200': 20 })
      expect(outcomes(of(replies, 'tight'))).toEqual({ '200': 3, '429 RATE_LIMITED': 17 })
      // its own burst of 2, from the local (shared-memory) limiter
      expect(outcomes(of(replies, 'broken'))).toEqual({ '200': 2, '429 RATE_LIMITED': 18 })
      const m = await p.metricsText()
      expect(metricSum(m, 'igw_quota_redis_errors_total', 'error="key"')).toBeGreaterThanOrEqual(1)
      expect(metricSum(m, 'igw_quota_redis_errors_total', 'error="error"')).toBe(0)
      expect(metricSum(m, 'igw_quota_redis_breaker_open')).toBe(0)
      expect(metricSum(m, 'igw_quota_redis_fallbacks_total', 'policy="fail-open"')).toBe(20)
      expect(metricSum(m, 'igw_quota_decision_seconds_count', 'path="redis"')).toBe(40)
      expect(metricSum(m, 'igw_quota_decision_seconds_count', 'path="fallback"')).toBe(20)
      // tight's 429s came from Redis (its bucket lives there), not from a local fallback
      expect(await admin.hget(quotaKeys.kind('isoopen:', 'tight', 'graphql'), 'u')).toBe('3')
    } finally {
      await pool.close()
      await p.close()
      proxy = undefined
    }
  })
})
