// usedToday: with a shared Redis in the document, the quota filter's own counter there is the
// authority (config/quota-usage.ts); when Redis is down, the proxies' usage reports answer.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { localDayNumber, quotaKeys } from '../../config/quota-usage.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'

let redis: TestRedis
let cp: TestControlPlane
beforeAll(async () => {
  redis = await startRedis()
  cp = await startTestControlPlane()
})
afterAll(async () => {
  await cp?.close()
  await redis?.close()
})

describe('usedToday', () => {
  it('comes from the quota counters in Redis when the document has one, from usage reports otherwise', async () => {
    const head = (await (await cp.api('/v1/config')).json()) as { document: Record<string, unknown> }
    expect((await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify({ ...head.document, redis: { url: redis.url, keyPrefix: 'igwtest:' } }) })).status).toBe(200)
    await cp.api('/v1/tenants/globex/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 500 }) })
    const r = new Redis(redis.url)
    // globex lives in America/New_York: the counter of its own calendar day counts.
    await r.hset(quotaKeys.kind('igwtest:', 'globex', 'graphql'), 'd', String(localDayNumber('America/New_York', Date.now())), 'u', '42')
    const get = async () => ((await (await cp.api('/v1/tenants/globex/quotas')).json()) as { items: { usedToday: number }[] }).items[0]!.usedToday
    expect(await get()).toBe(42)
    const gql = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: '{ quotas(tenant: "globex") { kind usedToday } }' }) })
    expect(await gql.json()).toEqual({ data: { quotas: [{ kind: 'graphql', usedToday: 42 }] } })
    // Yesterday's counter is not today's use.
    await r.hset(quotaKeys.kind('igwtest:', 'globex', 'graphql'), 'd', String(localDayNumber('America/New_York', Date.now()) - 1))
    expect(await get()).toBe(0)
    r.disconnect()
    // Redis gone: the usage reports answer (7 units reported), and the read does not hang.
    const proxy = await cp.token({ roles: ['proxy'] })
    await cp.api('/v1/usage', { method: 'POST', token: proxy, body: JSON.stringify({ proxyId: 'p', bootId: 'b', seq: 1, at: new Date().toISOString(), tenants: { globex: { requests: 7, byKind: { graphql: 7 } } } }) })
    await redis.stop()
    const t0 = Date.now()
    expect(await get()).toBe(7)
    expect(Date.now() - t0).toBeLessThan(2_000)
  })
})
