// A hard-capped budget that refuses a request because its cost does not fit in what is left fires
// the 100 % event (docs/quota.md: "the total may stop just short of 100 %"). It fired every
// threshold up to 100 % instead: one expensive operation refused at 60 % sent "80 %" with ratio 0.6,
// and its marker then silenced the real 80 % crossing for the rest of the window. Local (shared
// memory) and Redis (the decision script) alike. Real proxy, persisted filter (manifest costs),
// redis-server and a real webhook receiver.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const op = (id: string) => JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: id } } })

interface Received {
  tenant: string
  threshold: number
  ratio: number
  usedUnits: number
}

let backend: DemoBackend
let redis: TestRedis
let hook: RawBackend
const received: Received[] = []
beforeAll(async () => {
  ;[backend, redis] = await Promise.all([startDemoBackend(), startRedis()])
  hook = await startRawBackend((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c))
    req.on('end', () => {
      received.push(JSON.parse(body) as Received)
      res.writeHead(204).end()
    })
  })
})
afterAll(async () => {
  await Promise.all([backend?.close(), redis?.close(), hook?.close()])
})

async function gql(url: string, tenant: string, id: string): Promise<{ status: number; code?: string }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: op(id) })
  const json = JSON.parse(await res.body.text()) as { errors?: { extensions: { code: string } }[] }
  return { status: res.statusCode, code: json.errors?.[0]?.extensions.code }
}

describe.each([
  ['local', false],
  ['redis', true],
])('budget events of a hard cap refusing an expensive request (%s)', (_path, withRedis) => {
  it('fires 100 % only; 80 % fires when the total reaches it', async () => {
    const tenant = `acme-${withRedis ? 'r' : 'l'}-${Date.now()}` // its own events, also on a retry
    const p = await startTestProxy({
      ...(withRedis ? { redis: { url: redis.url, keyPrefix: `sweep31i-ev-${Date.now()}:` } } : {}),
      tenants: { [tenant]: {} },
      persistedDocuments: { operations: { report: { document: 'query Report { hello }', costUnits: 60 }, small: { document: 'query Small { hello }', costUnits: 10 } } },
      quotas: {
        tenants: { [tenant]: { budget: { units: 100, window: '1d', bucket: '1h', hardCap: true, thresholds: [0.8, 1] } } },
        events: { webhook: { url: hook.url, backoffMs: 10 } },
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] }] as never,
    })
    const mine = () => received.filter((e) => e.tenant === tenant)
    try {
      expect(await gql(p.url, tenant, 'report')).toEqual({ status: 200, code: undefined }) // 60 %
      // 60 + 60 > 100: refused, and the budget counts as exhausted for it — the 100 % event.
      expect(await gql(p.url, tenant, 'report')).toMatchObject({ status: 429, code: 'BUDGET_EXHAUSTED' })
      await waitUntil(() => mine().length >= 1, 5_000, 'the 100 % event')
      await sleep(200)
      expect(mine().map((e) => e.threshold)).toEqual([1])
      expect(mine()[0]).toMatchObject({ usedUnits: 60, ratio: 0.6 })
      // The total reaches 80 %: that threshold fires now, not silenced by a false one at 60 %.
      expect((await gql(p.url, tenant, 'small')).status).toBe(200)
      await sleep(100)
      expect(mine()).toHaveLength(1)
      expect((await gql(p.url, tenant, 'small')).status).toBe(200)
      await waitUntil(() => mine().length >= 2, 5_000, 'the 80 % event')
      await sleep(200)
      expect(mine().map((e) => e.threshold)).toEqual([1, 0.8])
      expect(mine()[1]).toMatchObject({ usedUnits: 80, ratio: 0.8 })
    } finally {
      await p.close()
    }
  }, 30_000)
})
