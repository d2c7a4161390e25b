// A reload that moves the replay log to another Redis (a new redis.url, say the old one is being
// decommissioned) retires the old connection: the streams opened before it keep writing their
// epoch there while they live, and then it must go. It used to stay open until the process
// ended (one more per such reload), report its own outages in igw_subscription_redis_up as if
// the replay log's Redis were down, and park events for a Redis the config no longer names —
// held in memory, then written there whenever it came back.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const PREFIX = 'igwretire:'

/** Connections to this Redis other than the inspecting one itself. */
async function otherClients(r: Redis): Promise<number> {
  const me = await r.client('ID')
  const list = String(await r.client('LIST'))
  return list.split('\n').filter((l) => l.startsWith('id=') && !l.startsWith(`id=${me} `)).length
}

describe('subscription hub: a replay-log Redis a reload replaced', () => {
  let a: TestRedis
  let b: TestRedis
  let be: SubscriptionBackend
  let p: TestProxy
  let url: string
  const doc = (redisUrl: string): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
    log: { level: 'info', access: { enabled: false } },
    redis: { url: redisUrl, keyPrefix: PREFIX },
    subscriptions: { cursorKey: 'a-cursor-signing-key-for-the-redis-retire-test', upstream: { lingerMs: 0 }, replay: { store: 'redis' } },
    routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
  })
  const redisUp = async () => metricSum(await p.metricsText(), 'igw_subscription_redis_up')

  beforeAll(async () => {
    a = await startRedis()
    b = await startRedis()
    be = await startSubscriptionBackend()
    p = await startTestProxy(doc(a.url))
    url = `ws://127.0.0.1:${p.port}/graphql`
  })
  afterAll(async () => {
    await p?.close()
    await be?.close()
    await a?.close()
    await b?.close()
  })

  it('is closed once its last stream ends, never reports the current Redis down, and parks nothing for it', async () => {
    const ra = new Redis(a.url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 })
    ra.on('error', () => undefined)
    const rb = new Redis(b.url)
    const c = new GqlClient(url, {})
    try {
      const baseA = await otherClients(ra)
      const old = c.subscribe(EVENTS('old'))
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'old'))
      be.publish('old')
      await old.received.wait((r) => r.events.length === 1)
      await waitUntil(async () => (await ra.keys(`${PREFIX}subs:*`)).length === 1, 5_000, 'the old stream logged in redis A')
      expect(await otherClients(ra)).toBe(baseA + 1)

      // Reload: the replay log moves to Redis B. The next stream writes there; the old one goes on in A.
      expect(await p.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...doc(b.url) }))).toMatchObject({ ok: true })
      const fresh = c.subscribe(EVENTS('new'))
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'new'))
      be.publish('new')
      await fresh.received.wait((r) => r.events.length === 1)
      await waitUntil(async () => (await rb.keys(`${PREFIX}subs:*`)).length === 1, 5_000, 'the new stream logged in redis B')
      be.publish('old')
      await old.received.wait((r) => r.events.length === 2)
      const [oldKey] = await ra.keys(`${PREFIX}subs:*`)
      await waitUntil(async () => (await ra.xlen(oldKey!)) === 2, 5_000, 'the old stream still logging its epoch in A')
      await expect.poll(redisUp, { timeout: 5_000 }).toBe(1)

      // Redis A dies while the old stream still lives: the replay log's Redis (B) is up, and says so.
      await a.stop()
      be.publish('old')
      await old.received.wait((r) => r.events.length === 3)
      await sleep(1_000)
      expect(await redisUp()).toBe(1)

      // A comes back (empty): the event published while it was away is not parked for it and written late.
      await a.start()
      await waitUntil(async () => ra.status === 'ready' && (await ra.ping().then(() => true, () => false)), 5_000, 'redis A back')
      await sleep(1_000)
      expect(await ra.keys(`${PREFIX}subs:*`)).toEqual([])

      // The old stream's last client leaves (lingerMs 0: the stream ends): the retired connection closes.
      old.stop()
      await waitUntil(async () => (await otherClients(ra)) === baseA, 5_000, 'the retired connection to redis A to close')
      await sleep(500)
      expect(await otherClients(ra)).toBe(baseA)
      expect(await redisUp()).toBe(1)
      // the current one is untouched
      be.publish('new')
      await fresh.received.wait((r) => r.events.length === 2)
      await waitUntil(async () => (await rb.xlen((await rb.keys(`${PREFIX}subs:*`))[0]!)) === 2, 5_000, 'redis B still logging')
    } finally {
      await c.dispose()
      ra.disconnect()
      rb.disconnect()
    }
  })
})
