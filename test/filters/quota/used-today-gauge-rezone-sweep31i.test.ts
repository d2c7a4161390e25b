// A tenant's `timezone` changed by a reload carries the units of the old zone's running day into
// the new zone's day (enforced at once, and read so by the control plane's usedTodayFromRedis). The
// proxy's own figure, igw_quota_used_today, only looked for today's day number in the new zone: it
// said 0 until the tenant's next request — all the rest of the day for a tenant that had stopped at
// its limit — while its usage was in force. Local (shared memory, 2 worker threads) and Redis.
// Real proxy, real redis-server, real HTTP client, reloads through the supervisor.
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber, usedTodayFromRedis } from '../../../config/quota-usage.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, testProxyConfig } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

let be: RawBackend
let redis: TestRedis
beforeAll(async () => {
  ;[be, redis] = await Promise.all([startRawBackend(echoHandler), startRedis()])
})
afterAll(async () => {
  await Promise.all([be?.close(), redis?.close()])
})

async function call(url: string, tenant: string): Promise<{ status: number; ratelimit?: string }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  await res.body.dump()
  return { status: res.statusCode, ratelimit: res.headers.ratelimit as string | undefined }
}

function gauge(text: string, tenant: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`igw_quota_used_today{tenant="${tenant}",kind="graphql"}`))
  return line === undefined ? undefined : Number(line.split(' ').pop())
}

describe.each([
  ['local', false],
  ['redis', true],
])('igw_quota_used_today after a timezone change (%s)', (_path, withRedis) => {
  it('keeps the units carried from the old zone running day, before the next request', async () => {
    const now = Date.now()
    // A zone whose calendar day differs from UTC's now (UTC+14 from 10:00 UTC, UTC-11 before 11:00).
    const zone = localDayNumber('Pacific/Kiritimati', now) !== localDayNumber('UTC', now) ? 'Pacific/Kiritimati' : 'Pacific/Pago_Pago'
    const prefix = `sweep31i-tz-${now}:`
    const doc = (timezone: string) => ({
      workers: 2,
      ...(withRedis ? { redis: { url: redis.url, keyPrefix: prefix } } : {}),
      tenants: { moved: { timezone } },
      quotas: { tenants: { moved: { graphql: { limitPerDay: 10 } } } },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }] as never,
    })
    const p = await startTestProxy(doc('UTC'))
    const admin = withRedis ? new Redis(redis.url) : undefined
    try {
      for (let i = 0; i < 3; i++) expect((await call(p.url, 'moved')).status).toBe(200)
      expect(gauge(await p.metricsText(), 'moved')).toBe(3)
      expect((await p.applyConfig(testProxyConfig(doc(zone)))).ok).toBe(true)
      // The UTC day still runs: its 3 units are the tenant's today in the new zone too.
      if (admin !== undefined) expect(await usedTodayFromRedis(admin, prefix, 'moved', 'graphql', zone)).toBe(3)
      expect(gauge(await p.metricsText(), 'moved')).toBe(3)
      // As enforced: the next request finds 3 used (10 - 4 = 6 left).
      const next = await call(p.url, 'moved')
      expect(next.status).toBe(200)
      expect(next.ratelimit).toMatch(/^"daily";r=6;t=\d+$/)
      expect(gauge(await p.metricsText(), 'moved')).toBe(4)
    } finally {
      admin?.disconnect()
      await p.close()
    }
  }, 30_000)
})
