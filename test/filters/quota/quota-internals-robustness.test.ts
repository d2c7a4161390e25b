// The quota filter's internals under hostile conditions, through the real proxy (worker threads,
// shared memory) and real servers on 127.0.0.1: a state file that is damaged or half-written, a
// config reload that changes the period of the filter's background jobs, and a webhook receiver
// that trickles, hangs or refuses. The bar: documented semantics hold, failures are counted and
// logged without flooding the log, nothing grows without bound, and everybody else is served.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Pool, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })

async function gql(url: string, tenant: string): Promise<{ status: number; code: string | undefined; headers: Record<string, unknown> }> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: QUERY })
  const j = JSON.parse(await res.body.text()) as { errors?: { extensions: { code: string } }[] }
  return { status: res.statusCode, code: j.errors?.[0]?.extensions.code, headers: res.headers }
}

/** n requests, one per tenant id made from `prefix` + i, a few at a time. */
async function spread(url: string, prefix: string, n: number): Promise<number[]> {
  const pool = new Pool(url, { connections: 8 })
  try {
    return await Promise.all(
      Array.from({ length: n }, (_, i) =>
        pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': `${prefix}${i}` }, body: QUERY }).then(async (r) => {
          await r.body.dump()
          return r.statusCode
        }),
      ),
    )
  } finally {
    await pool.close()
  }
}

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

const tmp = () => mkdtempSync(join(tmpdir(), 'igw-quota-internals-'))
const today = () => Math.floor(Date.now() / 86_400_000)

function quotaDoc(quotas: Record<string, unknown>, tenantFilter: Record<string, unknown> = {}): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> {
  return {
    log: { level: 'info', access: { enabled: false } } as never,
    // A short drain (its idle keep-alive grace is a quarter of it, 100 ms): every request has been
    // answered before close(), and the default waits 1 s for the client's idle connections.
    shutdown: { drainTimeoutMs: 400 },
    tenants: { acme: {}, other: {} },
    quotas: quotas as never,
    routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant', ...tenantFilter }, { name: 'quota' }] as never }],
  }
}

