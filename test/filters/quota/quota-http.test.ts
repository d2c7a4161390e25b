// The quota filter through the real proxy (worker threads, shared memory) and real backends:
// headers per the IETF draft, the three 429 codes, exactness across worker threads, cost from
// the context (the real persisted filter sets it), shadow mode, QoS shedding, concurrency
// slots, budget events through a real webhook receiver (with retry), anomaly alerts.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { Pool, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../../config/load.ts'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { RequestContext } from '../../../proxy/context.ts'
import type { LocalReply } from '../../../proxy/filter.ts'
import type { RouteRuntime } from '../../../proxy/runtime.ts'
import { echoHandler, startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { intParam, parseList } from './structured-fields.ts'
import { waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello(name: "quota") }' })

async function gql(url: string, tenant: string, body = QUERY) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(text) as { data?: unknown; errors?: { message: string; extensions: Record<string, unknown> }[] } }
}

function header(h: Record<string, string | string[] | undefined>, name: string): string {
  const v = h[name]
  if (typeof v !== 'string') throw new Error(`missing header ${name}`)
  return v
}

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

async function proxyWith(doc: Omit<GatewayConfigInput, 'routes'> & { routes?: GatewayConfigInput['routes'] }, filters: unknown[] = [{ name: 'tenant' }, { name: 'quota' }]): Promise<TestProxy> {
  return startTestProxy({ routes: [{ name: 'api', upstream: backend.url, filters: filters as never }], ...doc })
}

describe('RateLimit headers (draft-ietf-httpapi-ratelimit-headers-11)', () => {
  it('admitted and refused responses carry fields that parse as Structured Field Lists with the draft parameters', async () => {
    const p = await proxyWith({
      tenants: { acme: { timezone: 'Europe/Berlin' } },
      quotas: { tenants: { acme: { graphql: { rate: 1, burst: 3, limitPerDay: 1000, maxConcurrent: 50 }, budget: { units: 100_000, hardCap: true } } } },
    })
    try {
      const seen: number[] = []
      for (let i = 0; i < 3; i++) {
        const r = await gql(p.url, 'acme')
        expect(r.status).toBe(200)
        const policies = parseList(header(r.headers, 'ratelimit-policy'))
        expect(policies.map((x) => x.value)).toEqual(['rate', 'daily', 'budget', 'concurrent']) // Strings, not Tokens
        for (const pol of policies) {
          expect(intParam(pol, 'q')).toBeGreaterThanOrEqual(0)
          if (pol.value !== 'concurrent') expect(intParam(pol, 'w')).toBeGreaterThan(0)
        }
        expect(policies.find((x) => x.value === 'concurrent')!.params.get('qu')).toBe('concurrent-requests')
        expect(intParam(policies[0]!, 'q')).toBe(3)
        expect(intParam(policies[1]!, 'q')).toBe(1000)
        const limits = parseList(header(r.headers, 'ratelimit'))
        for (const l of limits) {
          expect(policies.map((x) => x.value)).toContain(l.value)
          expect(intParam(l, 'r')).toBeGreaterThanOrEqual(0)
        }
        seen.push(intParam(limits.find((l) => l.value === 'rate')!, 'r'))
        const daily = limits.find((l) => l.value === 'daily')!
        expect(intParam(daily, 'r')).toBe(1000 - (i + 1))
        expect(intParam(daily, 't')).toBeLessThanOrEqual(25 * 3600)
      }
      expect(seen).toEqual([2, 1, 0])
      const refused = await gql(p.url, 'acme')
      expect(refused.status).toBe(429)
      expect(refused.json.errors![0]!.extensions).toMatchObject({ code: 'RATE_LIMITED', kind: 'graphql', policy: 'rate', limit: 3, remaining: 0, cost: 1 })
      const retryAfter = Number(header(refused.headers, 'retry-after'))
      expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true)
      expect(refused.json.errors![0]!.extensions.retryAfterSeconds).toBe(retryAfter)
      const limits = parseList(header(refused.headers, 'ratelimit'))
      // Retry-After must not point before the end of any effective window in the response.
      for (const l of limits) expect(intParam(l, 't')).toBeLessThanOrEqual(retryAfter)
      expect(limits.map((l) => l.value)).toEqual(['rate'])
      expect(parseList(header(refused.headers, 'ratelimit-policy')).length).toBe(4)
      expect(refused.headers['x-ratelimit-limit']).toBeUndefined() // legacy headers are opt-in
    } finally {
      await p.close()
    }
  })

  it('legacy X-RateLimit-* headers on request, for the most constrained policy', async () => {
    const p = await proxyWith({ tenants: { acme: {} }, quotas: { tenants: { acme: { graphql: { rate: 0.001, burst: 2, limitPerDay: 100 } } } } }, [{ name: 'tenant' }, { name: 'quota', headers: { legacy: true } }])
    try {
      const a = await gql(p.url, 'acme')
      expect([a.headers['x-ratelimit-limit'], a.headers['x-ratelimit-remaining']]).toEqual(['2', '1'])
      await gql(p.url, 'acme')
      const c = await gql(p.url, 'acme')
      expect(c.status).toBe(429)
      expect([c.headers['x-ratelimit-limit'], c.headers['x-ratelimit-remaining']]).toEqual(['2', '0'])
      expect(Number(c.headers['x-ratelimit-reset'])).toBe(Number(c.headers['retry-after']))
    } finally {
      await p.close()
    }
  })
})

