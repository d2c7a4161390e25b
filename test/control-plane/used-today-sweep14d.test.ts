// usedToday with a shared Redis: the quota filter's own counter there is the authority, from the
// very first read after the control plane starts (or after the document names another Redis).
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

describe('usedToday from Redis (sweep 14d)', () => {
  it('the first read after the document names a Redis answers from Redis, not from the reports', async () => {
    const r = new Redis(redis.url)
    try {
      const day = localDayNumber('America/New_York', Date.now())
      await r.hset(quotaKeys.kind('igwfirst:', 'globex', 'graphql'), 'd', String(day), 'u', '42')
      const head = (await (await cp.api('/v1/config')).json()) as { document: Record<string, unknown> }
      const doc = head.document as { quotas?: { tenants?: Record<string, unknown> } }
      const quotas = { ...(doc.quotas ?? {}), tenants: { ...(doc.quotas?.tenants ?? {}), globex: { graphql: { limitPerDay: 500 } } } }
      // One PUT sets both, so nothing reads usedToday before the GET below.
      expect((await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify({ ...head.document, quotas, redis: { url: redis.url, keyPrefix: 'igwfirst:' } }) })).status).toBe(200)
      const res = await cp.api('/v1/tenants/globex/quotas')
      expect(res.status).toBe(200)
      const items = ((await res.json()) as { items: { kind: string; usedToday: number }[] }).items
      expect(items.find((i) => i.kind === 'graphql')?.usedToday).toBe(42)
    } finally {
      r.disconnect()
    }
  })
})