describe('the state file', () => {
  it('a version-1 file with damaged entries (null tenant, budget without markers, junk numbers) restores what is sound and the proxy serves', async () => {
    const dir = tmp()
    const stateFile = join(dir, 'quota-state.json')
    const doc = {
      version: 1,
      savedAt: Date.now(),
      tenants: [
        null,
        42,
        { tenant: 'acme', kinds: { graphql: { day: today(), used: 7 } } },
        // an older writer without `fired`, and a ring that is not a list
        { tenant: 'other', kinds: { graphql: { day: today(), used: 3 } }, budget: { bucketMs: 3_600_000, buckets: 720, head: Math.floor(Date.now() / 3_600_000), total: 5, ring: 'nope' } },
        // a budget from the far future and a total that is not a number: must not freeze or disable it
        { tenant: 'acme', budget: { bucketMs: 3_600_000, buckets: 720, head: 1e15, total: 'x', fired: [0, 0, 0, 0], ring: [[0, 1]] } },
        { tenant: 'acme', kinds: { graphql: { day: today(), used: -1e9 } } },
      ],
    }
    writeFileSync(stateFile, JSON.stringify(doc))
    const p = await startTestProxy(quotaDoc({ tenants: { acme: { graphql: { limitPerDay: 10 }, budget: { units: 100, hardCap: true } }, other: { graphql: { limitPerDay: 10 } } }, stateFile, flushIntervalMs: 60_000 }))
    try {
      // acme's sound entry (7 used) survived; the negative one did not hand out a billion units.
      const codes: (string | undefined)[] = []
      for (let i = 0; i < 4; i++) codes.push((await gql(p.url, 'acme')).code)
      expect(codes).toEqual([undefined, undefined, undefined, 'QUOTA_EXCEEDED'])
      expect((await gql(p.url, 'other')).status).toBe(200)
      const m = await p.metricsText()
      expect(metricSum(m, 'igw_quota_used_today', 'tenant="other"')).toBe(4)
      // The junk budget was not restored: acme's ratio is its own 3 units of 100, a number.
      expect(metricSum(m, 'igw_budget_used_ratio', 'tenant="acme"')).toBeCloseTo(0.03, 5)
      expect(p.logs.raw.join('\n')).toMatch(/quota state file/)
    } finally {
      await p.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a truncated file is not silently taken for "no usage": the proxy starts and says so in the log', async () => {
    const dir = tmp()
    const stateFile = join(dir, 'quota-state.json')
    writeFileSync(stateFile, JSON.stringify({ version: 1, savedAt: Date.now(), tenants: [{ tenant: 'acme', kinds: { graphql: { day: today(), used: 7 } } }] }).slice(0, 40))
    const p = await startTestProxy(quotaDoc({ tenants: { acme: { graphql: { limitPerDay: 10 } } }, stateFile, flushIntervalMs: 60_000 }))
    try {
      expect((await gql(p.url, 'acme')).status).toBe(200)
      const warnings = () => p.logs.lines.filter((l) => typeof l.msg === 'string' && /quota state file/.test(l.msg) && l.stateFile === stateFile)
      await waitUntil(() => warnings().length > 0, 2_000, 'a log line about the state file') // worker logs arrive asynchronously
      const warned = warnings()
      expect(['warn', 'error']).toContain(warned[0]!.level)
    } finally {
      await p.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a reload that lengthens flushIntervalMs keeps flushing at the new period (the job lease is not stuck on the old tick count)', async () => {
    const dir = tmp()
    const stateFile = join(dir, 'quota-state.json')
    const quotas = (flushIntervalMs: number) => ({ tenants: { acme: { graphql: { limitPerDay: 100 } } }, stateFile, flushIntervalMs })
    const p = await startTestProxy(quotaDoc(quotas(100)))
    try {
      expect((await gql(p.url, 'acme')).status).toBe(200)
      await waitUntil(() => existsSync(stateFile), 3_000, 'first flush')
      // Half a dozen 100 ms periods: the old lease, a period count since start, then stood at 10×
      // the new 1 s count, so no flush came before 10× the time since start (> 6 s), past the wait below.
      await sleep(600)
      const next = validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...quotaDoc(quotas(1_000)) })
      expect((await p.applyConfig(next)).ok).toBe(true)
      await sleep(150) // a 100 ms flush already scheduled may still land
      rmSync(stateFile, { force: true })
      await waitUntil(() => existsSync(stateFile), 3_000, 'a flush at the new 1 s period')
    } finally {
      await p.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

interface Receiver {
  url: string
  hits: { path: string; id: string | undefined }[]
  /** Requests being answered right now, and the most ever at once; the most connections ever open at once. */
  active(): number
  maxActive: number
  maxOpen: number
  close(): Promise<void>
}

/** A real webhook receiver on 127.0.0.1 that answers however the test says. */
async function startReceiver(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Receiver> {
  const sockets = new Set<Socket>()
  const hits: Receiver['hits'] = []
  let active = 0
  const server: Server = createServer((req, res) => {
    hits.push({ path: req.url ?? '', id: req.headers['igw-event-id'] as string | undefined })
    active++
    rec.maxActive = Math.max(rec.maxActive, active)
    res.on('close', () => active--)
    req.resume()
    handler(req, res)
  })
  const rec: Receiver = {
    url: '',
    hits,
    active: () => active,
    maxActive: 0,
    maxOpen: 0,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    rec.maxOpen = Math.max(rec.maxOpen, sockets.size)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  rec.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return rec
}

/** Every request of a new tenant crosses all four thresholds of a 1-unit budget: four events. */
function eventStorm(webhook: Record<string, unknown>) {
  return {
    mode: 'ingress' as const,
    ...quotaDoc({ defaults: { budget: { units: 1, thresholds: [0.25, 0.5, 0.75, 1] } }, events: { webhook } }, { allowUnlisted: true }),
  }
}

describe('the event webhook', () => {
  it('a receiver that answers 200 and then trickles its body forever: the delivery counts within timeoutMs and the connection is let go', async () => {
    const rec = await startReceiver((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const t = setInterval(() => res.write('.'), 50)
      res.on('close', () => clearInterval(t))
    })
    // The receiver (this process) must answer each head within timeoutMs: at 300 ms a loaded
    // machine made it miss (a delivery failed, not counted). The trickle is cut at 2 s all the same.
    const p = await startTestProxy(eventStorm({ url: `${rec.url}/hook`, timeoutMs: 2_000, maxAttempts: 1 }))
    try {
      expect((await gql(p.url, 'acme')).status).toBe(200)
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_webhook_deliveries_total', 'result="delivered"') === 4, 10_000, 'four deliveries counted') // a trickle left alone lasts for ever
      await waitUntil(() => rec.active() === 0, 10_000, 'the trickled responses cut off')
      expect(rec.hits).toHaveLength(4)
    } finally {
      await p.close()
      await rec.close()
    }
  })

  it('an event storm against a receiver that never answers: a bounded number of connections, a bounded backlog, drops counted, one log line, everyone else served', async () => {
    const rec = await startReceiver(() => {}) // accepts, reads, never answers
    const p = await startTestProxy(eventStorm({ url: `${rec.url}/hook`, timeoutMs: 10_000, maxAttempts: 1 }))
    try {
      const statuses = await spread(p.url, 'storm-', 300) // 1200 events
      expect(statuses.every((s) => s === 200)).toBe(true)
      const m = await p.metricsText()
      expect(metricSum(m, 'igw_quota_events_total')).toBe(1200)
      expect(rec.maxActive).toBeLessThanOrEqual(8)
      expect(rec.maxOpen).toBeLessThanOrEqual(16)
      const dropped = metricSum(m, 'igw_quota_webhook_deliveries_total', 'result="dropped"')
      expect(dropped).toBeGreaterThanOrEqual(100)
      expect(dropped).toBeLessThan(1200)
      expect(p.logs.raw.filter((l) => l.includes('backlog full')).length).toBe(1)
      const t0 = Date.now()
      expect((await gql(p.url, 'other')).status).toBe(200)
      expect(Date.now() - t0).toBeLessThan(3_000) // not behind the receiver's 10 s timeout
    } finally {
      await rec.close()
      await p.close()
    }
  })

  it('a receiver that is gone: every failure counted, the failure log line is rate-limited', async () => {
    const gone = await startReceiver(() => {})
    const url = `${gone.url}/hook`
    await gone.close() // nothing listens there now: connection refused
    const p = await startTestProxy(eventStorm({ url, timeoutMs: 1_000, maxAttempts: 1 }))
    try {
      expect((await spread(p.url, 'gone-', 50)).every((s) => s === 200)).toBe(true)
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_webhook_deliveries_total', 'result="failed"') === 200, 5_000, '200 failures counted')
      const lines = p.logs.raw.filter((l) => l.includes('quota event webhook delivery failed'))
      expect(lines.length).toBeGreaterThanOrEqual(1)
      expect(lines.length).toBeLessThanOrEqual(2)
    } finally {
      await p.close()
    }
  })

  it('a 3xx is not followed to where it points, and not retried', async () => {
    const elsewhere = await startReceiver((_req, res) => res.writeHead(200).end())
    const rec = await startReceiver((_req, res) => res.writeHead(307, { location: `${elsewhere.url}/stolen` }).end())
    const p = await startTestProxy(eventStorm({ url: `${rec.url}/hook`, timeoutMs: 1_000, maxAttempts: 3, backoffMs: 10 }))
    try {
      expect((await gql(p.url, 'acme')).status).toBe(200)
      await waitUntil(async () => metricSum(await p.metricsText(), 'igw_quota_webhook_deliveries_total', 'result="failed"') === 4, 3_000, 'four failures')
      await sleep(100)
      expect(rec.hits).toHaveLength(4)
      expect(elsewhere.hits).toHaveLength(0)
    } finally {
      await p.close()
      await rec.close()
      await elsewhere.close()
    }
  })
})
