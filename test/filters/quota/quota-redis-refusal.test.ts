// Redis that answers but refuses (here: out of memory under noeviction) is an outage for the
// quota filter like a dead one — and the log says what Redis said, so the operator does not
// chase a network problem.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

describe('quota with a Redis that refuses writes', () => {
  let redis: TestRedis
  let backend: RawBackend
  let proxy: TestProxy
  let admin: Redis

  beforeAll(async () => {
    redis = await startRedis()
    admin = new Redis(redis.url)
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"ok":true}}'))
    })
    proxy = await startTestProxy({
      redis: { url: redis.url, keyPrefix: 'refuse:' },
      tenants: { acme: {} },
      quotas: { redis: { budgetMs: 1000, onOutage: 'fail-closed', breakerFailures: 2, breakerAfterMs: 0 }, tenants: { acme: { graphql: { rate: 100, burst: 100 } } } },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
  })
  afterAll(async () => {
    admin?.disconnect()
    await proxy?.close()
    await backend?.close()
    await redis?.close()
  })

  const call = async () => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ ok }"}' })
    const body = (await r.body.json()) as { errors?: { extensions: { code: string } }[] }
    return { status: r.statusCode, code: body.errors?.[0]?.extensions.code }
  }

  it('fail-closed answers 503 OVERLOADED, counts the errors, and the log names the OOM refusal', async () => {
    expect(await call()).toEqual({ status: 200, code: undefined })
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'maxmemory', '1')
    try {
      for (let i = 0; i < 4; i++) expect(await call()).toEqual({ status: 503, code: 'OVERLOADED' })
      expect(metricSum(await proxy.metricsText(), 'igw_quota_redis_errors_total', 'error="error"')).toBeGreaterThanOrEqual(2)
      await waitUntil(() => proxy.logs.find('redis unreachable: quota decisions follow the outage policy').length > 0, 2_000, 'the breaker log line')
      const line = proxy.logs.find('redis unreachable: quota decisions follow the outage policy')[0]!
      expect(String(line.redisError)).toMatch(/^OOM command not allowed/)
    } finally {
      await admin.config('SET', 'maxmemory', '0')
    }
    await waitUntil(async () => (await call()).status === 200, 5_000, 'decisions shared again')
  })
})
