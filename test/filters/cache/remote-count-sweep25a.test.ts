// Cache sweep 25a: igw_cache_invalidations_total{origin="remote"} counts another proxy's message
// once per proxy process, as a local mutation counts once. Every cache route of every worker
// thread hears each message: one message counted 3 on one worker with three cache routes (12
// with four workers). Real proxy, real redis-server; the claim between threads on a real
// SharedArrayBuffer.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CACHE_SHARED_BYTES, CacheShared } from '../../../filters/cache/shared-state.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { waitUntil } from '../../helpers/wait.ts'

const PREFIX = 'remotecount:'
let redis: TestRedis
let backend: RawBackend
let proxy: TestProxy
let pub: Redis

beforeAll(async () => {
  redis = await startRedis()
  backend = await startRawBackend((req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"data":{"ok":true}}')
    })
  })
  const cache = [{ name: 'cache', requireTenant: false, redis: { l2: false } }] as never
  proxy = await startTestProxy({
    workers: 1,
    redis: { url: redis.url, keyPrefix: PREFIX },
    routes: [
      { name: 'a', match: { pathPrefix: '/a' }, upstream: backend.url, filters: cache },
      { name: 'b', match: { pathPrefix: '/b' }, upstream: backend.url, filters: cache },
      { name: 'c', match: { pathPrefix: '/' }, upstream: backend.url, filters: cache },
    ],
  })
  pub = new Redis(redis.url)
  const channel = `${PREFIX}cache:invalidate`
  await waitUntil(async () => ((await pub.pubsub('NUMSUB', channel)) as [string, number])[1] >= 1, 5_000, 'the subscriber')
})
afterAll(async () => {
  pub?.disconnect()
  await proxy?.close()
  await backend?.close()
  await redis?.close()
})

describe('remote invalidations are counted once per process', () => {
  it('one message from another proxy counts 1 on a worker with three cache routes', async () => {
    await pub.publish(`${PREFIX}cache:invalidate`, JSON.stringify({ o: 'another-proxy', t: ['Entity:1'] }))
    // One message reaches every route's handler in one synchronous dispatch: once it shows, all have run.
    let n = 0
    await waitUntil(async () => (n = metricSum(await proxy.metricsText(), 'igw_cache_invalidations_total', 'origin="remote"')) > 0, 5_000, 'the remote invalidation counted')
    expect(n).toBe(1)
    await pub.publish(`${PREFIX}cache:invalidate`, JSON.stringify({ o: 'another-proxy', t: ['Entity:1'] }))
    await waitUntil(async () => (n = metricSum(await proxy.metricsText(), 'igw_cache_invalidations_total', 'origin="remote"')) > 1, 5_000, 'the second message counted')
    expect(n).toBe(2)
  })

  it('of the worker threads sharing the process state, one counts; another takes over when it exits', () => {
    const sab = new SharedArrayBuffer(CACHE_SHARED_BYTES)
    const w0 = new CacheShared(sab, 0)
    const w1 = new CacheShared(sab, 1)
    expect([w1.countsRemote(), w0.countsRemote(), w1.countsRemote()]).toEqual([true, false, true])
    w0.releaseWorker(0) // another thread's exit leaves the claim alone
    expect(w0.countsRemote()).toBe(false)
    w0.releaseWorker(1)
    expect([w0.countsRemote(), w1.countsRemote()]).toEqual([true, false])
  })
})
