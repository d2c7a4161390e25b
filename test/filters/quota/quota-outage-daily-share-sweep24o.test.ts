// Under `local-share` during a Redis outage, a tenant that has spent only this proxy's share of its
// daily quota (Redis's last word plus this proxy's own use still leaves room) is told to retry when
// Redis may answer again — not at the tenant's midnight (Retry-After of up to a day, with quota
// left) — and that retry is admitted once Redis is back. Real proxy, real redis-server, real client.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { registerLivePeers, startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'
import { parseList } from './structured-fields.ts'

type Reply = { status: number; code?: string; message?: string; retry?: number; ratelimit?: string }

async function gql(url: string, tenant: string): Promise<Reply> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query: '{ hello }' }) })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  const e = (JSON.parse(text) as { errors: { message: string; extensions: Record<string, unknown> }[] }).errors[0]!
  return { status: res.statusCode, code: e.extensions.code as string, message: e.message, retry: Number(res.headers['retry-after']), ratelimit: res.headers['ratelimit'] as string | undefined }
}

describe('local-share: a spent share of the daily quota (sweep 24o)', () => {
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

  it('is told to retry when Redis may answer (not at midnight), and that retry is admitted once it does; a day really used up still waits for midnight', async () => {
    const prefix = 'sweep24odaily:'
    // One more proxy is live: this proxy's share is a half.
    await registerLivePeers(redis.url, prefix, 'peer-a')
    const p = await startTestProxy({
      workers: 1,
      log: { level: 'error', access: { enabled: false } } as never,
      redis: { url: redis.url, keyPrefix: prefix },
      tenants: { daily: {}, done: {} },
      quotas: {
        redis: { onOutage: 'local-share', budgetMs: 200, breakerOpenMs: 1_000, heartbeatMs: 60_000 },
        tenants: { daily: { graphql: { limitPerDay: 10 } }, done: { graphql: { limitPerDay: 2 } } },
      } as never,
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }] as never,
    })
    try {
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_live_proxies') === 2, 10_000, 'two live proxies')
      // `done` uses up its whole day while Redis decides.
      for (let i = 0; i < 2; i++) expect((await gql(p.url, 'done')).status).toBe(200)
      await redis.stop()

      // This proxy's half of the 10 units: 5 admitted, the 6th refused — Redis's last word (0 used)
      // would admit it. It was told "retry at midnight UTC" (hours).
      for (let i = 0; i < 5; i++) expect((await gql(p.url, 'daily')).status).toBe(200)
      const over = await gql(p.url, 'daily')
      expect(over.status).toBe(429)
      expect(over.code).toBe('QUOTA_EXCEEDED')
      expect(over.message).toMatch(/share of the daily graphql quota of 10 units/)
      expect(over.retry).toBeGreaterThanOrEqual(1)
      expect(over.retry).toBeLessThanOrEqual(2) // the breaker's next probe (breakerOpenMs 1 s)
      expect(parseList(over.ratelimit!).map((x) => [x.value, x.params.get('t')])).toEqual([['daily', over.retry]])

      // A day used up by Redis's own figures is used up: the tenant's midnight.
      const spent = await gql(p.url, 'done')
      expect(spent.code).toBe('QUOTA_EXCEEDED')
      expect(spent.message).toMatch(/resets at midnight/)
      const toMidnight = Math.ceil((86_400_000 - (Date.now() % 86_400_000)) / 1000)
      expect(Math.abs(spent.retry! - toMidnight)).toBeLessThanOrEqual(2)

      // Redis is back: the refused request, retried as told, gets through.
      await redis.start()
      let ok = false
      for (let i = 0; i < 40 && !ok; i++) {
        const r = await gql(p.url, 'daily')
        ok = r.status === 200
        if (!ok) {
          expect(r.retry).toBeLessThanOrEqual(2)
          await sleep(100)
        }
      }
      expect(ok).toBe(true)
    } finally {
      await p.close()
    }
  })
})
