// A worker thread that dies (terminated like a crash: no drain, no cleanups) while it holds quota
// concurrency slots and in-flight counts in the process-wide shared memory. Those were never given
// back: the tenant got 429 for maxConcurrent, and QoS shed on phantom load, until the process
// restarted. The supervisor now releases the dead thread's share when it sees the exit.
// Real proxy (supervisor + worker threads), real backends (node:http that holds requests, the demo
// graphql-yoga backend for WebSockets), real clients (undici, ws).
import type { ServerResponse } from 'node:http'
import { Pool } from 'undici'
import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { quotaFilter } from '../../filters/quota/index.ts'
import { H_INFLIGHT, QUOTA_SHARED_BYTES, QuotaTable, S_CONCURRENT } from '../../filters/quota/shared-table.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

interface Holding {
  be: RawBackend
  held: ServerResponse[]
  release(): void
}

/** A backend that answers nothing until release(): every request it got holds its slot. */
async function holdingBackend(): Promise<Holding> {
  const held: ServerResponse[] = []
  const be = await startRawBackend((req, res) => {
    req.resume()
    req.on('end', () => held.push(res))
  })
  return {
    be,
    held,
    release: () => {
      for (const r of held.splice(0)) if (!r.destroyed) r.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{}}')
    },
  }
}

/** Terminate worker `i` (as abrupt as a crash) and wait until its replacement listens. */
async function crashAndRestart(p: TestProxy, i = 0): Promise<void> {
  const before = p.threads()[i]!
  await before.terminate()
  await waitUntil(async () => {
    const now = p.threads()[i]
    return now !== undefined && now !== before && metricSum(await p.metricsText(), 'igw_workers') === p.workerCount
  }, 20_000, 'worker restarted')
}

