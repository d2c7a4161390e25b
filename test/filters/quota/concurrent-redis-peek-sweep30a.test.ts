// Sweep 30a: a concurrency refusal names the limit that frees up last (sweep 28h), but with Redis
// it read this proxy's table, which holds what its own last decision saw. A day or a budget that
// another proxy spent since was not seen: the refusal said "concurrent, retry in 1 s" to a tenant
// whose day was used up, and a budget's wait was the next bucket's start, not when the window
// frees the units. It now asks Redis: the decision script in its read-only mode, which must
// take nothing (checked on Redis's keys).
// Two real proxies sharing a real redis-server; held requests fill the slot.
import type { ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

const held: ServerResponse[] = []
let holding: RawBackend
let answering: RawBackend
let redis: TestRedis
beforeAll(async () => {
  ;[holding, answering, redis] = await Promise.all([startRawBackend((_req, res) => void held.push(res)), startRawBackend((_req, res) => void res.end('{"data":{"a":1}}')), startRedis()])
})
afterAll(async () => {
  for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
  await Promise.all([holding?.close(), answering?.close(), redis?.close()])
})

interface Answer {
  status: number
  retryAfter?: string
  ext?: { code: string; policy: string; remaining: number; retryAfterSeconds: number }
}

async function call(url: string, tenant: string): Promise<Answer> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  const ext = (JSON.parse(text) as { errors: { extensions: Answer['ext'] }[] }).errors[0]!.extensions
  return { status: res.statusCode, retryAfter: res.headers['retry-after'] as string, ext }
}

it('names a day or budget another proxy spent, with Redis\'s wait, writing nothing (sweep 30a)', async () => {
  const prefix = `sweep30a-${Date.now()}:`
  const doc = (upstream: string): Parameters<typeof startTestProxy>[0] => ({
    redis: { url: redis.url, keyPrefix: prefix },
    tenants: { day: {}, budget: {}, plain: {} },
    quotas: {
      redis: { budgetMs: 1000 },
      tenants: {
        day: { graphql: { maxConcurrent: 1, limitPerDay: 2 } },
        budget: { graphql: { maxConcurrent: 1 }, budget: { units: 2, window: '30d', bucket: '1d', hardCap: true } },
        plain: { graphql: { maxConcurrent: 1, limitPerDay: 5 } },
      },
    },
    routes: [{ name: 'api', upstream, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
  })
  const client = new Redis(redis.url)
  const [a, b] = await Promise.all([startTestProxy(doc(holding.url)), startTestProxy(doc(answering.url))])
  try {
    // Proxy A holds one request of each tenant (its table: 1 unit used of each)…
    const first = ['day', 'budget', 'plain'].map((t) => call(a.url, t))
    await waitUntil(() => held.length === 3, 5_000, 'three held requests')
    // …and proxy B spends the rest of the day and of the budget.
    expect((await call(b.url, 'day')).status).toBe(200)
    expect((await call(b.url, 'budget')).status).toBe(200)
    expect((await call(b.url, 'plain')).status).toBe(200)
    // The refusals below read Redis and write nothing (the proxies' heartbeat set aside).
    const snapshot = async () => {
      const keys = (await client.keys(`${prefix}*`)).filter((k) => !k.endsWith('q:proxies')).sort()
      return Promise.all(keys.map(async (k) => [k, await client.hgetall(k).catch(() => 'not a hash'), await client.pttl(k) > 0]))
    }
    const before = await snapshot()
    const day = await call(a.url, 'day')
    expect(day.status).toBe(429)
    expect(day.ext).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily', remaining: 0 })
    expect(Number(day.retryAfter)).toBeGreaterThan(1)
    const budget = await call(a.url, 'budget')
    expect(budget.ext).toMatchObject({ code: 'BUDGET_EXHAUSTED', policy: 'budget', remaining: 0 })
    // The units leave the window with the day-long bucket they went into, 30 days on.
    expect(budget.ext!.retryAfterSeconds).toBeGreaterThan(29 * 86_400)
    expect(Number(budget.retryAfter)).toBe(budget.ext!.retryAfterSeconds)
    // Only the slot refuses: the concurrency answer, as before.
    const plain = await call(a.url, 'plain')
    expect(plain.ext).toMatchObject({ code: 'RATE_LIMITED', policy: 'concurrent', retryAfterSeconds: 1 })
    expect(await snapshot()).toEqual(before)
    for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
    expect((await Promise.all(first)).map((x) => x.status)).toEqual([200, 200, 200])
  } finally {
    for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
    client.disconnect()
    await Promise.all([a.close(), b.close()])
  }
})

it('falls back to the figures this proxy last had when Redis does not answer in the budget (sweep 30a)', async () => {
  const p = await startTestProxy({
    redis: { url: redis.url, keyPrefix: `sweep30a-late-${Date.now()}:` },
    tenants: { day: {} },
    quotas: { redis: { budgetMs: 50 }, tenants: { day: { graphql: { maxConcurrent: 1, limitPerDay: 1 } } } },
    routes: [{ name: 'api', upstream: holding.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
  })
  try {
    const first = call(p.url, 'day')
    await waitUntil(() => held.length === 1, 5_000, 'the held request')
    redis.pause()
    try {
      // The day's one unit is this proxy's own: its table names it while Redis is silent.
      const day = await call(p.url, 'day')
      expect(day.ext).toMatchObject({ code: 'QUOTA_EXCEEDED', policy: 'daily', remaining: 0 })
    } finally {
      redis.resume()
    }
    for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
    expect((await first).status).toBe(200)
  } finally {
    for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
    await p.close()
  }
})