describe('daily quotas and budgets', () => {
  it('QUOTA_EXCEEDED until midnight in the tenant time zone, with Retry-After counting down to it', async () => {
    const tz = 'Pacific/Kiritimati' // UTC+14, no DST: its midnight is nobody else's
    const p = await proxyWith({ tenants: { kiri: { timezone: tz } }, quotas: { tenants: { kiri: { graphql: { limitPerDay: 2 } } } } })
    try {
      expect((await gql(p.url, 'kiri')).status).toBe(200)
      expect((await gql(p.url, 'kiri')).status).toBe(200)
      const r = await gql(p.url, 'kiri')
      expect(r.status).toBe(429)
      expect(r.json.errors![0]!.extensions).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily', limit: 2, remaining: 0 })
      const parts = Object.fromEntries(new Intl.DateTimeFormat('en-GB', { timeZone: tz, hour: 'numeric', minute: 'numeric', second: 'numeric', hourCycle: 'h23' }).formatToParts(Date.now()).map((x) => [x.type, Number(x.value)]))
      const toMidnight = 86_400 - (parts.hour! * 3600 + parts.minute! * 60 + parts.second!)
      expect(Math.abs(Number(r.headers['retry-after']) - toMidnight)).toBeLessThanOrEqual(2)
      expect(r.json.errors![0]!.message).toContain(tz)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_used_today', 'tenant="kiri"')).toBe(2)
      expect(metricSum(text, 'igw_quota_rejections_total', 'reason="daily"')).toBe(1)
    } finally {
      await p.close()
    }
  })

  it('cost comes from the context: the real persisted filter puts a manifest cost there', async () => {
    const p = await proxyWith(
      {
        tenants: { acme: {} },
        persistedDocuments: { operations: { heavy: { document: 'query Heavy { hello }', costUnits: 7 } } },
        quotas: { tenants: { acme: { graphql: { rate: 0.001, burst: 20 } } } },
      },
      [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }],
    )
    try {
      const body = JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: 'heavy' } } })
      const a = await gql(p.url, 'acme', body)
      expect(a.status).toBe(200)
      expect(intParam(parseList(header(a.headers, 'ratelimit'))[0]!, 'r')).toBe(13)
      expect((await gql(p.url, 'acme', body)).status).toBe(200)
      const c = await gql(p.url, 'acme', body) // 6 left < 7
      expect(c.status).toBe(429)
      expect(c.json.errors![0]!.extensions).toMatchObject({ code: 'RATE_LIMITED', remaining: 6, cost: 7 })
    } finally {
      await p.close()
    }
  })

  it('budget: BUDGET_EXHAUSTED at the hard cap; 80% and 100% events exactly once across 2 workers, webhook retried', async () => {
    const attempts = new Map<string, number>()
    const bodies = new Map<string, { threshold: number; tenant: string; type: string }>()
    const hook: RawBackend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      let data = ''
      req.on('data', (c: Buffer) => (data += c))
      req.on('end', () => {
        const id = String(req.headers['igw-event-id'])
        const n = (attempts.get(id) ?? 0) + 1
        attempts.set(id, n)
        bodies.set(id, JSON.parse(data) as { threshold: number; tenant: string; type: string })
        res.writeHead(n === 1 ? 503 : 204).end() // every first attempt fails: the retry must deliver
      })
    })
    const p = await proxyWith({
      workers: 2,
      tenants: { acme: {} },
      quotas: {
        tenants: { acme: { budget: { units: 100, hardCap: true, thresholds: [0.8, 1] } } },
        events: { webhook: { url: hook.url, backoffMs: 50, headers: { authorization: 'Bearer hook-secret' } } },
      },
    })
    const pool = new Pool(p.url, { connections: 50 })
    try {
      const statuses = await Promise.all(
        Array.from({ length: 150 }, () =>
          pool
            .request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: QUERY })
            .then(async (r) => {
              const j = (await r.body.json()) as { errors?: { extensions: { code: string } }[] }
              return r.statusCode === 200 ? 200 : j.errors![0]!.extensions.code
            }),
        ),
      )
      expect(statuses.filter((s) => s === 200)).toHaveLength(100)
      expect(statuses.filter((s) => s === 'BUDGET_EXHAUSTED')).toHaveLength(50)
      await waitUntil(() => [...attempts.values()].filter((n) => n >= 2).length === 2, 5_000)
      await new Promise((r) => setTimeout(r, 300)) // nothing more may arrive
      const events = [...bodies.values()]
      expect(events.map((e) => e.threshold).sort()).toEqual([0.8, 1])
      expect(events.every((e) => e.tenant === 'acme' && e.type === 'budget.threshold')).toBe(true)
      expect([...attempts.values()]).toEqual([2, 2])
      expect(hook.requests.every((r) => r.headers.authorization === 'Bearer hook-secret')).toBe(true)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_events_total')).toBe(2)
      expect(metricSum(text, 'igw_quota_webhook_deliveries_total', 'result="delivered"')).toBe(2)
      expect(metricSum(text, 'igw_quota_webhook_deliveries_total', 'result="retry"')).toBe(2)
      expect(metricSum(text, 'igw_budget_used_ratio', 'tenant="acme"')).toBe(1)
      expect(metricSum(text, 'igw_worker_requests_total', 'worker="0"')).toBeGreaterThan(0)
      expect(metricSum(text, 'igw_worker_requests_total', 'worker="1"')).toBeGreaterThan(0)
      expect(p.logs.lines.filter((l) => (l.event as { type?: string } | undefined)?.type === 'budget.threshold')).toHaveLength(2)
    } finally {
      await pool.close()
      await p.close()
      await hook.close()
    }
  })
})

