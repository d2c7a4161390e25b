// The anomaly detector and idle intervals: an interval without requests says nothing about the
// tenant's rate, so neither a quiet night, a batch job between runs, nor a proxy's first minute
// before the load balancer sends it traffic may turn the tenant's usual rate into an "anomaly".
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newAnomalyState, observe, type AnomalySettings } from '../../../filters/quota/anomaly-detector.ts'
import { startDemoBackend, startRawBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { sleep } from '../../helpers/wait.ts'

/** The documented defaults (config/quotas.ts). */
const cfg: AnomalySettings = { alpha: 0.1, zThreshold: 4, clearZ: 2, clearIntervals: 3, warmupIntervals: 6, minRequests: 20 }
/** A tenant's usual daytime traffic per 10 s interval. */
const day = (i: number) => 50 + ((i * 3) % 7) - 3

describe('anomaly detector: idle intervals (sweep 14d)', () => {
  it('a steady tenant back after a quiet night (8 h of empty intervals) does not alert', () => {
    const s = newAnomalyState()
    for (let i = 0; i < 360; i++) expect(observe(s, day(i), cfg).change).toBeUndefined()
    for (let i = 0; i < 2_880; i++) expect(observe(s, 0, cfg).change).toBeUndefined()
    const morning = Array.from({ length: 60 }, (_, i) => observe(s, day(i), cfg).change)
    expect(morning).not.toContain('alert')
    // …and a real surge after the night still does.
    expect(observe(s, 400, cfg).change).toBe('alert')
  })

  it('an hourly batch tenant (5 busy minutes, 55 idle) alerts on none of its runs', () => {
    const s = newAnomalyState()
    const changes: (string | undefined)[] = []
    for (let hour = 0; hour < 6; hour++) {
      for (let i = 0; i < 30; i++) changes.push(observe(s, 100 + (i % 5), cfg).change)
      for (let i = 0; i < 330; i++) changes.push(observe(s, 0, cfg).change)
    }
    expect(changes).not.toContain('alert')
  })

  it('a tenant idle since the start warms up on its own traffic, not on empty intervals', () => {
    const s = newAnomalyState()
    for (let i = 0; i < 30; i++) observe(s, 0, cfg) // the proxy's first 5 minutes, out of the pool
    const first = Array.from({ length: 30 }, (_, i) => observe(s, day(i), cfg).change)
    expect(first).not.toContain('alert')
  })
})

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

describe('anomaly alerts through the proxy (sweep 14d)', () => {
  it('a proxy that saw no traffic in its first intervals does not page when the usual traffic arrives', async () => {
    const received: unknown[] = []
    const hook = await startRawBackend((req, res) => {
      let d = ''
      req.on('data', (c: Buffer) => (d += c))
      req.on('end', () => {
        received.push(JSON.parse(d))
        res.writeHead(200).end()
      })
    })
    const intervalMs = 200
    const p = await startTestProxy({
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
      tenants: { idlestart: {} },
      quotas: {
        anomaly: { enabled: true, intervalMs, warmupIntervals: 3, minRequests: 10, zThreshold: 8, clearZ: 2, clearIntervals: 3, alpha: 0.2 },
        events: { webhook: { url: hook.url } },
      },
    })
    const pool = new Pool(p.url, { connections: 10 })
    const fire = () =>
      pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'idlestart' }, body: JSON.stringify({ query: '{ hello }' }) }).then((r) => r.body.dump())
    try {
      await sleep(intervalMs * 6) // out of the pool: empty intervals, more than the warm-up
      // The tenant's usual traffic: ~15 requests per interval, steady.
      const t0 = Date.now()
      while (Date.now() - t0 < intervalMs * 12) {
        const tick = Date.now()
        await Promise.all(Array.from({ length: 15 }, fire))
        await sleep(Math.max(0, intervalMs - (Date.now() - tick)))
      }
      await sleep(intervalMs * 3) // the last intervals are judged
      expect(received).toEqual([])
      expect(metricSum(await p.metricsText(), 'igw_quota_events_total', 'type="anomaly.rate"')).toBe(0)
    } finally {
      await pool.close()
      await p.close()
      await hook.close()
    }
  })
})