describe('a crashed worker thread gives its quota slots back', () => {
  let h: Holding
  beforeAll(async () => {
    h = await holdingBackend()
  })
  afterAll(async () => {
    h?.release()
    await h?.be.close()
  })

  it('maxConcurrent: requests held by a worker that crashed free their slots; the tenant gets its full maxConcurrent again', async () => {
    const p = await startTestProxy({
      workers: 1,
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { maxConcurrent: 2 } } } },
      routes: [{ name: 'api', upstream: h.be.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    let pool = new Pool(p.url, { connections: 5 })
    const send = (through: Pool) =>
      through.request({ path: '/x', method: 'GET', headers: { 'x-tenant-id': 'acme' } }).then(
        async (r) => ({ status: r.statusCode, body: await r.body.text() }),
        (err: Error) => ({ status: 0, body: err.message }),
      )
    try {
      const first = [send(pool), send(pool)]
      await waitUntil(() => h.held.length === 2, 10_000, 'two requests held')
      expect((await send(pool)).status).toBe(429) // the limit is real
      await crashAndRestart(p)
      // The clients of the dead thread lost their connections; the backend's requests are orphans.
      expect((await Promise.all(first)).map((r) => r.status)).toEqual([0, 0])
      h.held.splice(0)
      await pool.close()
      pool = new Pool(p.url, { connections: 5 })
      const again = [send(pool), send(pool)]
      // Both must reach the backend: the dead thread's two slots are free again.
      let answered = 0
      for (const a of again) void a.then(() => answered++)
      await waitUntil(() => h.held.length + answered >= 2, 10_000, 'both requests held or answered')
      h.release()
      const statuses = (await Promise.all(again)).map((r) => r.status)
      expect(statuses).toEqual([200, 200])
      // And the count is exact, not merely lower: a third concurrent one is still refused.
      const held = [send(pool), send(pool)]
      await waitUntil(() => h.held.length === 2, 10_000, 'two requests held')
      expect((await send(pool)).status).toBe(429)
      h.release()
      expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200])
    } finally {
      h.release()
      await pool.close()
      await p.close()
    }
  })

  it('QoS: the in-flight count of a crashed worker is given back (bronze is not shed on phantom load)', async () => {
    const p = await startTestProxy({
      workers: 1,
      tenants: { gold: { tier: 'gold' }, bronze: { tier: 'bronze' } },
      quotas: { qos: { maxInFlight: 2 } }, // bronze shed at 1.4 in flight: 2 held requests shed it
      routes: [{ name: 'api', upstream: h.be.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    let pool = new Pool(p.url, { connections: 5 })
    const send = (through: Pool, tenant: string) =>
      through.request({ path: '/x', method: 'GET', headers: { 'x-tenant-id': tenant } }).then(
        async (r) => ({ status: r.statusCode, body: await r.body.text() }),
        (err: Error) => ({ status: 0, body: err.message }),
      )
    try {
      const first = [send(pool, 'gold'), send(pool, 'gold')]
      await waitUntil(() => h.held.length === 2, 10_000, 'two requests held')
      expect((await send(pool, 'bronze')).status).toBe(503)
      expect(metricSum(await p.metricsText(), 'igw_quota_inflight')).toBe(2)
      await crashAndRestart(p)
      await Promise.all(first)
      h.held.splice(0)
      await pool.close()
      pool = new Pool(p.url, { connections: 5 })
      expect(metricSum(await p.metricsText(), 'igw_quota_inflight')).toBe(0)
      const bronze = send(pool, 'bronze')
      await waitUntil(() => h.held.length === 1, 10_000, 'bronze admitted')
      h.release()
      expect((await bronze).status).toBe(200)
    } finally {
      h.release()
      await pool.close()
      await p.close()
    }
  })
})

type Outcome = { open: true; ws: WebSocket } | { open: false; status: number; body: string }

function connect(port: number, tenant: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/graphql`, 'graphql-transport-ws', { headers: { 'x-tenant-id': tenant } })
    ws.once('open', () => resolve({ open: true, ws }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ open: false, status: res.statusCode ?? 0, body }))
    })
    ws.once('error', reject)
  })
}

describe('a crashed worker thread gives its WebSocket slots back (kind subscriptions)', () => {
  let demo: DemoBackend
  beforeAll(async () => {
    demo = await startDemoBackend()
  })
  afterAll(async () => {
    await demo?.close()
  })

  it('passthrough sockets of a dead thread no longer hold maxConcurrent', async () => {
    const p = await startTestProxy({
      workers: 1,
      tenants: { acme: {} },
      quotas: { tenants: { acme: { subscriptions: { maxConcurrent: 2 } } } },
      routes: [{ name: 'ws', upstream: demo.url, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
    const open: WebSocket[] = []
    try {
      for (let i = 0; i < 2; i++) {
        const o = await connect(p.port, 'acme')
        expect(o.open).toBe(true)
        if (o.open) {
          o.ws.on('error', () => undefined)
          open.push(o.ws)
        }
      }
      const refused = await connect(p.port, 'acme')
      expect(refused.open).toBe(false)
      await crashAndRestart(p)
      await waitUntil(() => open.every((ws) => ws.readyState === WebSocket.CLOSED), 10_000, 'sockets of the dead thread closed')
      for (let i = 0; i < 2; i++) {
        const o = await connect(p.port, 'acme')
        expect(o.open ? 101 : o.status).toBe(101)
        if (o.open) open.push(o.ws)
      }
      const third = await connect(p.port, 'acme')
      expect(third.open ? 101 : third.status).toBe(429)
    } finally {
      for (const ws of open) ws.terminate()
      await p.close()
    }
  })
})

describe('releasing a dead thread\'s share (shared memory)', () => {
  it('gives back only that thread\'s slots and in-flight count, once, never below zero', () => {
    const buffer = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const t = new QuotaTable(buffer)
    const slot = t.slotOf('acme')
    const count = t.si(slot, S_CONCURRENT + 1)
    // Thread 0 holds 3 slots and 2 in-flight requests, thread 1 holds 2 slots and 1 request.
    const take = (worker: number, slots: number, inflight: number) => {
      for (let i = 0; i < slots; i++) {
        Atomics.add(t.i32, t.concurrentLedger(worker, slot, 1), 1)
        Atomics.add(t.i32, count, 1)
      }
      for (let i = 0; i < inflight; i++) {
        Atomics.add(t.i32, t.inflightLedger(worker), 1)
        Atomics.add(t.i32, H_INFLIGHT, 1)
      }
    }
    take(0, 3, 2)
    take(1, 2, 1)
    expect(quotaFilter.workerExited(buffer, 0)).toBe(5)
    expect([Atomics.load(t.i32, count), Atomics.load(t.i32, H_INFLIGHT)]).toEqual([2, 1])
    expect(quotaFilter.workerExited(buffer, 0)).toBe(0) // a second exit report releases nothing more
    expect([Atomics.load(t.i32, count), Atomics.load(t.i32, H_INFLIGHT)]).toEqual([2, 1])
    // A ledger one ahead of the count (a thread cut off between its two atomics) never drives it negative.
    Atomics.add(t.i32, t.concurrentLedger(1, slot, 1), 1)
    expect(quotaFilter.workerExited(buffer, 1)).toBe(3)
    expect([Atomics.load(t.i32, count), Atomics.load(t.i32, H_INFLIGHT)]).toEqual([0, 0])
  })
})
