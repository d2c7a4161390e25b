// A budget threshold crossed by a request whose Redis reply came after quotas.redis.budgetMs: the
// script had set its "fired" marker in Redis, the late reply was only used to square the local
// counts, and no proxy sent the event — the marker kept every proxy from sending it for the rest
// of the window. Redis is held back for real (CLIENT PAUSE WRITE) past the budget, then let go.
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep } from '../../helpers/wait.ts'

let redis: TestRedis
let backend: DemoBackend
let hook: RawBackend
const received: { tenant: string; threshold: number }[] = []

beforeAll(async () => {
  redis = await startRedis()
  backend = await startDemoBackend()
  hook = await startRawBackend((req, res) => {
    let d = ''
    req.on('data', (c: Buffer) => (d += c))
    req.on('end', () => {
      received.push(JSON.parse(d) as { tenant: string; threshold: number })
      res.writeHead(200).end()
    })
  })
})
afterAll(async () => {
  await hook?.close()
  await backend?.close()
  await redis?.close()
})

describe('a budget threshold crossed on a late Redis reply', () => {
  it('still sends its event, once', async () => {
    const p = await startTestProxy({
      workers: 1,
      redis: { url: redis.url, keyPrefix: 'late20:' },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
      tenants: { acme: {} },
      quotas: { defaults: { budget: { units: 2, window: '1d', bucket: '1h', thresholds: [0.5] } }, redis: { budgetMs: 50 }, events: { webhook: { url: hook.url } } },
    } as never)
    const admin = new Redis(redis.url)
    const send = async () => {
      const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ hello }' }) })
      await r.body.dump()
      return r.statusCode
    }
    try {
      // The script's write waits out the pause: its reply (threshold crossed) comes after budgetMs.
      await admin.call('CLIENT', 'PAUSE', '600', 'WRITE')
      expect(await send()).toBe(200) // decided by the outage policy (fail-open)
      await expect.poll(() => received.filter((e) => e.tenant === 'acme').map((e) => e.threshold), { timeout: 10_000 }).toEqual([0.5])
      // Redis holds the marker: the next requests do not fire it again.
      expect(await send()).toBe(200)
      await sleep(300)
      expect(received.filter((e) => e.tenant === 'acme').length).toBe(1)
    } finally {
      admin.disconnect()
      await p.close()
    }
  })
})
