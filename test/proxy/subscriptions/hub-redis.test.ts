// The replay log in Redis Streams: a gateway restarted (the real CLI, as a child process) hands a
// reconnecting client the events its predecessor logged after the client's cursor, then an epoch
// gap (the new process runs its own upstream subscription), then live events. The cursor key
// comes from the environment; a process with another key refuses the cursor as invalid.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnIgw, writeTempConfig, type SpawnedIgw } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const KEY = 'a-cursor-signing-key-for-the-redis-restart-test'

describe('subscription hub: replay from Redis across a gateway restart', () => {
  let redis: TestRedis
  let be: SubscriptionBackend
  let path: string
  const procs: SpawnedIgw[] = []
  const clients: GqlClient[] = []

  const igw = async (key = KEY) => {
    const p = await spawnIgw(['proxy', '--config', path], { IGW_CURSOR_KEY: key })
    procs.push(p)
    return p
  }
  const client = (p: SpawnedIgw) => {
    const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`, { 'x-tenant-id': 'acme' })
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    redis = await startRedis()
    be = await startSubscriptionBackend()
    path = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 2,
      log: { level: 'warn', access: { enabled: false } },
      redis: { url: redis.url, keyPrefix: 'igwtest:' },
      tenants: { acme: {} },
      subscriptions: { cursorKey: '${IGW_CURSOR_KEY}' },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await Promise.all(procs.map((p) => p.stop()))
    await be?.close()
    await redis?.close()
  })

  it('clients reconnecting with cursors to a restarted gateway resume from the Redis log', async () => {
    const first = await igw()
    const c1 = client(first)
    const a = c1.subscribe(EVENTS('redis'))
    await waitUntil(() => be.subscribes.length === 1)
    for (let i = 0; i < 3; i++) be.publish('redis')
    await a.received.wait((r) => r.events.length === 3)
    const cursor = a.received.lastCursor!
    await c1.dispose()
    // the client is away; its stream lingers in the first gateway and logs 4..6 to Redis
    for (let i = 0; i < 3; i++) be.publish('redis')
    const r = new Redis(redis.url)
    try {
      await new Promise((res) => setTimeout(res, 200))
      const keys = await r.keys('igwtest:subs:*')
      expect(keys).toHaveLength(1)
      expect(await r.xlen(keys[0]!)).toBe(6)
      expect(await r.pttl(keys[0]!)).toBeGreaterThan(0)
    } finally {
      r.disconnect()
    }
    expect(await first.stop()).toBe(0)
    be.publish('redis') // 7: nobody is subscribed upstream; this one is really gone

    const second = await igw()
    const back = client(second).subscribe(EVENTS('redis'), { cursor })
    await back.received.wait((x) => x.events.length === 3)
    await waitUntil(() => be.subscribes.length === 2)
    await back.received.wait((x) => x.gaps.length === 1)
    be.publish('redis') // 8
    await back.received.wait((x) => x.events.length === 4)
    expect(back.received.payloads.map((p) => (p.extensions?.gap ? p.extensions.gap.reason : p.data!.events!.seq))).toEqual([4, 5, 6, 'epoch', 8])
    const gap = back.received.gaps[0]!
    expect(gap.from).toBe(back.received.events[2]!.extensions!.cursor) // after event 6
    // a cursor re-sent from Redis is as good as the original: resuming from 4's gives 5, 6
    const again = client(second).subscribe(EVENTS('redis'), { cursor: back.received.events[0]!.extensions!.cursor })
    await again.received.wait((x) => x.events.length === 2 && x.gaps.length === 1)
    expect(again.received.seqs).toEqual([5, 6])

    // a gateway signing with another key cannot honour these cursors: an invalid gap, then live
    await second.stop()
    const third = await igw('some-other-key-of-at-least-32-characters!!')
    const stranger = client(third).subscribe(EVENTS('redis'), { cursor })
    await stranger.received.wait((x) => x.gaps.length === 1)
    expect(stranger.received.gaps[0]!.reason).toBe('invalid')
    expect(stranger.received.events).toEqual([])
  })
})
