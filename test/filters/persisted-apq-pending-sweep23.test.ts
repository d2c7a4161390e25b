// APQ registrations made while Redis (re)connects wait in a bounded batch (MAX_PENDING, 1024) and
// are written once it is ready. The ones beyond the bound were kept in this worker only — and
// marked as written all the same, so when the client registered such a document again (after
// another proxy's "not found") it was skipped for up to half the TTL: Redis never got it. Real
// redis-server (stopped, then started), the real ApqStore and its shared Redis connection.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ApqStore } from '../../filters/persisted/apq-store.ts'
import { SharedRedis } from '../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

const PREFIX = 'apqp23:'
let redis: TestRedis
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.close()
})

it('a registration the pending batch had no room for is written when the client registers it again', async () => {
  await redis.stop()
  const registry = new Registry()
  const provider = new SharedRedis(redis.url, PREFIX, pino({ level: 'silent' }), {
    up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
    reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
  })
  const errors: string[] = []
  const store = new ApqStore(10_000, provider, 3600, 200, (op) => errors.push(op))
  const raw = new Redis(redis.url, { lazyConnect: true })
  try {
    const hash = (i: number) => i.toString(16).padStart(64, '0')
    const query = (i: number) => `{ f${i} }`
    // Redis is down: 1025 registrations, one more than the batch holds.
    for (let i = 0; i < 1025; i++) store.register(hash(i), query(i))
    await redis.start()
    await raw.connect()
    await waitUntil(async () => (await raw.exists(`${PREFIX}apq:${hash(1023)}`)) === 1, 8_000, 'the batch written once Redis is ready')
    expect(await raw.exists(`${PREFIX}apq:${hash(1024)}`)).toBe(0) // no room in the batch
    // The client registers it again (another proxy said "not found"): written now.
    store.register(hash(1024), query(1024))
    await waitUntil(async () => (await raw.get(`${PREFIX}apq:${hash(1024)}`)) === query(1024), 3_000, 'the re-registration written to Redis')
  } finally {
    raw.disconnect()
    await provider.close()
  }
})