describe('exactness across worker threads', () => {
  it('2 workers, 200 concurrent clients, limit 100 → exactly 100 admitted (bucket and daily quota)', async () => {
    const p = await proxyWith({
      workers: 2,
      tenants: { bucket: {}, daily: {} },
      quotas: { tenants: { bucket: { graphql: { rate: 0.001, burst: 100 } }, daily: { graphql: { limitPerDay: 100 } } } },
    })
    const pool = new Pool(p.url, { connections: 200 })
    try {
      const fire = (tenant: string) => pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: QUERY }).then(async (r) => (await r.body.dump(), r.statusCode))
      const all = await Promise.all([...Array.from({ length: 400 }, () => fire('bucket')), ...Array.from({ length: 400 }, () => fire('daily'))])
      const bucket = all.slice(0, 400)
      const daily = all.slice(400)
      expect(bucket.filter((s) => s === 200)).toHaveLength(100)
      expect(bucket.filter((s) => s === 429)).toHaveLength(300)
      expect(daily.filter((s) => s === 200)).toHaveLength(100)
      expect(daily.filter((s) => s === 429)).toHaveLength(300)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_worker_requests_total', 'worker="0"')).toBeGreaterThan(0)
      expect(metricSum(text, 'igw_worker_requests_total', 'worker="1"')).toBeGreaterThan(0)
      expect(metricSum(text, 'igw_quota_used_today', 'tenant="daily"')).toBe(100)
    } finally {
      await pool.close()
      await p.close()
    }
  })
})

