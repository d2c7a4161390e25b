// A mutation's purge of L2 that Redis answers too late (past invalidation.redisTimeoutMs) is kept
// for a replay ~1 s later. The replay ran even when the late purge had landed, and purged again
// the entries refilled in between: one more upstream miss per entity for every timed-out purge.
// Each purge now leaves a short-lived token in Redis and a replay whose purges all ran is
// skipped, in the same script; one that never reached Redis is still replayed.
// Real igw, real redis-server (CLIENT PAUSE WRITE for a slow Redis, a loopback relay that drops
// one direction for a lost command or reply), the demo graphql backend, undici.
import { connect, createServer, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, it, type ExpectStatic } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

/** Relay to Redis that can swallow the commands or the replies of its connections, and cut them. */
async function startDropRelay(targetPort: number) {
  const sockets = new Set<Socket>()
  const drop = { requests: false, replies: false }
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (d: Buffer) => void (drop.requests || upstream.write(d)))
    upstream.on('data', (d: Buffer) => void (drop.replies || client.write(d)))
    for (const [s, other] of [[client, upstream], [upstream, client]] as const) {
      s.on('error', () => undefined)
      s.on('close', () => {
        sockets.delete(s)
        other.destroy()
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `redis://127.0.0.1:${(server.address() as { port: number }).port}`,
    drop,
    cutAll: () => {
      for (const s of sockets) s.destroy()
    },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

async function gql(url: string, query: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
  const json = (await res.body.json()) as { data?: Record<string, { name?: string } | null> }
  return { cache: res.headers['x-cache'] as string, name: Object.values(json.data ?? {})[0]?.name }
}

interface Setup {
  url: string
  prefix: string
  relay?: Awaited<ReturnType<typeof startDropRelay>>
}

describe('cache: a timed-out purge is replayed only if it did not run', () => {
  let backend: DemoBackend
  // The slow-Redis case pauses its own server: CLIENT PAUSE would hold the other cases' writes.
  const redis: TestRedis[] = []
  const admins: Redis[] = []
  const relays: Awaited<ReturnType<typeof startDropRelay>>[] = []
  const proxies: TestProxy[] = []
  const setups: Record<'late' | 'lost' | 'never', Setup & { admin: Redis }> = {} as never

  beforeAll(async () => {
    backend = await startDemoBackend()
    const [paused, shared] = await Promise.all([startRedis(), startRedis()])
    redis.push(paused!, shared!)
    const start = async (name: keyof typeof setups, server: TestRedis, relayed: boolean) => {
      const relay = relayed ? await startDropRelay(server.port) : undefined
      if (relay) relays.push(relay)
      const admin = new Redis(server.url)
      admins.push(admin)
      const prefix = `${name}30c:`
      const proxy = await startTestProxy({
        redis: { url: relay?.url ?? server.url, keyPrefix: prefix },
        tenants: { acme: {} },
        routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300, redis: { l2: true, timeoutMs: 2_000 }, invalidation: { redisTimeoutMs: 100 } }] as never }],
      })
      proxies.push(proxy)
      setups[name] = { url: proxy.url, prefix, relay, admin }
    }
    await Promise.all([start('late', paused!, false), start('lost', shared!, true), start('never', shared!, true)])
  })
  afterAll(async () => {
    await Promise.all(admins.map((a) => a.client('UNPAUSE').catch(() => undefined)))
    for (const a of admins) a.disconnect()
    await Promise.all(proxies.map((p) => p.close()))
    await Promise.all(relays.map((r) => r.close()))
    await backend?.close()
    await Promise.all(redis.map((r) => r.close()))
  })

  const seq = async (s: Setup & { admin: Redis }) => Number((await s.admin.get(`${s.prefix}cache:seq`)) ?? 0)
  /** Whether L2 holds an entry of entity `id` (the demo backend's entities are "1".."50"). */
  async function inL2(s: Setup & { admin: Redis }, id: string): Promise<boolean> {
    const keys = await s.admin.keys(`${s.prefix}cache:e:*`)
    const values = keys.length ? await s.admin.mget(...keys) : []
    return values.some((v) => v?.includes(`"id":"${id}"`))
  }
  const entity = (s: Setup, id: string) => gql(s.url, `{ entity(id: "${id}") { id name } }`)

  let nextProbe = 10
  /** Queries entity `id` until L2 has it: the first miss after the proxy's Redis connection is up. */
  async function cachedInL2(s: Setup & { admin: Redis }, id: string, expect: ExpectStatic): Promise<void> {
    for (let tries = 0; ; tries++) {
      expect(tries).toBeLessThan(20)
      const probe = nextProbe++
      await entity(s, String(probe))
      if (await waitUntil(() => inL2(s, String(probe)), 500).then(() => true, () => false)) break
    }
    expect((await entity(s, id)).cache).toBe('MISS')
    await waitUntil(() => inL2(s, id), 5_000, 'the L2 entry written')
  }

  /**
   * No second purge within the replay's window (~1 s after the purge timed out, at `answeredAt`):
   * the entity refilled after the purge is still in L2 and answered from the cache.
   */
  async function noSecondPurge(s: Setup & { admin: Redis }, after: number, answeredAt: number, id: string, expect: ExpectStatic): Promise<void> {
    await waitUntil(async () => (await seq(s)) > after || Date.now() > answeredAt + 1_500, 5_000)
    expect(await seq(s)).toBe(after)
    expect(await inL2(s, id)).toBe(true)
    expect((await entity(s, id)).cache).toBe('HIT')
  }

  const mutate = async (s: Setup, id: string, name: string) => (await gql(s.url, `mutation { updateEntity(id: "${id}", name: "${name}") { id name } }`)).name

  it.concurrent('a purge whose reply came late is not replayed', async ({ expect }) => {
    const s = setups.late
    await cachedInL2(s, '1', expect)
    const s0 = await seq(s)
    // Writes (the purge script) wait 0.4 s, well past the 100 ms budget; reads are still answered.
    await s.admin.client('PAUSE', 400, 'WRITE')
    expect(await mutate(s, '1', 'late')).toBe('late')
    const answeredAt = Date.now()
    await waitUntil(async () => (await seq(s)) > s0, 5_000, 'the late purge')
    const s1 = await seq(s)
    expect(await entity(s, '1')).toEqual({ cache: 'MISS', name: 'late' })
    await waitUntil(() => inL2(s, '1'), 5_000, 'the refilled L2 entry')
    // Before the fix the replay purged it again here: the next query was a second MISS.
    await noSecondPurge(s, s1, answeredAt, '1', expect)
  })

  it.concurrent('a purge that ran but whose reply was lost is not replayed', async ({ expect }) => {
    const s = setups.lost
    await cachedInL2(s, '2', expect)
    // The purge runs in Redis; its reply never reaches the proxy, whose connections are then cut.
    const s0 = await seq(s)
    s.relay!.drop.replies = true
    expect(await mutate(s, '2', 'lost')).toBe('lost')
    const answeredAt = Date.now()
    await waitUntil(async () => (await seq(s)) > s0, 5_000, 'the purge ran')
    s.relay!.cutAll()
    s.relay!.drop.replies = false
    const s1 = await seq(s)
    // The refill, once the proxy has reconnected (within the replay's delay).
    await cachedInL2(s, '2', expect)
    expect((await entity(s, '2')).name).toBe('lost')
    await noSecondPurge(s, s1, answeredAt, '2', expect)
  })

  it.concurrent('a purge that never reached Redis is replayed', async ({ expect }) => {
    const s = setups.never
    await cachedInL2(s, '3', expect)
    const s0 = await seq(s)
    s.relay!.drop.requests = true
    expect(await mutate(s, '3', 'never')).toBe('never')
    s.relay!.cutAll()
    s.relay!.drop.requests = false
    expect(await seq(s)).toBe(s0)
    await waitUntil(async () => (await seq(s)) > s0, 5_000, 'the replayed purge')
    expect(await inL2(s, '3')).toBe(false)
    await expect.poll(async () => (await entity(s, '3')).name, { timeout: 5_000, interval: 50 }).toBe('never')
  })
})
