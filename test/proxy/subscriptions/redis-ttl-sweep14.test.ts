// Sweep 14: every Redis Streams key of the replay log expires — also the key of an epoch that
// started (upstream reconnect) less than a second after the previous epoch's key was maintained.
// Failed on the code before the fix: that key was written by XADD alone and never expired.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

describe('subscription hub: Redis replay log keys across an epoch change', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let proxy: TestProxy
  let r: Redis

  beforeAll(async () => {
    redis = await startRedis()
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      redis: { url: redis.url, keyPrefix: 'igwttl:' },
      tenants: { acme: {} },
      subscriptions: { replay: { maxAgeMs: 60_000 }, upstream: { retryInitialMs: 20, retryMaxMs: 50 } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
    r = new Redis(redis.url, { maxRetriesPerRequest: 0 })
  })
  afterAll(async () => {
    r?.disconnect()
    await proxy?.close()
    await be?.close()
    await redis?.close()
  })

  it('the new epoch\'s key gets its TTL with its first event, however soon after the last maintenance', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    try {
      const s = c.subscribe(EVENTS('ttl'))
      await waitUntil(() => be.subscribes.filter((x) => x.channel === 'ttl').length === 1)
      be.publish('ttl') // first event: its epoch's key is created and maintained (TTL)
      await s.received.wait((x) => x.events.length === 1)
      // a quick backend restart: the stream resubscribes and starts a new epoch at once
      await be.stop()
      await be.start()
      await waitUntil(() => be.subscribes.filter((x) => x.channel === 'ttl').length === 2, 5_000, 'the resubscribe')
      be.publish('ttl')
      await s.received.wait((x) => x.events.length === 2 && x.gaps.length === 1)
      let keys: string[] = []
      await waitUntil(async () => (keys = await r.keys('igwttl:subs:*')).length === 2, 5_000, 'both epochs\' keys in Redis')
      // no more events: whatever maintenance the stream would do later is not what expires a key
      await new Promise((res) => setTimeout(res, 100))
      for (const k of keys) {
        const ttl = await r.pttl(k)
        expect(ttl, `PTTL of ${k}`).toBeGreaterThan(0)
        expect(ttl).toBeLessThanOrEqual(65_000)
      }
    } finally {
      await c.dispose()
    }
  })
})