describe('shadow mode', () => {
  it('decides and counts would_reject but lets everything through, without advertising the trial limit', async () => {
    const p = await proxyWith({ tenants: { acme: {} }, quotas: { tenants: { acme: { graphql: { rate: 0.001, burst: 3, shadow: true } } } } })
    try {
      const statuses: number[] = []
      for (let i = 0; i < 6; i++) {
        const r = await gql(p.url, 'acme')
        statuses.push(r.status)
        expect(r.headers.ratelimit).toBeUndefined()
      }
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200])
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_would_reject_total', 'reason="rate"')).toBe(3)
      expect(metricSum(text, 'igw_quota_rejections_total')).toBe(0)
    } finally {
      await p.close()
    }
  })
})

/** A backend that holds every request until release(): deterministic requests in flight. */
async function holdingBackend() {
  const held: ServerResponse[] = []
  const be = await startRawBackend((req, res) => {
    req.resume()
    req.on('end', () => held.push(res))
  })
  return {
    be,
    held,
    release: () => {
      for (const r of held.splice(0)) r.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{}}')
    },
  }
}

describe('QoS tiers under overload', () => {
  it('bronze is shed first, then silver; gold while capacity remains (503 OVERLOADED + Retry-After)', async () => {
    const h = await holdingBackend()
    const p = await startTestProxy({
      workers: 2,
      tenants: { g: { tier: 'gold' }, s: { tier: 'silver' }, b: { tier: 'bronze' } },
      quotas: { qos: { maxInFlight: 10 } }, // shed at 7 in flight (bronze), 8.5 (silver), 10 (gold)
      routes: [{ name: 'api', upstream: h.be.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    const pool = new Pool(p.url, { connections: 20 })
    const send = (tenant: string) => pool.request({ path: '/x', method: 'GET', headers: { 'x-tenant-id': tenant } }).then(async (r) => ({ status: r.statusCode, retry: r.headers['retry-after'], body: await r.body.text() }))
    try {
      const pending: Promise<{ status: number }>[] = []
      for (let i = 0; i < 7; i++) pending.push(send('g'))
      await waitUntil(() => h.held.length === 7, 5_000)
      const bronze = await send('b') // 7 in flight: bronze (0.7) shed
      expect(bronze.status).toBe(503)
      expect(bronze.retry).toBe('1')
      expect(JSON.parse(bronze.body).errors[0].extensions).toMatchObject({ code: 'OVERLOADED', tier: 'bronze' })
      pending.push(send('s'), send('s')) // 7 → 8 → 9: silver admitted below 8.5
      await waitUntil(() => h.held.length === 9, 5_000)
      expect((await send('s')).status).toBe(503) // 9 in flight ≥ 8.5
      pending.push(send('g')) // gold still fits: 10
      await waitUntil(() => h.held.length === 10, 5_000)
      expect((await send('g')).status).toBe(503) // capacity gone: even gold
      h.release()
      expect((await Promise.all(pending)).map((r) => r.status)).toEqual(Array(10).fill(200))
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_qos_drops_total', 'tier="bronze"')).toBe(1)
      expect(metricSum(text, 'igw_qos_drops_total', 'tier="silver"')).toBe(1)
      expect(metricSum(text, 'igw_qos_drops_total', 'tier="gold"')).toBe(1)
      // shed requests, not dropped subscription events (the hub counts those as kind="event")
      expect(metricSum(text, 'igw_qos_drops_total', 'kind="request"')).toBe(3)
      expect(metricSum(text, 'igw_qos_drops_total', 'kind="event"')).toBe(0)
      await waitUntil(() => true, 0)
      expect(metricSum(await p.metricsText(), 'igw_quota_inflight')).toBe(0) // every slot released
    } finally {
      h.release()
      await pool.close()
      await p.close()
      await h.be.close()
    }
  })
})

describe('concurrency slots (subscriptions kind)', () => {
  it('HTTP: a third concurrent request over maxConcurrent 2 gets RATE_LIMITED; a finished one frees its slot', async () => {
    const h = await holdingBackend()
    const p = await startTestProxy({
      workers: 2,
      tenants: { acme: {} },
      quotas: { tenants: { acme: { subscriptions: { maxConcurrent: 2 } } } },
      routes: [{ name: 'sse', upstream: h.be.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    })
    const pool = new Pool(p.url, { connections: 5 })
    const send = () => pool.request({ path: '/stream', method: 'GET', headers: { 'x-tenant-id': 'acme' } }).then(async (r) => ({ status: r.statusCode, headers: r.headers, body: await r.body.text() }))
    try {
      const first = [send(), send()]
      await waitUntil(() => h.held.length === 2, 5_000)
      const third = await send()
      expect(third.status).toBe(429)
      expect(JSON.parse(third.body).errors[0].extensions).toMatchObject({ code: 'RATE_LIMITED', kind: 'subscriptions', policy: 'concurrent', limit: 2 })
      expect(parseList(String(third.headers.ratelimit)).map((i) => [i.value, intParam(i, 'r')])).toEqual([['concurrent', 0]])
      h.release()
      expect((await Promise.all(first)).map((r) => r.status)).toEqual([200, 200])
      const again = send()
      await waitUntil(() => h.held.length === 1, 5_000)
      h.release()
      expect((await again).status).toBe(200)
    } finally {
      h.release()
      await pool.close()
      await p.close()
      await h.be.close()
    }
  })

  it('subscription hub contract: ctx.subscription holds a slot until ctx.runCleanups(); a refusal is a LocalReply', async () => {
    const config = validateConfig({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { subscriptions: { maxConcurrent: 2, rate: 100 } } }, qos: { maxInFlight: 1 } },
      routes: [{ name: 'ws', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    })
    const registry = new Registry()
    const filter = await quotaFilter.create(config.routes[0]!.filters[1] as never, {
      routeName: 'ws',
      workerId: 0,
      config,
      logger: pino({ level: 'silent' }),
      registry,
      shared: new SharedArrayBuffer(QUOTA_SHARED_BYTES),
      redis: undefined,
    })
    // Real IncomingMessages (the hub runs subscribes on the upgrade request's context).
    const be = await startRawBackend(echoHandler)
    const reqs: IncomingMessage[] = []
    be.server.on('request', (req: IncomingMessage) => reqs.push(req))
    await Promise.all([0, 1, 2, 3].map(() => request(be.url)))
    const route = { name: 'ws', timeouts: { totalMs: 0 } } as unknown as RouteRuntime
    const ctxs = reqs.slice(0, 4).map((req, i) => {
      const c = new RequestContext(req, undefined, route, pino({ level: 'silent' }), performance.now(), `r${i}`)
      c.tenant = 'acme'
      c.tier = 'silver'
      c.subscription = { id: String(i), connectionId: 'c1' }
      return c
    })
    try {
      expect(await filter.onRequest!(ctxs[0]!)).toBeUndefined()
      expect(await filter.onRequest!(ctxs[1]!)).toBeUndefined() // maxInFlight 1 does not count subscriptions
      const refused = (await filter.onRequest!(ctxs[2]!)) as LocalReply
      expect(refused.status).toBe(429)
      expect(JSON.parse(String(refused.body)).errors[0].extensions).toMatchObject({ code: 'RATE_LIMITED', policy: 'concurrent' })
      ctxs[0]!.runCleanups() // the first subscription completed
      expect(await filter.onRequest!(ctxs[3]!)).toBeUndefined()
    } finally {
      await filter.close?.()
      await be.close()
    }
  })
})

describe('anomaly alerts', () => {
  it('a tenant rate far above its own baseline alerts once (hysteresis), through the same sink', async () => {
    const received: { type: string; tenant: string; z: number }[] = []
    const hook = await startRawBackend((req, res) => {
      let d = ''
      req.on('data', (c: Buffer) => (d += c))
      req.on('end', () => {
        received.push(JSON.parse(d) as { type: string; tenant: string; z: number })
        res.writeHead(200).end()
      })
    })
    const p = await proxyWith({
      workers: 2,
      tenants: { acme: {} },
      quotas: {
        anomaly: { enabled: true, intervalMs: 250, warmupIntervals: 4, minRequests: 15, zThreshold: 5, clearZ: 2, clearIntervals: 3, alpha: 0.1 },
        events: { webhook: { url: hook.url } },
      },
    })
    const pool = new Pool(p.url, { connections: 20 })
    const fire = () => pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: QUERY }).then((r) => r.body.dump())
    try {
      const t0 = Date.now()
      while (Date.now() - t0 < 2_500) {
        await fire() // a calm baseline: a few requests per interval
        await new Promise((r) => setTimeout(r, 80))
      }
      expect(received).toHaveLength(0)
      const t1 = Date.now()
      while (Date.now() - t1 < 1_500) await Promise.all(Array.from({ length: 20 }, fire)) // a sustained surge
      await waitUntil(() => received.length > 0, 3_000)
      await new Promise((r) => setTimeout(r, 700))
      expect(received).toHaveLength(1)
      expect(received[0]).toMatchObject({ type: 'anomaly.rate', tenant: 'acme' })
      expect(received[0]!.z).toBeGreaterThan(5)
      expect(metricSum(await p.metricsText(), 'igw_quota_events_total', 'type="anomaly.rate"')).toBe(1)
    } finally {
      await pool.close()
      await p.close()
      await hook.close()
    }
  })
})

describe('configuration errors name the path', () => {
  function problems(doc: unknown): string[] {
    try {
      validateConfig(doc)
    } catch (err) {
      if (err instanceof ConfigError) return err.problems
      throw err
    }
    return []
  }
  it('unknown quota tenants, quota before tenant, bad budgets, bad kinds', () => {
    const p = problems({
      tenants: { acme: {} },
      routes: [{ name: 'a', upstream: 'http://127.0.0.1:1', filters: [{ name: 'quota', kind: 'videos' }, { name: 'tenant' }] }],
      quotas: { tenants: { acme: { graphql: { rate: -1 }, budget: { units: 10, window: '30d', bucket: '7h' } } }, redis: { onOutage: 'pray' } },
    })
    expect(p.find((l) => l.startsWith('routes[0].filters[0].kind: expected one of "graphql" | "ingest" | "embeddings" | "subscriptions"'))).toBeDefined()
    expect(p.find((l) => l.startsWith('quotas.tenants.acme.graphql.rate:'))).toBeDefined()
    expect(p).toContain('quotas.tenants.acme.budget: expected window to be a whole number of buckets')
    expect(p.find((l) => l.startsWith('quotas.redis.onOutage: expected one of "fail-open" | "local-share" | "fail-closed"'))).toBeDefined()
    // Cross-section rules (checked once every field is valid).
    const cross = problems({ tenants: { acme: {} }, routes: [{ name: 'a', upstream: 'http://127.0.0.1:1', filters: [{ name: 'quota' }, { name: 'tenant' }] }], quotas: { tenants: { acme: {}, ghost: {} } } })
    expect(cross).toContain('routes[0].filters[0]: quota must come after the tenant filter (it limits per tenant)')
    expect(cross).toContain('quotas.tenants.ghost: unknown tenant "ghost" (list it under tenants:)')
  })
})
