// Pushing outage usage to Redis is an addition the script cannot tell from a repeat. When the
// connection dropped after Redis ran the push but before its reply arrived, the proxy took it as
// failed, gave the units back to the table and pushed them again at the next heartbeat: counted
// twice, the tenant refused early for the rest of the day. And a tenant whose budget key was
// damaged (wrong type) had its day's usage raised at every heartbeat: the script wrote the kind
// hash before failing on the budget key. Each push now carries a token Redis applies once, sent
// again unchanged, and the script reads both keys before writing anything.
import { connect, createServer, type Server, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber, quotaKeys } from '../../../config/quota-usage.ts'
import { decideLocal, Verdict } from '../../../filters/quota/local-limiter.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { RedisQuotaStore } from '../../../filters/quota/redis-store.ts'
import { resolveRule } from '../../../filters/quota/rules.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { SharedRedis } from '../../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'

const PREFIX = 'sw23v:'
const config = validateConfig({
  routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
  tenants: { acme: {}, globex: {} },
  quotas: { defaults: { graphql: { limitPerDay: 1000 }, budget: { units: 100_000, window: '1d', bucket: '1h' } } },
})

/**
 * A relay to Redis that, once armed, cuts the connection when the next integer reply comes back
 * (Redis ran the command; the client never hears of it).
 */
interface ReplyCutter {
  port: number
  armed: boolean
  close(): Promise<void>
}

async function startReplyCutter(target: number): Promise<ReplyCutter> {
  const sockets = new Set<Socket>()
  const state: ReplyCutter = { port: 0, armed: false, close: async () => undefined }
  const server: Server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (d: Buffer) => void upstream.write(d))
    upstream.on('data', (d: Buffer) => {
      if (state.armed && d[0] === 0x3a /* ':' */) {
        state.armed = false
        client.destroy()
        upstream.destroy()
        return
      }
      client.write(d)
    })
    for (const s of [client, upstream]) {
      s.on('error', () => undefined)
      s.on('close', () => {
        sockets.delete(s)
        client.destroy()
        upstream.destroy()
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as { port: number }).port
  state.close = async () => {
    for (const s of sockets) s.destroy()
    await new Promise((resolve) => server.close(resolve))
  }
  return state
}

let redis: TestRedis
let cutter: ReplyCutter
let provider: SharedRedis
let admin: Redis
let store: RedisQuotaStore
beforeAll(async () => {
  redis = await startRedis()
  cutter = await startReplyCutter(redis.port)
  const registry = new Registry()
  provider = new SharedRedis(`redis://127.0.0.1:${cutter.port}`, PREFIX, pino({ level: 'silent' }), {
    up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
    reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
  })
  store = new RedisQuotaStore(provider, { budgetMs: 1000, breakerFailures: 3, breakerOpenMs: 200, breakerAfterMs: 0 }, { failure: () => undefined, breakerChanged: () => undefined, recovered: () => undefined })
  expect(await store.warmUp(2_000)).toBe(true)
  admin = new Redis(redis.url)
})
afterAll(async () => {
  admin?.disconnect()
  await provider?.close()
  await cutter?.close()
  await redis?.close()
})

/** Admit `n` units of `tenant` locally (Redis out): owed to Redis. */
function outage(rt: ReturnType<typeof quotaRuntime>, tenant: string, n: number): void {
  const rule = resolveRule(config.quotas, tenant, 'graphql', undefined, 'UTC', false)
  const slot = rt.table.slotOf(tenant)
  const v = new Verdict()
  for (let i = 0; i < n; i++) expect(decideLocal(rt.table, slot, rule, 1, Date.now(), localDayNumber('UTC', Date.now()), true, 1, v).allowed).toBe(true)
}

describe('reconciliation is applied once (sweep 23v)', () => {
  it('a push whose reply was lost after Redis ran it is not counted again when sent again', async () => {
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    outage(rt, 'acme', 7)
    cutter.armed = true
    await rt.reconcile(store) // Redis runs it; the connection drops before the reply
    expect(cutter.armed).toBe(false)
    const kindKey = quotaKeys.kind(PREFIX, 'acme', 'graphql')
    expect(Number(await admin.hget(kindKey, 'u'))).toBe(7)
    await expect.poll(() => provider.client().status, { timeout: 5_000 }).toBe('ready')
    await rt.reconcile(store) // the next heartbeat's: sends the unanswered push again
    await rt.reconcile(store)
    expect(Number(await admin.hget(kindKey, 'u'))).toBe(7)
    expect(Number(await admin.hget(quotaKeys.budget(PREFIX, 'acme'), 'tot'))).toBe(7)
  })

  it('a damaged budget key does not raise the day\'s usage at every push; the units land once it is fixed', async () => {
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    const budgetKey = quotaKeys.budget(PREFIX, 'globex')
    await admin.set(budgetKey, 'not a hash')
    outage(rt, 'globex', 5)
    for (let i = 0; i < 3; i++) await rt.reconcile(store) // refused (WRONGTYPE) each time
    const kindKey = quotaKeys.kind(PREFIX, 'globex', 'graphql')
    expect(Number(await admin.hget(kindKey, 'u'))).toBe(0)
    await admin.del(budgetKey)
    await rt.reconcile(store)
    expect(Number(await admin.hget(kindKey, 'u'))).toBe(5)
    expect(Number(await admin.hget(budgetKey, 'tot'))).toBe(5)
  })

  it('the same token twice is applied once', async () => {
    const day = localDayNumber('UTC', Date.now())
    const shape = { capacity: 0, bucketMs: 3_600_000, buckets: 24 }
    expect(await store.reconcile('initech', 'graphql', 4, day, shape, 'tok-1')).toBe(true)
    expect(await store.reconcile('initech', 'graphql', 4, day, shape, 'tok-1')).toBe(true)
    expect(await store.reconcile('initech', 'graphql', 2, day, shape, 'tok-2')).toBe(true)
    expect(Number(await admin.hget(quotaKeys.kind(PREFIX, 'initech', 'graphql'), 'u'))).toBe(6)
    expect(Number(await admin.hget(quotaKeys.budget(PREFIX, 'initech'), 'tot'))).toBe(6)
    const ttl = await admin.pttl(`${PREFIX}q:{initech}:rc:tok-1`)
    expect(ttl).toBeGreaterThan(0)
  })
})
